/* One request in, one reply out: the daemon side of every call of the protocol table. */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "pin.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Decoding failed: the peer does not speak the protocol. */
#define BAD_REQUEST (-1)

static CK_RV
rpc_get_slots(struct daemon *d, struct p11mux_msg *m, struct p11mux_buf *buf)
{
	struct p11mux_slot *s;
	size_t i;
	int r;

	if ((s = calloc(d->npools + 1, sizeof(*s))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < d->npools; i++)
		s[i] = d->pools[i].slot;
	if ((r = p11mux_msg_begin_reply(m, buf, P11MUX_CALL_GET_SLOTS, CKR_OK)) == 0)
		r = p11mux_msg_put_slots(m, s, d->npools);
	free(s);
	return r == 0 ? CKR_OK : CKR_HOST_MEMORY;
}

static CK_RV
rpc_login(struct daemon *d, struct client *c, struct pool *p, CK_ULONG type, const uint8_t *pin,
          size_t pinlen)
{
	struct timespec pause = {0, 100 * 1000 * 1000};

	if (type != CKU_USER) {
		log_warn("pool \"%s\": pid %ld asked for a login as user type %lu; only CKU_USER "
		         "is offered (the pool is read-only)",
		         p->label, (long)c->pid, type);
		return CKR_USER_TYPE_INVALID;
	}
	if (c->logged_in[p->index])
		return CKR_USER_ALREADY_LOGGED_IN;
	/* Checked here, in constant time, against the pool's PIN: a wrong PIN never reaches a
	 * device, so it cannot wear down a retry counter. */
	if (!pin_equal((const char *)pin, pinlen, p->pin, p->pinlen)) {
		log_warn("pool \"%s\": wrong PIN from pid %ld uid %lu (not sent to any device)",
		         p->label, (long)c->pid, (unsigned long)c->uid);
		/* Slows guessing down. */
		nanosleep(&pause, NULL);
		return CKR_PIN_INCORRECT;
	}
	(void)d;
	c->logged_in[p->index] = 1;
	return CKR_OK;
}

/* Whether the client may see the object. */
static int
visible(const struct client *c, const struct pool *p, const struct pobject *o)
{
	return o != NULL && (!o->private || c->logged_in[p->index]);
}

static CK_RV
rpc_find(struct client *c, struct pool *p, const struct p11mux_attrs *t, struct p11mux_msg *m,
         struct p11mux_buf *buf)
{
	CK_ULONG *handles;
	size_t i, n = 0;
	CK_RV rv = CKR_OK;

	if ((handles = calloc(p->nobjects + 1, sizeof(*handles))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < p->nobjects; i++)
		if (visible(c, p, p->objects[i]) &&
		    pool_object_matches(p->objects[i], t->attrs, t->n))
			handles[n++] = p->objects[i]->handle;
	if (p11mux_msg_begin_reply(m, buf, P11MUX_CALL_FIND, CKR_OK) != 0 ||
	    p11mux_msg_put_ulongs(m, handles, n) != 0)
		rv = CKR_HOST_MEMORY;
	free(handles);
	return rv;
}

/* The mechanism is offered by the pool for this kind of operation. */
static CK_RV
check_mech(const struct pool *p, const CK_MECHANISM *mech, CK_FLAGS need)
{
	CK_ULONG i;

	for (i = 0; i < p->slot.nmechs; i++)
		if (p->slot.mechs[i] == mech->mechanism)
			return (p->slot.infos[i].flags & need) ? CKR_OK : CKR_MECHANISM_INVALID;
	return CKR_MECHANISM_INVALID;
}

/* The shim checked the key already; the daemon checks again, since it trusts no client. */
static CK_RV
check_key(const struct client *c, const struct pool *p, const struct pobject *o, uint32_t call)
{
	CK_ATTRIBUTE_TYPE need;
	CK_OBJECT_CLASS want;
	size_t i;

	if (o == NULL || !visible(c, p, o))
		return CKR_KEY_HANDLE_INVALID;
	switch (call) {
	case P11MUX_CALL_SIGN:
		need = CKA_SIGN;
		want = CKO_PRIVATE_KEY;
		break;
	case P11MUX_CALL_DECRYPT:
		need = CKA_DECRYPT;
		want = CKO_PRIVATE_KEY;
		break;
	case P11MUX_CALL_VERIFY:
		need = CKA_VERIFY;
		want = CKO_PUBLIC_KEY;
		break;
	default:
		need = CKA_ENCRYPT;
		want = CKO_PUBLIC_KEY;
		break;
	}
	if (o->cls != want && o->cls != CKO_SECRET_KEY)
		return CKR_KEY_TYPE_INCONSISTENT;
	for (i = 0; i < o->n; i++)
		if (o->attrs[i].type == need && o->status[i] == CKR_OK &&
		    o->attrs[i].ulValueLen == sizeof(CK_BBOOL) &&
		    *(CK_BBOOL *)o->attrs[i].pValue == CK_FALSE)
			return CKR_KEY_FUNCTION_NOT_PERMITTED;
	if ((o->private || o->cls == CKO_PRIVATE_KEY) && !c->logged_in[p->index])
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

static const CK_FLAGS call_flag[P11MUX_CALL_COUNT] = {
        [P11MUX_CALL_SIGN] = CKF_SIGN,       [P11MUX_CALL_VERIFY] = CKF_VERIFY,
        [P11MUX_CALL_ENCRYPT] = CKF_ENCRYPT, [P11MUX_CALL_DECRYPT] = CKF_DECRYPT,
        [P11MUX_CALL_DIGEST] = CKF_DIGEST,
};

int
rpc_handle(struct daemon *d, struct client *c, struct p11mux_buf *buf)
{
	struct p11mux_msg m = {0};
	struct p11mux_attrs attrs;
	struct pool *p = NULL;
	const struct pobject *o;
	CK_MECHANISM *mech;
	CK_ULONG slot, v1 = 0, v2 = 0, v3 = 0, key = 0;
	const uint8_t *in = NULL, *sig = NULL;
	size_t inlen = 0, siglen = 0, outlen = 0;
	uint8_t *out = NULL;
	uint32_t call;
	CK_RV rv = CKR_OK;
	int r, replied = 0;

	if ((r = p11mux_msg_read_request(&m, buf)) != 0)
		goto bad;
	call = m.call->code;
	if (!c->hello && call != P11MUX_CALL_HELLO)
		goto bad;

	/* Decode the request completely before acting on it. */
	switch (call) {
	case P11MUX_CALL_HELLO:
		if ((r = p11mux_msg_get_ulong(&m, &v1)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &v2)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &v3)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_GET_SLOTS:
		break;
	case P11MUX_CALL_LOGIN:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &v1)) != 0 ||
		    (r = p11mux_msg_get_bytes(&m, &in, &inlen)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_LOGOUT:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_FIND:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_attrs(&m, &attrs)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_GET_OBJECT:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &key)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_SIGN:
	case P11MUX_CALL_ENCRYPT:
	case P11MUX_CALL_DECRYPT:
	case P11MUX_CALL_VERIFY:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_mech(&m, &mech)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &key)) != 0 ||
		    (r = p11mux_msg_get_bytes(&m, &in, &inlen)) != 0)
			goto bad;
		if (call == P11MUX_CALL_VERIFY &&
		    (r = p11mux_msg_get_bytes(&m, &sig, &siglen)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_DIGEST:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_mech(&m, &mech)) != 0 ||
		    (r = p11mux_msg_get_bytes(&m, &in, &inlen)) != 0)
			goto bad;
		break;
	case P11MUX_CALL_RANDOM:
		if ((r = p11mux_msg_get_ulong(&m, &slot)) != 0 ||
		    (r = p11mux_msg_get_ulong(&m, &v1)) != 0)
			goto bad;
		break;
	default:
		goto bad;
	}
	if ((r = p11mux_msg_end(&m)) != 0)
		goto bad;
	if (call != P11MUX_CALL_HELLO && call != P11MUX_CALL_GET_SLOTS &&
	    (p = daemon_pool(d, slot)) == NULL) {
		rv = CKR_SLOT_ID_INVALID;
		goto reply;
	}

	switch (call) {
	case P11MUX_CALL_HELLO:
		if (v1 != P11MUX_PROTO_MAGIC)
			goto bad;
		if (v2 > P11MUX_PROTO_VERSION || v3 < P11MUX_PROTO_VERSION) {
			log_warn("client pid %ld speaks protocol versions %lu..%lu, not %u",
			         (long)c->pid, v2, v3, P11MUX_PROTO_VERSION);
			rv = CKR_FUNCTION_FAILED;
			break;
		}
		c->hello = 1;
		if (p11mux_msg_begin_reply(&m, buf, call, CKR_OK) != 0 ||
		    p11mux_msg_put_ulong(&m, P11MUX_PROTO_VERSION) != 0 ||
		    p11mux_msg_put_bytes(&m, "p11muxd " P11MUX_VERSION,
		                         strlen("p11muxd " P11MUX_VERSION)) != 0)
			rv = CKR_HOST_MEMORY;
		else
			replied = 1;
		break;
	case P11MUX_CALL_GET_SLOTS:
		if ((rv = rpc_get_slots(d, &m, buf)) == CKR_OK)
			replied = 1;
		break;
	case P11MUX_CALL_LOGIN:
		rv = rpc_login(d, c, p, v1, in, inlen);
		break;
	case P11MUX_CALL_LOGOUT:
		rv = c->logged_in[p->index] ? CKR_OK : CKR_USER_NOT_LOGGED_IN;
		c->logged_in[p->index] = 0;
		break;
	case P11MUX_CALL_FIND:
		if ((rv = rpc_find(c, p, &attrs, &m, buf)) == CKR_OK)
			replied = 1;
		break;
	case P11MUX_CALL_GET_OBJECT:
		o = pool_object(p, key);
		if (!visible(c, p, o)) {
			rv = CKR_OBJECT_HANDLE_INVALID;
			break;
		}
		if (p11mux_msg_begin_reply(&m, buf, call, CKR_OK) != 0 ||
		    p11mux_msg_put_attrs(&m, o->attrs, o->status, o->n) != 0)
			rv = CKR_HOST_MEMORY;
		else
			replied = 1;
		break;
	case P11MUX_CALL_SIGN:
	case P11MUX_CALL_VERIFY:
	case P11MUX_CALL_ENCRYPT:
	case P11MUX_CALL_DECRYPT:
	case P11MUX_CALL_DIGEST:
		if ((rv = check_mech(p, mech, call_flag[call])) != CKR_OK)
			break;
		o = NULL;
		if (call != P11MUX_CALL_DIGEST) {
			o = pool_object(p, key);
			if ((rv = check_key(c, p, o, call)) != CKR_OK)
				break;
		}
		rv = pool_crypto(p, call, mech, o, in, inlen, sig, siglen, &out, &outlen);
		if (rv != CKR_OK)
			break;
		if (p11mux_msg_begin_reply(&m, buf, call, CKR_OK) != 0 ||
		    (call != P11MUX_CALL_VERIFY && p11mux_msg_put_bytes(&m, out, outlen) != 0))
			rv = CKR_HOST_MEMORY;
		else
			replied = 1;
		break;
	case P11MUX_CALL_RANDOM:
		if (v1 > 65536) {
			rv = CKR_ARGUMENTS_BAD;
			break;
		}
		if ((out = malloc(v1 ? v1 : 1)) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		if ((rv = pool_random(p, out, v1)) != CKR_OK)
			break;
		if (p11mux_msg_begin_reply(&m, buf, call, CKR_OK) != 0 ||
		    p11mux_msg_put_bytes(&m, out, v1) != 0)
			rv = CKR_HOST_MEMORY;
		else
			replied = 1;
		break;
	}
reply:
	if (out != NULL) {
		explicit_bzero(out, outlen);
		free(out);
		out = NULL;
	}
	/* Calls whose reply has no fields (LOGIN, LOGOUT, VERIFY) and every failure are answered
	 * here. Decoded fields pointed into buf; they are not needed any more. */
	if ((!replied || rv != CKR_OK) && p11mux_msg_begin_reply(&m, buf, call, rv) != 0)
		goto bad;
	r = p11mux_msg_end(&m);
	p11mux_msg_clear(&m);
	if (r != 0) {
		log_error("reply to %s could not be encoded: %s", p11mux_calls[call].name,
		          p11mux_strerror(r));
		return BAD_REQUEST;
	}
	return 0;
bad:
	log_warn("client pid %ld uid %lu sent a malformed request (%s); connection closed",
	         (long)c->pid, (unsigned long)c->uid,
	         p11mux_strerror(r != 0 ? r : P11MUX_ERR_INVALID));
	free(out);
	p11mux_msg_clear(&m);
	return BAD_REQUEST;
}
