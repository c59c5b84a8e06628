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

/* An object handle: one of the pool's, one of the other pool's (bit 7), a small number (bit
 * 6), or (bits 7 and 6) a session object's: one a reply of this input returned, or a made-up
 * one when there is none. */
static CK_OBJECT_HANDLE
pick_object(const struct rpc_build *x, struct choices *c, size_t pool)
{
	uint8_t o = take(c);

	if ((o & 0xc0) == 0xc0)
		return x->nhandles > 0 ? x->handles[(o & 0x3f) % x->nhandles]
		                       : P11MUX_SESSION_OBJECT | (o & 0x3f);
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

/* --- session objects --- */

/* CLIENT's application id: two applications, 0, or any (the next 8 bytes). */
static CK_ULONG
pick_client(struct choices *c)
{
	static const CK_ULONG ids[3] = {1, 2, 0};
	uint8_t k = take(c);
	CK_ULONG id = 0;
	int i;

	if (k % 4 < 3)
		return ids[k % 4];
	for (i = 0; i < 8; i++)
		id = id << 8 | take(c);
	return id;
}

/* A shim session: one of three, 0 (all of them: DROP's C_CloseAllSessions), all ones (DROP's
 * private ones), or any small number. */
static CK_SESSION_HANDLE
pick_session(struct choices *c)
{
	uint8_t s = take(c);

	switch (s % 8) {
	case 3:
		return 0;
	case 4:
		return P11MUX_DROP_PRIVATE;
	case 5:
		return s >> 3;
	default:
		return s % 8 < 3 ? s % 8 + 1 : 1;
	}
}

/* Key generation mechanisms (GENERATE_PAIR starts one further: 0 is its RSA one): the pool's,
 * one without the capability, one the pool lacks, one of another kind. */
static void
put_gen_mech(struct p11mux_msg *m, struct choices *c, int pair)
{
	static const CK_MECHANISM mechs[6] = {
	        {CKM_AES_KEY_GEN, NULL, 0},
	        {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0},
	        {CKM_EC_KEY_PAIR_GEN, NULL, 0},
	        {CKM_DES3_KEY_GEN, NULL, 0},
	        {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0},
	        {CKM_RSA_PKCS, NULL, 0},
	};

	p11mux_msg_put_mech(m, &mechs[(take(c) + (pair ? 1 : 0)) % 6]);
}

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS c_data = CKO_DATA, c_secret = CKO_SECRET_KEY, c_pub = CKO_PUBLIC_KEY,
                       c_priv = CKO_PRIVATE_KEY, c_cert = CKO_CERTIFICATE;
static CK_KEY_TYPE k_aes = CKK_AES, k_rsa = CKK_RSA, k_ec = CKK_EC, k_gen = CKK_GENERIC_SECRET;
static CK_ULONG len32 = 32, len16 = 16, bits2048 = 2048, x509 = CKC_X_509;
static uint8_t e65537[3] = {1, 0, 1}, modulus[256] = {0xc5, 1, 2, 3}, aes[32] = {0x2b, 0x7e};
static const char p256[] = "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07";

#define A(t, v)                                                                                    \
	{                                                                                          \
		t, &(v), sizeof(v)                                                                 \
	}
#define S(t, v)                                                                                    \
	{                                                                                          \
		t, (void *)(v), sizeof(v) - 1                                                      \
	}
#define END                                                                                        \
	{                                                                                          \
		0, NULL, (CK_ULONG)-1                                                              \
	}

/* Templates as applications write them (ended by END); none says CKA_TOKEN or CKA_PRIVATE,
 * the modifiers add them. */
static const CK_ATTRIBUTE create_t[8][8] = {
        {A(CKA_CLASS, c_data), S(CKA_LABEL, "data"), S(CKA_APPLICATION, "app"),
         S(CKA_VALUE, "hello"), END},
        {A(CKA_CLASS, c_secret), A(CKA_KEY_TYPE, k_aes), A(CKA_VALUE, aes), A(CKA_ENCRYPT, yes),
         A(CKA_DECRYPT, yes), S(CKA_LABEL, "aes"), END},
        {A(CKA_CLASS, c_pub), A(CKA_KEY_TYPE, k_rsa), A(CKA_MODULUS, modulus),
         A(CKA_PUBLIC_EXPONENT, e65537), A(CKA_VERIFY, yes), A(CKA_ENCRYPT, yes), END},
        {A(CKA_CLASS, c_pub), A(CKA_KEY_TYPE, k_ec), S(CKA_EC_PARAMS, p256),
         S(CKA_EC_POINT, "\x04\x41 point"), A(CKA_VERIFY, yes), END},
        {A(CKA_CLASS, c_priv), A(CKA_KEY_TYPE, k_rsa), A(CKA_MODULUS, modulus),
         A(CKA_PUBLIC_EXPONENT, e65537), S(CKA_PRIVATE_EXPONENT, "d"), A(CKA_SIGN, yes),
         A(CKA_DECRYPT, yes), END},
        {A(CKA_CLASS, c_cert), A(CKA_CERTIFICATE_TYPE, x509), S(CKA_VALUE, "0\x82 cert"),
         S(CKA_LABEL, "cert"), END},
        {END},
        {A(CKA_CLASS, c_secret), A(CKA_KEY_TYPE, k_gen), S(CKA_VALUE, "generic secret"),
         A(CKA_SIGN, yes), A(CKA_VERIFY, yes), END},
};
static const CK_ATTRIBUTE generate_t[4][8] = {
        {A(CKA_CLASS, c_secret), A(CKA_KEY_TYPE, k_aes), A(CKA_VALUE_LEN, len32),
         A(CKA_ENCRYPT, yes), A(CKA_DECRYPT, yes), S(CKA_LABEL, "aes"), END},
        {A(CKA_VALUE_LEN, len16), END},
        {A(CKA_KEY_TYPE, k_gen), A(CKA_VALUE_LEN, len32), A(CKA_SIGN, yes), END},
        {END},
};
static const CK_ATTRIBUTE public_t[4][8] = {
        {A(CKA_MODULUS_BITS, bits2048), A(CKA_PUBLIC_EXPONENT, e65537), A(CKA_VERIFY, yes),
         A(CKA_ENCRYPT, yes), S(CKA_LABEL, "pair"), S(CKA_ID, "\x09"), END},
        {S(CKA_EC_PARAMS, p256), A(CKA_VERIFY, yes), S(CKA_LABEL, "pair"), END},
        {A(CKA_MODULUS_BITS, bits2048), END},
        {END},
};
static const CK_ATTRIBUTE private_t[4][8] = {
        {A(CKA_SIGN, yes), A(CKA_DECRYPT, yes), A(CKA_SENSITIVE, yes), S(CKA_LABEL, "pair"),
         S(CKA_ID, "\x09"), END},
        {A(CKA_SIGN, yes), A(CKA_EXTRACTABLE, no), END},
        {A(CKA_SIGN, no), A(CKA_DECRYPT, no), END},
        {END},
};

/* What a daemon must refuse in a template: an attribute array, a vendor's attribute, a
 * boolean of another size or without a value, CKA_ALWAYS_AUTHENTICATE true, a CKA_TOKEN of
 * another size. */
static const CK_ATTRIBUTE odd_t[6] = {
        S(CKA_WRAP_TEMPLATE, "\0\0\0\0\0\0\0\0"),
        S(CKA_VENDOR_DEFINED | 7, "v"),
        S(CKA_SIGN, "\1\0"),
        {CKA_DECRYPT, NULL, 0},
        A(CKA_ALWAYS_AUTHENTICATE, yes),
        S(CKA_TOKEN, "\1\1"),
};

/* A template from one of the tables (which: 0 CREATE, 1 GENERATE, 2 a pair's public, 3 its
 * private), then the modifiers of the choice byte's high bits: bit 3 CKA_TOKEN true; bits 4
 * and 5 CKA_PRIVATE false, true, or (3) true after a CKA_PRIVATE false; bit 6 the first
 * attribute again; bit 7 one a daemon refuses (the next byte says which). */
static void
put_make_template(struct p11mux_msg *m, struct choices *c, int which)
{
	const CK_ATTRIBUTE *base;
	CK_ATTRIBUTE t[16];
	uint8_t k = take(c);
	size_t n = 0, i;

	if (which == 0)
		base = create_t[k % 8];
	else
		base = (which == 1 ? generate_t : which == 2 ? public_t : private_t)[k % 4];
	for (i = 0; base[i].ulValueLen != (CK_ULONG)-1; i++)
		t[n++] = base[i];
	if (k & 0x08)
		t[n++] = (CK_ATTRIBUTE)A(CKA_TOKEN, yes);
	if ((k >> 4 & 3) == 3)
		t[n++] = (CK_ATTRIBUTE)A(CKA_PRIVATE, no);
	if (k >> 4 & 3)
		t[n++] = (CK_ATTRIBUTE){CKA_PRIVATE, (k >> 4 & 3) == 1 ? &no : &yes, 1};
	if ((k & 0x40) && n > 0)
		t[n++] = t[0];
	if (k & 0x80)
		t[n++] = odd_t[take(c) % 6];
	p11mux_msg_put_attrs(m, t, NULL, n);
}

#undef A
#undef S
#undef END

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
	} else if (call == P11MUX_CALL_CLIENT) {
		p11mux_msg_put_ulong(&m, pick_client(&c));
	} else if (call != P11MUX_CALL_GET_SLOTS) {
		p11mux_msg_put_ulong(&m, pick_slot(x, &c, &pool));
	}
	if (call == P11MUX_CALL_LOGIN)
		put_login(x, &m, &c, pool);
	else if (call == P11MUX_CALL_FIND || call == P11MUX_CALL_FIND_VERSIONED)
		put_template(x, &m, &c, pool);
	else if (call == P11MUX_CALL_GET_OBJECT)
		p11mux_msg_put_ulong(&m, pick_object(x, &c, pool));
	else if (call == P11MUX_CALL_RANDOM)
		p11mux_msg_put_ulong(&m, random_len(take(&c)));
	else if (call >= P11MUX_CALL_SIGN && call <= P11MUX_CALL_DIGEST)
		put_op(x, &m, &c, pool);
	else if (call == P11MUX_CALL_DESTROY)
		p11mux_msg_put_ulong(&m, pick_object(x, &c, pool));
	else if (call == P11MUX_CALL_DROP)
		p11mux_msg_put_ulong(&m, pick_session(&c));
	if (call == P11MUX_CALL_CREATE || call == P11MUX_CALL_GENERATE ||
	    call == P11MUX_CALL_GENERATE_PAIR) {
		p11mux_msg_put_ulong(&m, pick_session(&c));
		if (call != P11MUX_CALL_CREATE)
			put_gen_mech(&m, &c, call == P11MUX_CALL_GENERATE_PAIR);
		if (call == P11MUX_CALL_GENERATE_PAIR) {
			put_make_template(&m, &c, 2);
			put_make_template(&m, &c, 3);
		} else {
			put_make_template(&m, &c, call == P11MUX_CALL_CREATE ? 0 : 1);
		}
	}
	r = p11mux_msg_end(&m);
	p11mux_msg_clear(&m);
	return r == 0 ? 0 : -1;
}
