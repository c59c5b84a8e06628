/*
 * fuzz_rpc's built requests (RPC_REC_BUILT, fuzz_rpc.h): a few choice bytes name a call, its
 * pool, object, mechanism, PIN or ticket among what the stub daemon has, and the codec writes
 * the request. So the fuzzer reaches any call in any state in a few bytes, where a raw frame
 * needs every length and field right; raw frames keep testing the decoding.
 */
#include "fuzz_rpc.h"
#include "proto.h"

#include <string.h>

/* The choice bytes, read in turn; 0 once they are used up. */
struct choices {
	const uint8_t *p;
	size_t n, off;
};

static uint8_t
take(struct choices *c)
{
	return c->off < c->n ? c->p[c->off++] : 0;
}

/* What is left, as data. */
static void
rest(struct choices *c, const uint8_t **p, size_t *n)
{
	*p = c->p + c->off;
	*n = c->n - c->off;
	c->off = c->n;
}

/* A slot: mostly one of the pools' (its index in *pool), sometimes any number. */
static CK_SLOT_ID
pick_slot(const struct rpc_build *x, struct choices *c, size_t *pool)
{
	uint8_t s = take(c);

	*pool = (s >> 2) % STUBD_NPOOLS;
	return (s & 3) == 3 ? (CK_SLOT_ID)(s >> 2) : x->sd->pools[*pool].slot.id;
}

/* An object handle: one of the pool's, one of the other pool's (bit 7), or a small number
 * (bit 6). */
static CK_OBJECT_HANDLE
pick_object(const struct rpc_build *x, struct choices *c, size_t pool)
{
	uint8_t o = take(c);

	if (o & 0x40)
		return o & 0x3f;
	if (o & 0x80)
		pool = (pool + 1) % STUBD_NPOOLS;
	return stubd_object(x->sd, pool, (enum stubd_object)((o & 0x3f) % STUBD_NOBJECTS))->handle;
}

static void
put_login(const struct rpc_build *x, struct p11mux_msg *m, struct choices *c, size_t pool)
{
	static const CK_USER_TYPE users[4] = {CKU_USER, CKU_USER, CKU_SO, CKU_CONTEXT_SPECIFIC};
	const char *pin = stubd_pins[pool];
	uint8_t u = take(c), k = take(c), t = take(c), garbage[GUARD_TICKET_LEN];
	uint8_t flipped[GUARD_TICKET_LEN];
	const uint8_t *p;
	size_t n;

	p11mux_msg_put_ulong(m, users[u % 4]);
	if (k % 4 == 2)
		pin = stubd_pins[(pool + 1) % STUBD_NPOOLS];
	if (k % 4 == 3) {
		rest(c, &p, &n);
		p11mux_msg_put_bytes(m, p, n);
	} else {
		p11mux_msg_put_bytes(m, pin, k % 4 == 1 ? 0 : strlen(pin));
	}
	memset(garbage, t, sizeof(garbage));
	memcpy(flipped, x->ticket, sizeof(flipped));
	flipped[(t >> 3) % sizeof(flipped)] ^= (uint8_t)(1u << (t & 7));
	if (t % 4 == 1 || (t % 4 == 2 && x->ticketlen == 0))
		p11mux_msg_put_bytes(m, x->ticket, x->ticketlen);
	else if (t % 4 == 2)
		p11mux_msg_put_bytes(m, flipped, sizeof(flipped));
	else
		p11mux_msg_put_bytes(m, garbage, t % 4 == 3 ? sizeof(garbage) : 0);
}

/* A template of up to 3 attributes, with the values one of the objects has (or none). */
static void
put_template(const struct rpc_build *x, struct p11mux_msg *m, struct choices *c, size_t pool)
{
	static const CK_ATTRIBUTE_TYPE types[8] = {CKA_CLASS, CKA_PRIVATE,  CKA_LABEL, CKA_ID,
	                                           CKA_SIGN,  CKA_KEY_TYPE, CKA_VALUE, CKA_TOKEN};
	CK_ATTRIBUTE t[3];
	size_t n = take(c) % 4, i, k;

	for (i = 0; i < n; i++) {
		uint8_t a = take(c);
		const struct pobject *o =
		        stubd_object(x->sd, pool, (enum stubd_object)(a >> 3) % STUBD_NOBJECTS);

		t[i] = (CK_ATTRIBUTE){types[a & 7], NULL, 0};
		for (k = 0; k < o->n; k++)
			if (o->attrs[k].type == t[i].type && o->status[k] == CKR_OK)
				t[i] = o->attrs[k];
	}
	p11mux_msg_put_attrs(m, t, NULL, n);
}

