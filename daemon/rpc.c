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
#include "thread.h"

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
		CK_ULONG client_id;
		struct {
			CK_SESSION_HANDLE session;
			CK_MECHANISM *mech; /* GENERATE, GENERATE_PAIR */
			struct p11mux_attrs t1, t2;
		} make;
		CK_SESSION_HANDLE session; /* DROP */
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

static void
dec_client(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.client_id);
}

/* CREATE, GENERATE, GENERATE_PAIR: session, mechanism (not for CREATE), template(s). */
static void
dec_make(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.make.session);
	if (m->call->code != P11MUX_CALL_CREATE)
		p11mux_msg_get_mech(m, &r->u.make.mech);
	p11mux_msg_get_attrs(m, &r->u.make.t1);
	if (m->call->code == P11MUX_CALL_GENERATE_PAIR)
		p11mux_msg_get_attrs(m, &r->u.make.t2);
}

static void
dec_session(struct p11mux_msg *m, struct rpc_req *r)
{
	p11mux_msg_get_ulong(m, &r->u.session);
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

	/* The newest version both speak: a shim loaded before an upgrade keeps working with
	 * the upgraded daemon. */
	CK_ULONG v = r->u.hello.highest < P11MUX_PROTO_VERSION ? r->u.hello.highest
	                                                       : P11MUX_PROTO_VERSION;

	if (r->u.hello.lowest > v || v < P11MUX_PROTO_LOWEST) {
		lograte_warn(&x->d->dropped,
		             "client pid %ld speaks protocol versions %lu..%lu, not %u..%u (a shim "
		             "of another p11mux version?)",
		             (long)x->c->pid, r->u.hello.lowest, r->u.hello.highest,
		             P11MUX_PROTO_LOWEST, P11MUX_PROTO_VERSION);
		return CKR_FUNCTION_FAILED;
	}
	x->c->hello = 1;
	x->c->version = (unsigned)v;
	p11mux_msg_put_ulong(reply, v);
	p11mux_msg_put_bytes(reply, name, strlen(name));
	return CKR_OK;
}

