/*
 * One request in, one reply out: the daemon side of the protocol. Every call of the table in
 * common/proto.c has a handler here, in the table below, indexed by the same codes: a decoder
 * that fills a typed request, and a function that carries it out and fills the reply.
 * rpc_handle() is the lookup plus what every call shares: the handshake first, the whole
 * request decoded and checked before anything is done, the pool named by the slot, and the
 * mechanism and key checks of the cryptographic calls.
 */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

/* A decoded request: the fields of one call, typed. Byte strings point into the request
 * buffer, arrays into the message's arena; both live until the reply is written. */
struct rpc_req {
	CK_SLOT_ID slot; /* for calls on a pool: the request's first field */
	union {
		struct {
			CK_ULONG magic, lowest, highest;
		} hello;
		struct {
			CK_USER_TYPE user;
			const uint8_t *pin, *ticket;
			size_t pinlen, ticketlen;
		} login;
		struct p11mux_attrs find; /* the template */
		CK_OBJECT_HANDLE object;
		struct {
			CK_MECHANISM *mech;
			CK_OBJECT_HANDLE key;    /* not for DIGEST */
			const uint8_t *in, *sig; /* sig: VERIFY only */
			size_t inlen, siglen;
		} op;
		CK_ULONG random_len;
	} u;
};

/* What a handler works on. */
struct rpc_ctx {
	struct daemon *d;
	struct client *c;
	struct pool *p; /* the request's pool (NULL for HELLO and GET_SLOTS) */
};

/* How the daemon serves one call. */
struct rpc_handler {
	/* Reads the fields after the slot into r; errors are sticky in m, checked once. */
	void (*decode)(struct p11mux_msg *m, struct rpc_req *r);
	/* Carries the request out; on CKR_OK, reply (begun with CKR_OK) holds the fields. */
	CK_RV (*run)(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply);
	int on_pool;                 /* the first field is a pool's slot */
	CK_FLAGS mech_flag;          /* cryptographic calls: what the mechanism must offer */
	CK_ATTRIBUTE_TYPE key_usage; /* ... and the key (0: no key) */
	CK_OBJECT_CLASS key_class;   /* ... and the key's class (or a secret key) */
};

/* --- decoders --- */

static void
dec_none(struct p11mux_msg *m, struct rpc_req *r)
{
	(void)m;
	(void)r;
}

static void
dec_hello(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.hello.magic);
	p11mux_msg_get_ulong(m, &r->u.hello.lowest);
	p11mux_msg_get_ulong(m, &r->u.hello.highest);
}

static void
dec_login(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.login.user);
	p11mux_msg_get_bytes(m, &r->u.login.pin, &r->u.login.pinlen);
	p11mux_msg_get_bytes(m, &r->u.login.ticket, &r->u.login.ticketlen);
}

static void
dec_find(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_attrs(m, &r->u.find);
}

static void
dec_object(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.object);
}

/* SIGN, ENCRYPT, DECRYPT, VERIFY and DIGEST: mechanism, key (not for DIGEST), data, and
 * for VERIFY the signature; the call's signature says which. */
static void
dec_op(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_mech(m, &r->u.op.mech);
	if (m->call->code != P11MUX_CALL_DIGEST)
		p11mux_msg_get_ulong(m, &r->u.op.key);
	p11mux_msg_get_bytes(m, &r->u.op.in, &r->u.op.inlen);
	if (m->call->code == P11MUX_CALL_VERIFY)
		p11mux_msg_get_bytes(m, &r->u.op.sig, &r->u.op.siglen);
}

static void
dec_random(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.random_len);
}

/* --- handlers --- */

#define P11MUX_FIND_MAX_ATTRS 64

/* Whether the client may see the object: private ones only when logged in. */
static int
visible(const struct rpc_ctx *x, const struct pobject *o)
{
	return o != NULL && (!o->private || x->c->logged_in[x->p->index]);
}

static CK_RV
run_hello(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	static const char name[] = "p11muxd " P11MUX_VERSION;

	if (r->u.hello.lowest > P11MUX_PROTO_VERSION || r->u.hello.highest < P11MUX_PROTO_VERSION) {
		lograte_warn(&x->d->dropped,
		             "client pid %ld speaks protocol versions %lu..%lu, not %u (a shim of "
		             "another p11mux version?)",
		             (long)x->c->pid, r->u.hello.lowest, r->u.hello.highest,
		             P11MUX_PROTO_VERSION);
		return CKR_FUNCTION_FAILED;
	}
	x->c->hello = 1;
	p11mux_msg_put_ulong(reply, P11MUX_PROTO_VERSION);
	p11mux_msg_put_bytes(reply, name, strlen(name));
	return CKR_OK;
}