/* A mechanism the pool has (with its parameter), one it has with no capability, or one it
 * does not know. */
static void
put_mech(struct p11mux_msg *m, struct choices *c)
{
	static CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	static CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED,
	                                       "label", 5};
	static CK_AES_CTR_PARAMS ctr = {128, {0}};
	static uint8_t iv[16] = {1, 2, 3, 4};
	static const CK_MECHANISM mechs[11] = {
	        {CKM_RSA_PKCS, NULL, 0},
	        {CKM_RSA_PKCS_PSS, &pss, sizeof(pss)},
	        {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss)},
	        {CKM_SHA256_RSA_PKCS, NULL, 0},
	        {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)},
	        {CKM_ECDSA, NULL, 0},
	        {CKM_SHA256, NULL, 0},
	        {CKM_AES_CBC, iv, sizeof(iv)},
	        {CKM_AES_CTR, &ctr, sizeof(ctr)},
	        {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0},
	        {CKM_VENDOR_DEFINED | 0x1234, NULL, 0},
	};

	p11mux_msg_put_mech(m, &mechs[take(c) % 11]);
}

static void
put_op(const struct rpc_build *x, struct p11mux_msg *m, struct choices *c, size_t pool)
{
	uint32_t call = m->call->code;
	const uint8_t *p;
	size_t n;

	put_mech(m, c);
	if (call != P11MUX_CALL_DIGEST)
		p11mux_msg_put_ulong(m, pick_object(x, c, pool));
	if (call == P11MUX_CALL_VERIFY) {
		/* The data: up to 63 bytes. */
		n = take(c) % 64;
		p11mux_msg_put_bytes(m, c->p + c->off, n <= c->n - c->off ? n : c->n - c->off);
		c->off += n <= c->n - c->off ? n : c->n - c->off;
	}
	/* The data, and VERIFY's signature after it: the rest. */
	rest(c, &p, &n);
	p11mux_msg_put_bytes(m, p, n);
}

/* Up to 4 KiB, or over the 64 KiB a RANDOM may ask for. */
static CK_ULONG
random_len(uint8_t r)
{
	return r == 255 ? 65537 : (CK_ULONG)r * 16;
}

int
rpc_build(const struct rpc_build *x, struct p11mux_buf *b, const uint8_t *p, size_t n)
{
	struct choices c = {p, n, 0};
	struct p11mux_msg m = {0};
	uint32_t call = take(&c) % (P11MUX_CALL_COUNT - 1) + 1;
	size_t pool = 0;
	int r;

	p11mux_msg_begin_request(&m, b, call);
	if (call == P11MUX_CALL_HELLO) {
		p11mux_msg_put_ulong(&m, P11MUX_PROTO_MAGIC);
		p11mux_msg_put_ulong(&m, 1);
		p11mux_msg_put_ulong(&m, P11MUX_PROTO_VERSION);
	} else if (call != P11MUX_CALL_GET_SLOTS) {
		p11mux_msg_put_ulong(&m, pick_slot(x, &c, &pool));
	}
	if (call == P11MUX_CALL_LOGIN)
		put_login(x, &m, &c, pool);
	else if (call == P11MUX_CALL_FIND)
		put_template(x, &m, &c, pool);
	else if (call == P11MUX_CALL_GET_OBJECT)
		p11mux_msg_put_ulong(&m, pick_object(x, &c, pool));
	else if (call == P11MUX_CALL_RANDOM)
		p11mux_msg_put_ulong(&m, random_len(take(&c)));
	else if (call >= P11MUX_CALL_SIGN && call <= P11MUX_CALL_DIGEST)
		put_op(x, &m, &c, pool);
	r = p11mux_msg_end(&m);
	p11mux_msg_clear(&m);
	return r == 0 ? 0 : -1;
}