static CK_RV
run_get_slots(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	struct p11mux_slot *s;
	size_t i, n = daemon_npools(x->d);

	(void)r;
	if ((s = calloc(n + 1, sizeof(*s))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < n; i++) {
		s[i] = x->d->pools[i].slot;
		/* The PIN counter's state, as a device shows its own. */
		s[i].token.flags |= guard_flags(&x->d->pools[i].guard);
	}
	p11mux_msg_put_slots(reply, s, n);
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

/* Appends the application's session objects of the pool that match t to *handles (grown). */
static void
find_session_objects(const struct rpc_ctx *x, const struct p11mux_attrs *t, CK_ULONG **handles,
                     size_t *n)
{
	struct apps *a = &x->d->apps;
	struct sobj *o;
	CK_ULONG *grown;

	if (x->c->app == NULL)
		return;
	p11mux_lock(&a->lock);
	size_t room = x->c->app->nobjs;

	if ((grown = realloc(*handles, (*n + room + 1) * sizeof(**handles))) != NULL) {
		*handles = grown;
		for (o = x->c->app->objs; o != NULL && room > 0; o = o->next)
			if (o->pool == x->p && !o->dead && visible(x, &o->po) &&
			    pobject_matches(&o->po, t->attrs, t->n)) {
				(*handles)[(*n)++] = o->po.handle;
				room--;
			}
	}
	p11mux_unlock(&a->lock);
}

static CK_RV
run_find(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	const struct pool *p = x->p;
	/* The version first: a change after it is seen at the next search. */
	uint64_t version = view_version(&p->view);
	struct pobject *const *objects;
	CK_ULONG *handles;
	size_t i, n = 0, nobjects;

	/* Real templates have a few attributes; tens of thousands would cost each object as
	 * many comparisons. */
	if (r->u.find.n > P11MUX_FIND_MAX_ATTRS)
		return CKR_ARGUMENTS_BAD;
	objects = view_objects(&p->view, &nobjects);
	if ((handles = calloc(nobjects + 1, sizeof(*handles))) == NULL)
		return CKR_HOST_MEMORY;
	for (i = 0; i < nobjects; i++)
		if (visible(x, objects[i]) && !pobject_withdrawn(objects[i]) &&
		    pobject_matches(objects[i], r->u.find.attrs, r->u.find.n))
			handles[n++] = objects[i]->handle;
	find_session_objects(x, &r->u.find, &handles, &n);
	p11mux_msg_put_ulongs(reply, handles, n);
	if (reply->call->code == P11MUX_CALL_FIND_VERSIONED)
		p11mux_msg_put_ulong(reply, version);
	free(handles);
	return CKR_OK;
}

static CK_RV
run_get_object(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	const struct pobject *o;
	struct sobj *so = NULL;

	if (r->u.object & P11MUX_SESSION_OBJECT) {
		so = sobj_get(&x->d->apps, x->c, x->p, r->u.object);
		o = so != NULL ? &so->po : NULL;
	} else {
		o = pool_object(x->p, r->u.object);
	}
	int seen = visible(x, o);

	if (seen)
		p11mux_msg_put_attrs(reply, o->attrs, o->status, o->n);
	if (so != NULL)
		sobj_put(&x->d->apps, so);
	return seen ? CKR_OK : CKR_OBJECT_HANDLE_INVALID;
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
		if (o->attrs[i].type == CKA_MODULUS) {
			/* Leading zero bytes (an imported session key may have them) are no
			 * part of the modulus's length. */
			const uint8_t *v = o->attrs[i].pValue;
			size_t n = o->attrs[i].ulValueLen;

			while (n > 0 && *v == 0) {
				v++;
				n--;
			}
			return n;
		}
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
	/* The pool's private keys need a login whatever they say; a session key, what its
	 * CKA_PRIVATE says (its application made it so). */
	if ((o->private || (o->cls == CKO_PRIVATE_KEY && !(o->handle & P11MUX_SESSION_OBJECT))) &&
	    !x->c->logged_in[x->p->index])
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

static const struct rpc_handler handlers[P11MUX_CALL_COUNT];

/* An operation with a session object's key: checked as a token key is, then run on the
 * member the object lives on, and nowhere else. Its helper gone: CKR_DEVICE_REMOVED, as for a
 * pulled device, and the object is no more (later: CKR_KEY_HANDLE_INVALID). */
static CK_RV
run_op_session(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	uint32_t call = reply->call->code;
	const struct rpc_handler *h = &handlers[call];
	struct sobj *so = sobj_get(&x->d->apps, x->c, x->p, r->u.op.key);
	uint8_t *out = NULL;
	size_t outlen = 0;
	CK_RV rv;

	if ((rv = check_key(x, h, r->u.op.mech, so != NULL ? &so->po : NULL)) != CKR_OK ||
	    (rv = check_rsa_len(call, r->u.op.mech, &so->po, r->u.op.inlen, r->u.op.siglen)) !=
	            CKR_OK)
		goto out;
	rv = pool_pinned_crypto(x->p, so->member, so->gen, call, r->u.op.mech, &so->po, r->u.op.in,
	                        r->u.op.inlen, r->u.op.sig, r->u.op.siglen, &out, &outlen);
	apps_op(&x->d->apps, x->c);
	if (rv == CKR_DEVICE_REMOVED)
		sobj_lost(&x->d->apps, so);
	if (rv == CKR_OK && call != P11MUX_CALL_VERIFY)
		p11mux_msg_put_bytes(reply, out, outlen);
	p11mux_free_secret(out, outlen);
out:
	if (so != NULL)
		sobj_put(&x->d->apps, so);
	return rv;
}

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
	if (h->key_usage != 0 && (r->u.op.key & P11MUX_SESSION_OBJECT))
		return run_op_session(x, r, reply);
	if (h->key_usage != 0) {
		key = pool_object(x->p, r->u.op.key);
		if ((rv = check_key(x, h, r->u.op.mech, key)) != CKR_OK ||
		    (rv = check_rsa_len(call, r->u.op.mech, key, r->u.op.inlen, r->u.op.siglen)) !=
		            CKR_OK)
			return rv;
	}
	rv = pool_crypto(x->p, call, r->u.op.mech, key, r->u.op.in, r->u.op.inlen, r->u.op.sig,
	                 r->u.op.siglen, &out, &outlen);
	apps_op(&x->d->apps, x->c);
	if (rv == CKR_OK && call != P11MUX_CALL_VERIFY)
		p11mux_msg_put_bytes(reply, out, outlen);
	p11mux_free_secret(out, outlen);
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
	p11mux_free_secret(out, len);
	return rv;
}

/* CLIENT: this connection serves application id (its session objects). */
static CK_RV
run_client(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	CK_RV rv;

	if ((rv = apps_bind(&x->d->apps, x->c, r->u.client_id)) == CKR_OK)
		p11mux_msg_put_ulong(reply, x->d->apps.instance);
	return rv;
}

/* The value of a CK_BBOOL attribute in a template: 1, 0, or dflt when absent. */
static int
template_bool(const struct p11mux_attrs *t, CK_ATTRIBUTE_TYPE type, int dflt)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (t->attrs[i].type == type && t->attrs[i].pValue != NULL &&
		    t->attrs[i].ulValueLen == sizeof(CK_BBOOL))
			return *(CK_BBOOL *)t->attrs[i].pValue != CK_FALSE;
	return dflt;
}

/* What an object made from template t counts against the quota: its values, and room for
 * what the device adds (a key's material). */
static size_t
template_bytes(const struct p11mux_attrs *t)
{
	size_t i, n = 1024;

	for (i = 0; i < t->n; i++)
		n += t->attrs[i].ulValueLen;
	return n;
}

/* What an object a member made counts against the quota: its values, and 1 KiB. */
static size_t
made_bytes(const struct mobject *mo)
{
	size_t i, n = 1024;

	for (i = 0; mo != NULL && i < mo->n; i++)
		n += mo->attrs[i].ulValueLen;
	return n;
}

/* Whether a member made a private object (CKA_PRIVATE true or not read). */
static int
made_private(const struct mobject *mo)
{
	size_t i;

	if (mo == NULL)
		return 0;
	for (i = 0; i < mo->n; i++)
		if (mo->attrs[i].type == CKA_PRIVATE && mo->status[i] == CKR_OK &&
		    mo->attrs[i].pValue != NULL && mo->attrs[i].ulValueLen == sizeof(CK_BBOOL))
			return *(CK_BBOOL *)mo->attrs[i].pValue != CK_FALSE;
	return 1;
}

/* The CK_BBOOL attributes of PKCS#11 2.40's objects. */
static int
attr_is_bool(CK_ATTRIBUTE_TYPE t)
{
	switch (t) {
	case CKA_TOKEN:
	case CKA_PRIVATE:
	case CKA_MODIFIABLE:
	case CKA_COPYABLE:
	case CKA_DESTROYABLE:
	case CKA_TRUSTED:
	case CKA_SENSITIVE:
	case CKA_ENCRYPT:
	case CKA_DECRYPT:
	case CKA_WRAP:
	case CKA_UNWRAP:
	case CKA_SIGN:
	case CKA_SIGN_RECOVER:
	case CKA_VERIFY:
	case CKA_VERIFY_RECOVER:
	case CKA_DERIVE:
	case CKA_EXTRACTABLE:
	case CKA_LOCAL:
	case CKA_NEVER_EXTRACTABLE:
	case CKA_ALWAYS_SENSITIVE:
	case CKA_ALWAYS_AUTHENTICATE:
	case CKA_WRAP_WITH_TRUSTED:
		return 1;
	default:
		return 0;
	}
}

/* What a device must never get from a client's template: an attribute array (its values hold
 * pointers the module would follow, in the helper), a vendor's attribute (its value's shape is
 * unknown), a boolean of another size, the same attribute twice (the first one is what the
 * daemon checks), or CKA_ALWAYS_AUTHENTICATE (a key that wants a login per operation, which
 * the pool's members cannot give: the device would answer CKR_USER_NOT_LOGGED_IN). */
static CK_RV
check_template(const struct p11mux_attrs *t)
{
	size_t i, k;

	if (t->n > P11MUX_FIND_MAX_ATTRS)
		return CKR_ARGUMENTS_BAD;
	for (i = 0; i < t->n; i++) {
		const CK_ATTRIBUTE *a = &t->attrs[i];

		if ((a->type & CKF_ARRAY_ATTRIBUTE) || a->type >= CKA_VENDOR_DEFINED)
			return CKR_ATTRIBUTE_TYPE_INVALID;
		if (attr_is_bool(a->type) &&
		    (a->pValue == NULL || a->ulValueLen != sizeof(CK_BBOOL)))
			return CKR_ATTRIBUTE_VALUE_INVALID;
		if (a->type == CKA_ALWAYS_AUTHENTICATE && *(CK_BBOOL *)a->pValue != CK_FALSE)
			return CKR_ATTRIBUTE_VALUE_INVALID;
		for (k = 0; k < i; k++)
			if (t->attrs[k].type == a->type)
				return CKR_TEMPLATE_INCONSISTENT;
	}
	return CKR_OK;
}

/* The checks of CREATE, GENERATE and GENERATE_PAIR before a device sees them. */
static CK_RV
check_make(const struct rpc_ctx *x, struct rpc_req *r, uint32_t call)
{
	int pair = call == P11MUX_CALL_GENERATE_PAIR, logged_in = x->c->logged_in[x->p->index];
	CK_RV rv;

	if (x->c->app == NULL)
		return CKR_FUNCTION_FAILED; /* a shim always says CLIENT first */
	if ((rv = check_template(&r->u.make.t1)) != CKR_OK ||
	    (pair && (rv = check_template(&r->u.make.t2)) != CKR_OK))
		return rv;
	/* A user whose request cost a member's helper makes nothing for a while. */
	if (apps_struck(&x->d->apps, x->c->uid))
		return CKR_DEVICE_ERROR;
	/* Token objects are the operator's business, on the devices. */
	if (template_bool(&r->u.make.t1, CKA_TOKEN, 0) ||
	    (pair && template_bool(&r->u.make.t2, CKA_TOKEN, 0)))
		return CKR_TOKEN_WRITE_PROTECTED;
	/* The members are logged in whatever the client is: a private object needs the
	 * client's own login. Refused here when the template says so; when it does not, the
	 * device's default decides, and run_make() checks what was made. */
	if (!logged_in && (template_bool(&r->u.make.t1, CKA_PRIVATE, 0) ||
	                   (pair && template_bool(&r->u.make.t2, CKA_PRIVATE, 0))))
		return CKR_USER_NOT_LOGGED_IN;
	if (call == P11MUX_CALL_GENERATE)
		return check_mech(x->p, r->u.make.mech, CKF_GENERATE);
	if (pair)
		return check_mech(x->p, r->u.make.mech, CKF_GENERATE_KEY_PAIR);
	return CKR_OK;
}

/* CREATE, GENERATE, GENERATE_PAIR: made on the least busy member, pinned there. */
static CK_RV
run_make(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	uint32_t call = reply->call->code;
	struct apps *a = &x->d->apps;
	size_t i, idx = 0, n = call == P11MUX_CALL_GENERATE_PAIR ? 2 : 1;
	size_t bytes[2] = {template_bytes(&r->u.make.t1), template_bytes(&r->u.make.t2)};
	CK_OBJECT_HANDLE made[2] = {CK_INVALID_HANDLE, CK_INVALID_HANDLE};
	struct job *j;
	struct sobj *so;
	CK_RV rv;

	if ((rv = check_make(x, r, call)) != CKR_OK)
		return rv;
	if (n == 1)
		bytes[1] = 0;
	if ((rv = apps_reserve(a, x->c, n, bytes[0] + bytes[1])) != CKR_OK)
		return rv;
	if ((j = job_new(call, r->u.make.mech, NULL, NULL, 0, NULL, 0)) == NULL) {
		apps_release(a, x->c, n, bytes[0] + bytes[1]);
		return CKR_HOST_MEMORY;
	}
	j->tmpl = &r->u.make.t1;
	j->tmpl2 = &r->u.make.t2;
	if ((rv = pool_make(x->p, j, &idx)) != CKR_OK) {
		if (j->cost_helper)
			apps_strike(a, x->c);
		job_free(j);
		apps_release(a, x->c, n, bytes[0] + bytes[1]);
		return rv;
	}
	/* What the member made counts, if it is more than the template said (a generated
	 * value): past the quota, refused and destroyed. */
	for (i = 0; i < n; i++) {
		size_t actual = made_bytes(j->made[i]);

		if (rv == CKR_OK && actual > bytes[i]) {
			if (apps_reserve(a, x->c, 0, actual - bytes[i]) == CKR_OK)
				bytes[i] = actual;
			else
				rv = CKR_DEVICE_MEMORY;
		}
	}
	/* A private object (the device's default) for a client that is not logged in: it must
	 * not see it, nor anyone. Destroyed at once, as a device would have refused it. */
	if (!x->c->logged_in[x->p->index])
		for (i = 0; i < n; i++)
			if (made_private(j->made[i]))
				rv = CKR_USER_NOT_LOGGED_IN;
	/* The quota reserved is the objects' now (each gives its share back when it ends). */
	for (i = 0; i < n; i++) {
		made[i] = sobj_add(a, x->c, x->p, idx, j->gen, r->u.make.session, j->made[i],
		                   bytes[i]);
		j->made[i] = NULL;
		if (made[i] == CK_INVALID_HANDLE)
			apps_release(a, x->c, 1, bytes[i]);
	}
	job_free(j);
	for (i = 0; i < n && rv == CKR_OK; i++) {
		if (made[i] == CK_INVALID_HANDLE ||
		    (so = sobj_get(a, x->c, x->p, made[i])) == NULL) {
			rv = CKR_HOST_MEMORY;
			continue;
		}
		p11mux_msg_put_ulong(reply, made[i]);
		p11mux_msg_put_attrs(reply, so->po.attrs, so->po.status, so->po.n);
		sobj_put(a, so);
	}
	if (rv != CKR_OK)
		for (i = 0; i < n; i++)
			if (made[i] != CK_INVALID_HANDLE)
				sobj_destroy(a, x->c, x->p, made[i]);
	return rv;
}

static CK_RV
run_destroy(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	(void)reply;
	if (r->u.object & P11MUX_SESSION_OBJECT)
		return sobj_destroy(&x->d->apps, x->c, x->p, r->u.object);
	return visible(x, pool_object(x->p, r->u.object)) ? CKR_TOKEN_WRITE_PROTECTED
	                                                  : CKR_OBJECT_HANDLE_INVALID;
}

static CK_RV
run_drop(const struct rpc_ctx *x, struct rpc_req *r, struct p11mux_msg *reply)
{
	(void)reply;
	sobj_drop(&x->d->apps, x->c, x->p, r->u.session);
	return CKR_OK;
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
        [P11MUX_CALL_CLIENT] = {dec_client, run_client, 0, 0, 0, 0},
        [P11MUX_CALL_CREATE] = {dec_make, run_make, 1, 0, 0, 0},
        [P11MUX_CALL_GENERATE] = {dec_make, run_make, 1, 0, 0, 0},
        [P11MUX_CALL_GENERATE_PAIR] = {dec_make, run_make, 1, 0, 0, 0},
        [P11MUX_CALL_DESTROY] = {dec_object, run_destroy, 1, 0, 0, 0},
        [P11MUX_CALL_DROP] = {dec_session, run_drop, 1, 0, 0, 0},
        [P11MUX_CALL_FIND_VERSIONED] = {dec_find, run_find, 1, 0, 0, 0},
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