static CK_RV
run_get_slots(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	struct p11mux_slot *s;
	size_t i;

	(void)r;
	if ((s = calloc(x->d->npools + 1, sizeof(*s))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < x->d->npools; i++) {
		s[i] = x->d->pools[i].slot;
		/* The PIN counter's state, as a device shows its own. */
		s[i].token.flags |= guard_flags(&x->d->pools[i].guard);
	}
	p11mux_msg_put_slots(reply, s, x->d->npools);
	free(s);
	return CKR_OK;
}

static CK_RV
run_login(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	uint8_t ticket[GUARD_TICKET_LEN];
	struct pool *p = x->p;
	CK_RV rv;

	if (r->u.login.user != CKU_USER) {
		log_warn("pool \"%s\": pid %ld asked for a login as user type %lu; only CKU_USER "
		         "is offered (the pool is read-only)",
		         p->label, (long)x->c->pid, r->u.login.user);
		return CKR_USER_TYPE_INVALID;
	}
	if (x->c->logged_in[p->index])
		return CKR_USER_ALREADY_LOGGED_IN;
	/* Checked here against the pool's PIN and counter (guard.c): a wrong PIN never reaches
	 * a device, so it cannot wear down a retry counter. */
	rv = guard_login(&p->guard, p->pin, p->pinlen, r->u.login.pin, r->u.login.pinlen,
	                 r->u.login.ticket, r->u.login.ticketlen, x->c->uid, x->c->pid, ticket);
	if (rv != CKR_OK)
		return rv;
	/* Stored with __atomic: the control thread counts the logged-in connections. */
	__atomic_store_n(&x->c->logged_in[p->index], 1, __ATOMIC_RELAXED);
	p11mux_msg_put_bytes(reply, ticket, sizeof(ticket));
	explicit_bzero(ticket, sizeof(ticket));
	return CKR_OK;
}

static CK_RV
run_logout(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	CK_RV rv = x->c->logged_in[x->p->index] ? CKR_OK : CKR_USER_NOT_LOGGED_IN;

	(void)r;
	(void)reply;
	__atomic_store_n(&x->c->logged_in[x->p->index], 0, __ATOMIC_RELAXED);
	return rv;
}

static CK_RV
run_find(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	const struct pool *p = x->p;
	CK_ULONG *handles;
	size_t i, n = 0;

	/* Real templates have a few attributes; tens of thousands would cost each object as
	 * many comparisons. */
	if (r->u.find.n > P11MUX_FIND_MAX_ATTRS)
		return CKR_ARGUMENTS_BAD;
	if ((handles = calloc(p->view.nobjects + 1, sizeof(*handles))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < p->view.nobjects; i++)
		if (visible(x, p->view.objects[i]) &&
		    pobject_matches(p->view.objects[i], r->u.find.attrs, r->u.find.n))
			handles[n++] = p->view.objects[i]->handle;
	p11mux_msg_put_ulongs(reply, handles, n);
	free(handles);
	return CKR_OK;
}

static CK_RV
run_get_object(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	const struct pobject *o = pool_object(x->p, r->u.object);

	if (!visible(x, o))
		return CKR_OBJECT_HANDLE_INVALID;
	p11mux_msg_put_attrs(reply, o->attrs, o->status, o->n);
	return CKR_OK;
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

/* A mechanism of a known family on a key of another type is the client's error: refused here,
 * never sent to a device (SoftHSM 2.6 calls exit() for CKM_RSA_X_509 on an EC key). */
static CK_RV
check_key_type(const CK_MECHANISM *mech, const struct pobject *o)
{
	return p11mux_mech_key_ok(mech->mechanism, o->ktype) ? CKR_OK : CKR_KEY_TYPE_INCONSISTENT;
}

/* The modulus length of an RSA key in bytes, from CKA_MODULUS or CKA_MODULUS_BITS; 0 when
 * the pool does not know it. */
static size_t
rsa_modulus_len(const struct pobject *o)
{
	size_t i;

	for (i = 0; i < o->n; i++) {
		if (o->status[i] != CKR_OK || o->attrs[i].pValue == NULL)
			continue;
		if (o->attrs[i].type == CKA_MODULUS)
			return o->attrs[i].ulValueLen;
		if (o->attrs[i].type == CKA_MODULUS_BITS &&
		    o->attrs[i].ulValueLen == sizeof(CK_ULONG))
			return (*(CK_ULONG *)o->attrs[i].pValue + 7) / 8;
	}
	return 0;
}

/* Raw RSA input (CKM_RSA_PKCS, CKM_RSA_X_509, OAEP, PSS) and an RSA signature are never
 * longer than the modulus: refused here, never sent to a device (SoftHSM 2.6 calls exit()
 * for CKM_RSA_X_509 input longer than the modulus). */
static CK_RV
check_rsa_len(uint32_t call, const CK_MECHANISM *mech, const struct pobject *o, size_t inlen,
              size_t siglen)
{
	size_t k;

	if (o == NULL || o->ktype != CKK_RSA || (k = rsa_modulus_len(o)) == 0)
		return CKR_OK;
	if (call == P11MUX_CALL_VERIFY && siglen > k)
		return CKR_SIGNATURE_LEN_RANGE;
	if (mech->mechanism != CKM_RSA_PKCS && mech->mechanism != CKM_RSA_X_509 &&
	    mech->mechanism != CKM_RSA_PKCS_OAEP && mech->mechanism != CKM_RSA_PKCS_PSS)
		return CKR_OK;
	if (inlen <= k)
		return CKR_OK;
	return call == P11MUX_CALL_DECRYPT ? CKR_ENCRYPTED_DATA_LEN_RANGE : CKR_DATA_LEN_RANGE;
}

/* The shim checked the key already; the daemon checks again, since it trusts no client. */
static CK_RV
check_key(const struct rpc_ctx *x, const struct rpc_handler *h, const CK_MECHANISM *mech,
          const struct pobject *o)
{
	size_t i;

	if (o == NULL || !visible(x, o))
		return CKR_KEY_HANDLE_INVALID;
	if ((o->cls != h->key_class && o->cls != CKO_SECRET_KEY) ||
	    check_key_type(mech, o) != CKR_OK)
		return CKR_KEY_TYPE_INCONSISTENT;
	for (i = 0; i < o->n; i++)
		if (o->attrs[i].type == h->key_usage && o->status[i] == CKR_OK &&
		    o->attrs[i].ulValueLen == sizeof(CK_BBOOL) &&
		    *(CK_BBOOL *)o->attrs[i].pValue == CK_FALSE)
			return CKR_KEY_FUNCTION_NOT_PERMITTED;
	if ((o->private || o->cls == CKO_PRIVATE_KEY) && !x->c->logged_in[x->p->index])
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

static const struct rpc_handler handlers[P11MUX_CALL_COUNT];

/* SIGN, VERIFY, ENCRYPT, DECRYPT, DIGEST: checked, then run on a member. */
static CK_RV
run_op(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	uint32_t call = reply->call->code;
	const struct rpc_handler *h = &handlers[call];
	const struct pobject *key = NULL;
	uint8_t *out = NULL;
	size_t outlen = 0;
	CK_RV rv;

	/* As the shim does: a device request carries the data and a few bytes more, and must fit
	 * a helper's frame. */
	if (r->u.op.inlen > P11MUX_DATA_MAX)
		return CKR_DATA_LEN_RANGE;
	if (r->u.op.siglen > P11MUX_DATA_MAX - r->u.op.inlen)
		return CKR_SIGNATURE_LEN_RANGE;
	if ((rv = check_mech(x->p, r->u.op.mech, h->mech_flag)) != CKR_OK)
		return rv;
	if (h->key_usage != 0) {
		key = pool_object(x->p, r->u.op.key);
		if ((rv = check_key(x, h, r->u.op.mech, key)) != CKR_OK ||
		    (rv = check_rsa_len(call, r->u.op.mech, key, r->u.op.inlen, r->u.op.siglen)) !=
		            CKR_OK)
			return rv;
	}
	rv = pool_crypto(x->p, call, r->u.op.mech, key, r->u.op.in, r->u.op.inlen, r->u.op.sig,
	                 r->u.op.siglen, &out, &outlen);
	if (rv == CKR_OK && call != P11MUX_CALL_VERIFY)
		p11mux_msg_put_bytes(reply, out, outlen);
	if (out != NULL) {
		explicit_bzero(out, outlen);
		free(out);
	}
	return rv;
}

static CK_RV
run_random(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	CK_ULONG len = r->u.random_len;
	uint8_t *out;
	CK_RV rv;

	if (len > 65536)
		return CKR_ARGUMENTS_BAD;
	if ((out = malloc(len ? len : 1)) == NULL)
		return CKR_HOST_MEMORY;
	if ((rv = pool_random(x->p, out, len)) == CKR_OK)
		p11mux_msg_put_bytes(reply, out, len);
	explicit_bzero(out, len);
	free(out);
	return rv;
}

/* Indexed by call code, as p11mux_calls[] is. */
static const struct rpc_handler handlers[P11MUX_CALL_COUNT] = {
        [P11MUX_CALL_HELLO] = {dec_hello, run_hello, 0, 0, 0, 0},
        [P11MUX_CALL_GET_SLOTS] = {dec_none, run_get_slots, 0, 0, 0, 0},
        [P11MUX_CALL_LOGIN] = {dec_login, run_login, 1, 0, 0, 0},
        [P11MUX_CALL_LOGOUT] = {dec_none, run_logout, 1, 0, 0, 0},
        [P11MUX_CALL_FIND] = {dec_find, run_find, 1, 0, 0, 0},
        [P11MUX_CALL_GET_OBJECT] = {dec_object, run_get_object, 1, 0, 0, 0},
        [P11MUX_CALL_SIGN] = {dec_op, run_op, 1, CKF_SIGN, CKA_SIGN, CKO_PRIVATE_KEY},
        [P11MUX_CALL_VERIFY] = {dec_op, run_op, 1, CKF_VERIFY, CKA_VERIFY, CKO_PUBLIC_KEY},
        [P11MUX_CALL_ENCRYPT] = {dec_op, run_op, 1, CKF_ENCRYPT, CKA_ENCRYPT, CKO_PUBLIC_KEY},
        [P11MUX_CALL_DECRYPT] = {dec_op, run_op, 1, CKF_DECRYPT, CKA_DECRYPT, CKO_PRIVATE_KEY},
        [P11MUX_CALL_DIGEST] = {dec_op, run_op, 1, CKF_DIGEST, 0, 0},
        [P11MUX_CALL_RANDOM] = {dec_random, run_random, 1, 0, 0, 0},
};

/* Closes the connection of a client that does not speak the protocol (a line a client can
 * provoke: rate-limited with the other dropped connections). */
static int
bad_request(struct daemon *d, const struct client *c, int r)
{
	lograte_warn(&d->dropped,
	             "client pid %ld uid %lu sent a malformed request (%s); connection closed",
	             (long)c->pid, (unsigned long)c->uid,
	             p11mux_strerror(r != 0 ? r : P11MUX_ERR_INVALID));
	return -1;
}

int
rpc_handle(struct daemon *d, struct client *c, struct p11mux_buf *in, struct p11mux_buf *out)
{
	struct rpc_ctx x = {d, c, NULL};
	struct p11mux_msg req = {0}, reply = {0};
	const struct rpc_handler *h;
	struct rpc_req r;
	uint32_t call;
	CK_RV rv;
	int e;

	memset(&r, 0, sizeof(r));
	if ((e = p11mux_msg_read_request(&req, in)) != 0)
		goto bad;
	call = req.call->code;
	h = &handlers[call];
	/* Decode the request completely, and check it once, before acting on it. */
	if (h->on_pool)
		p11mux_msg_get_ulong(&req, &r.slot);
	h->decode(&req, &r);
	if ((e = p11mux_msg_end(&req)) != 0 || (!c->hello && call != P11MUX_CALL_HELLO) ||
	    (call == P11MUX_CALL_HELLO && r.u.hello.magic != P11MUX_PROTO_MAGIC))
		goto bad;
	p11mux_msg_begin_reply(&reply, out, call, CKR_OK);
	if (h->on_pool && (x.p = daemon_pool(d, r.slot)) == NULL)
		rv = CKR_SLOT_ID_INVALID;
	else
		rv = h->run(&x, &r, &reply);
	/* A failure has no reply fields: whatever was put is dropped. */
	if (rv != CKR_OK)
		p11mux_msg_begin_reply(&reply, out, call, rv);
	p11mux_msg_clear(&req);
	if ((e = p11mux_msg_end(&reply)) != 0) {
		log_error("reply to %s could not be encoded: %s", p11mux_calls[call].name,
		          p11mux_strerror(e));
		p11mux_msg_clear(&reply);
		return -1;
	}
	p11mux_msg_clear(&reply);
	return 0;
bad:
	p11mux_msg_clear(&req);
	return bad_request(d, c, e);
}
