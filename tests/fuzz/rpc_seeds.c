/*
 * fuzz_rpc's seed corpus and dictionary, written with the codec and the stub daemon's own
 * handles (so that they stay right when the protocol or the objects change):
 *   P11MUX_FUZZ_WRITE_SEEDS=tests/fuzz/rpc/seeds P11MUX_FUZZ_WRITE_DICT=tests/fuzz/rpc.dict \
 *     build-fuzz/tests/fuzz/fuzz_rpc
 * Each seed is a short session: the handshake, then one story (a login and what it unlocks,
 * a guesser locking the PIN, a member failing, a ticket on a new connection, ...).
 */
#include "fuzz_rpc.h"
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rpc.c's P11MUX_FIND_MAX_ATTRS: a template of more is refused. */
#define FIND_MAX_ATTRS 64

struct seed {
	uint8_t b[16384];
	size_t n;
};

static struct p11mux_buf *rb;
static struct stubd *sd;

static void
rec(struct seed *s, uint8_t tag, const void *p, size_t n)
{
	if (s->n + RPC_DELIM_LEN + 1 + n > sizeof(s->b) ||
	    (n > 0 && memmem(p, n, RPC_DELIM, RPC_DELIM_LEN) != NULL))
		abort();
	if (s->n > 0) {
		memcpy(s->b + s->n, RPC_DELIM, RPC_DELIM_LEN);
		s->n += RPC_DELIM_LEN;
	}
	s->b[s->n++] = tag;
	if (n > 0)
		memcpy(s->b + s->n, p, n);
	s->n += n;
}

static struct p11mux_msg *
begin(uint32_t call)
{
	static struct p11mux_msg m;

	p11mux_msg_clear(&m);
	memset(&m, 0, sizeof(m));
	p11mux_msg_begin_request(&m, rb, call);
	return &m;
}

static void
frame(struct seed *s, struct p11mux_msg *m)
{
	if (p11mux_msg_end(m) != 0)
		abort();
	rec(s, RPC_REC_FRAME, p11mux_buf_data(rb), p11mux_buf_len(rb));
	p11mux_msg_clear(m);
}

static CK_SLOT_ID
slot(size_t pool)
{
	return sd->pools[pool].slot.id;
}

static CK_OBJECT_HANDLE
handle(size_t pool, enum stubd_object o)
{
	return stubd_object(sd, pool, o)->handle;
}

static void
hello_v(struct seed *s, CK_ULONG magic, CK_ULONG lowest, CK_ULONG highest)
{
	struct p11mux_msg *m = begin(P11MUX_CALL_HELLO);

	p11mux_msg_put_ulong(m, magic);
	p11mux_msg_put_ulong(m, lowest);
	p11mux_msg_put_ulong(m, highest);
	frame(s, m);
}

static void
hello(struct seed *s)
{
	hello_v(s, P11MUX_PROTO_MAGIC, 1, P11MUX_PROTO_VERSION);
}

static void
bare(struct seed *s, uint32_t call)
{
	frame(s, begin(call));
}

static void
on_slot(struct seed *s, uint32_t call, CK_SLOT_ID id)
{
	struct p11mux_msg *m = begin(call);

	p11mux_msg_put_ulong(m, id);
	frame(s, m);
}

static void
login_as(struct seed *s, CK_SLOT_ID id, CK_USER_TYPE user, const char *pin)
{
	struct p11mux_msg *m = begin(P11MUX_CALL_LOGIN);

	p11mux_msg_put_ulong(m, id);
	p11mux_msg_put_ulong(m, user);
	p11mux_msg_put_bytes(m, pin, strlen(pin));
	p11mux_msg_put_bytes(m, NULL, 0);
	frame(s, m);
}

static void
login(struct seed *s, size_t pool)
{
	login_as(s, slot(pool), CKU_USER, stubd_pins[pool]);
}

static void
find(struct seed *s, CK_SLOT_ID id, const CK_ATTRIBUTE *t, size_t n)
{
	struct p11mux_msg *m = begin(P11MUX_CALL_FIND);

	p11mux_msg_put_ulong(m, id);
	p11mux_msg_put_attrs(m, t, NULL, n);
	frame(s, m);
}

static void
find_class(struct seed *s, size_t pool, CK_OBJECT_CLASS cls)
{
	CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof(cls)};

	find(s, slot(pool), &t, 1);
}

static void
get_object(struct seed *s, CK_SLOT_ID id, CK_OBJECT_HANDLE h)
{
	struct p11mux_msg *m = begin(P11MUX_CALL_GET_OBJECT);

	p11mux_msg_put_ulong(m, id);
	p11mux_msg_put_ulong(m, h);
	frame(s, m);
}

static void
op(struct seed *s, uint32_t call, CK_SLOT_ID id, const CK_MECHANISM *mech, CK_OBJECT_HANDLE key,
   const char *data)
{
	struct p11mux_msg *m = begin(call);

	p11mux_msg_put_ulong(m, id);
	p11mux_msg_put_mech(m, mech);
	if (call != P11MUX_CALL_DIGEST)
		p11mux_msg_put_ulong(m, key);
	p11mux_msg_put_bytes(m, data, strlen(data));
	if (call == P11MUX_CALL_VERIFY)
		p11mux_msg_put_bytes(m, "signature", 9);
	frame(s, m);
}

static void
op_plain(struct seed *s, uint32_t call, size_t pool, CK_MECHANISM_TYPE t, enum stubd_object key)
{
	CK_MECHANISM mech = {t, NULL, 0};

	op(s, call, slot(pool), &mech, handle(pool, key), "data to sign");
}

static void
random_bytes(struct seed *s, CK_SLOT_ID id, CK_ULONG n)
{
	struct p11mux_msg *m = begin(P11MUX_CALL_RANDOM);

	p11mux_msg_put_ulong(m, id);
	p11mux_msg_put_ulong(m, n);
	frame(s, m);
}

static void
answers(struct seed *s, const char *a, size_t n)
{
	rec(s, RPC_REC_ANSWERS, a, n);
}

static void
connect_uid(struct seed *s, uint32_t uid)
{
	uint8_t b[4] = {(uint8_t)(uid >> 24), (uint8_t)(uid >> 16), (uint8_t)(uid >> 8),
	                (uint8_t)uid};

	rec(s, RPC_REC_CONNECT, b, sizeof(b));
}

static void
ticket_login(struct seed *s, uint8_t pool, const char *pin, int flip)
{
	uint8_t b[64];

	b[0] = pool;
	memcpy(b + 1, pin, strlen(pin));
	rec(s, RPC_REC_TICKET | (flip ? RPC_REC_FLIP : 0), b, 1 + strlen(pin));
}

/* --- the stories --- */

static void
seed_handshake(struct seed *s)
{
	hello(s);
	bare(s, P11MUX_CALL_GET_SLOTS);
}

static void
seed_bad_handshakes(struct seed *s)
{
	bare(s, P11MUX_CALL_GET_SLOTS); /* before the handshake: closed */
	hello_v(s, P11MUX_PROTO_MAGIC, 7, 9);
	hello_v(s, 0x1234, 1, 2); /* no magic: closed */
	hello(s);
	hello(s);
}

static void
seed_browse_logged_out(struct seed *s)
{
	int w;

	hello(s);
	find(s, slot(0), NULL, 0);
	for (w = 0; w < STUBD_NOBJECTS; w++)
		get_object(s, slot(0), handle(0, (enum stubd_object)w));
	get_object(s, slot(0), 12345);
}

static void
seed_browse_logged_in(struct seed *s)
{
	int w;

	hello(s);
	login(s, 0);
	find(s, slot(0), NULL, 0);
	find_class(s, 0, CKO_PRIVATE_KEY);
	for (w = 0; w < STUBD_NOBJECTS; w++)
		get_object(s, slot(0), handle(0, (enum stubd_object)w));
	on_slot(s, P11MUX_CALL_LOGOUT, slot(0));
	find(s, slot(0), NULL, 0);
	on_slot(s, P11MUX_CALL_LOGOUT, slot(0));
}

static void
seed_other_pool(struct seed *s)
{
	hello(s);
	login(s, 1);
	find(s, slot(0), NULL, 0);
	get_object(s, slot(0), handle(0, STUBD_RSA_PRIV));
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	find(s, slot(1), NULL, 0);
}

static void
seed_find_templates(struct seed *s)
{
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE t[2] = {{CKA_LABEL, "rsa", 3}, {CKA_SIGN, &yes, sizeof(yes)}};
	CK_ATTRIBUTE many[FIND_MAX_ATTRS + 1];
	size_t i;

	hello(s);
	login(s, 0);
	find(s, slot(0), t, 2);
	find(s, slot(0), t, 1);
	for (i = 0; i < FIND_MAX_ATTRS + 1; i++)
		many[i] = (CK_ATTRIBUTE){CKA_LABEL, "x", 1};
	find(s, slot(0), many, FIND_MAX_ATTRS + 1);
}

static void
seed_pin_guess(struct seed *s)
{
	hello(s);
	login_as(s, slot(0), CKU_USER, "0000");
	login_as(s, slot(0), CKU_USER, "1111");
	login_as(s, slot(0), CKU_USER, "2222");
	login(s, 0);
	bare(s, P11MUX_CALL_GET_SLOTS);
}

static void
seed_login_odd(struct seed *s)
{
	hello(s);
	login_as(s, slot(0), CKU_SO, stubd_pins[0]);
	login_as(s, slot(0), CKU_USER, "");
	login_as(s, slot(0), CKU_USER, "0000");
	login(s, 0);
	login(s, 0);
	login_as(s, 99, CKU_USER, stubd_pins[0]);
}

static void
seed_tickets(struct seed *s)
{
	hello(s);
	login(s, 0);
	connect_uid(s, RPC_UID);
	hello(s);
	ticket_login(s, 0, "", 0);
	find(s, slot(0), NULL, 0);
	connect_uid(s, RPC_UID + 1);
	hello(s);
	ticket_login(s, 0, "", 0);
	ticket_login(s, 0, stubd_pins[0], 0);
	connect_uid(s, RPC_UID);
	hello(s);
	ticket_login(s, 0, "", 1);
	ticket_login(s, 1, "", 0);
}

static void
seed_sign(struct seed *s)
{
	hello(s);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV_OPEN);
	login(s, 0);
	answers(s, "\x20\x30\x40", 3);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_SHA256_RSA_PKCS, STUBD_RSA_PRIV_OPEN);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_ECDSA, STUBD_EC_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_CERT);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PUB);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_SHA256, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS_KEY_PAIR_GEN, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, 0x80001234, STUBD_RSA_PRIV);
}

static void
seed_params(struct seed *s)
{
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, "lbl", 3};
	CK_AES_CTR_PARAMS ctr = {128, {0}};
	uint8_t iv[16] = {1, 2, 3};
	CK_MECHANISM m_pss = {CKM_RSA_PKCS_PSS, &pss, sizeof(pss)};
	CK_MECHANISM m_pss256 = {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss)};
	CK_MECHANISM m_oaep = {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)};
	CK_MECHANISM m_cbc = {CKM_AES_CBC, iv, sizeof(iv)};
	CK_MECHANISM m_ctr = {CKM_AES_CTR, &ctr, sizeof(ctr)};

	hello(s);
	login(s, 0);
	op(s, P11MUX_CALL_SIGN, slot(0), &m_pss, handle(0, STUBD_RSA_PRIV), "hash");
	op(s, P11MUX_CALL_VERIFY, slot(0), &m_pss256, handle(0, STUBD_RSA_PUB), "data");
	op(s, P11MUX_CALL_ENCRYPT, slot(0), &m_oaep, handle(0, STUBD_RSA_PUB), "secret");
	op(s, P11MUX_CALL_DECRYPT, slot(0), &m_oaep, handle(0, STUBD_RSA_PRIV), "ciphertext");
	op(s, P11MUX_CALL_ENCRYPT, slot(0), &m_cbc, handle(0, STUBD_AES), "0123456789abcdef");
	op(s, P11MUX_CALL_DECRYPT, slot(0), &m_ctr, handle(0, STUBD_AES), "ciphertext");
}

static void
seed_public_ops(struct seed *s)
{
	hello(s);
	op_plain(s, P11MUX_CALL_VERIFY, 0, CKM_RSA_PKCS, STUBD_RSA_PUB);
	op_plain(s, P11MUX_CALL_ENCRYPT, 0, CKM_RSA_PKCS, STUBD_RSA_PUB);
	op_plain(s, P11MUX_CALL_DECRYPT, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_ENCRYPT, 0, CKM_AES_CBC, STUBD_AES);
	op_plain(s, P11MUX_CALL_DIGEST, 0, CKM_SHA256, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_DIGEST, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_VERIFY, 1, CKM_RSA_PKCS, STUBD_RSA_PUB);
}

static void
seed_member_failures(struct seed *s)
{
	hello(s);
	login(s, 0);
	/* Failover, then two members disagreeing, then a device error everywhere. */
	answers(s, "\x06\x00\x09\x00\x08\x08\x08\x0a\x0b\x0c\x0d\x0e", 12);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_DECRYPT, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_VERIFY, 0, CKM_RSA_PKCS, STUBD_RSA_PUB);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_ECDSA, STUBD_EC_PRIV);
}

static void
seed_poison(struct seed *s)
{
	hello(s);
	login(s, 0);
	/* Two helpers lost to one operation: quarantined, then refused at once. */
	answers(s, "\x07\x07", 2);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS, STUBD_RSA_PRIV);
	answers(s, "\x0f\x00\x00\x00\x32\x0f\x00\x00\x00\x30\x0f\x00\x00\x01\x23", 15);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS_PSS, STUBD_RSA_PRIV);
	op_plain(s, P11MUX_CALL_SIGN, 0, CKM_RSA_PKCS_PSS, STUBD_RSA_PRIV);
}

static void
seed_random(struct seed *s)
{
	hello(s);
	random_bytes(s, slot(0), 32);
	random_bytes(s, slot(0), 0);
	random_bytes(s, slot(0), 70000);
	random_bytes(s, slot(1), 16);
	answers(s, "\xf0\x06\x09\x09", 4);
	random_bytes(s, slot(0), 32);
	random_bytes(s, slot(0), 32);
}

static void
seed_no_slot(struct seed *s)
{
	CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};

	hello(s);
	on_slot(s, P11MUX_CALL_LOGOUT, 3);
	find(s, 3, NULL, 0);
	get_object(s, 3, 1);
	op(s, P11MUX_CALL_SIGN, 3, &mech, 1, "x");
	random_bytes(s, 3, 1);
}

/* A built request (rpc_build.c): the call's code less one, then the choices. */
static void
built(struct seed *s, uint32_t call, const char *choices, size_t n)
{
	uint8_t b[64];

	b[0] = (uint8_t)(call - 1);
	memcpy(b + 1, choices, n);
	rec(s, RPC_REC_BUILT, b, 1 + n);
}

static void
seed_built(struct seed *s)
{
	built(s, P11MUX_CALL_HELLO, "", 0);
	built(s, P11MUX_CALL_FIND, "\x00\x02\x00\x01", 4);  /* class, private of object 0 */
	built(s, P11MUX_CALL_LOGIN, "\x00\x00\x00\x00", 4); /* pool 0, user, its PIN */
	built(s, P11MUX_CALL_FIND, "\x00\x01\x00", 3);
	built(s, P11MUX_CALL_FIND_VERSIONED, "\x00\x01\x00", 3);
	built(s, P11MUX_CALL_SIGN,
	      "\x00\x00\x00"
	      "data",
	      7); /* RSA_PKCS, the RSA key */
	built(s, P11MUX_CALL_DECRYPT,
	      "\x00\x04\x00"
	      "data",
	      7); /* OAEP */
	built(s, P11MUX_CALL_VERIFY,
	      "\x00\x01\x01\x04"
	      "datasig",
	      10);
	built(s, P11MUX_CALL_ENCRYPT,
	      "\x00\x07\x04"
	      "data",
	      7); /* AES-CBC, the AES key */
	built(s, P11MUX_CALL_DIGEST,
	      "\x00\x06"
	      "data",
	      6);
	built(s, P11MUX_CALL_RANDOM, "\x00\x02", 2);
	built(s, P11MUX_CALL_GET_OBJECT, "\x04\x80", 2); /* pool 1, pool 0's key */
	built(s, P11MUX_CALL_LOGOUT, "\x00", 1);
	built(s, P11MUX_CALL_GET_SLOTS, "", 0);
	connect_uid(s, RPC_UID);
	built(s, P11MUX_CALL_HELLO, "", 0);
	built(s, P11MUX_CALL_LOGIN, "\x00\x00\x01\x01", 4); /* no PIN, the last ticket */
	built(s, P11MUX_CALL_GET_OBJECT, "\x00\x06", 2);    /* the private data object */
}

/* --- session objects (built requests: see rpc_build.c for the choice bytes) --- */

/* B(s, CALL, "choices"): a built request with a string literal's choices. */
#define B(s, call, lit) built(s, P11MUX_CALL_##call, lit, sizeof(lit) - 1)

/* Logged in: a secret key and a key pair made, used, found, read, destroyed; the quota; DROP of
 * a session, of all, of the private ones. Made objects' handles are chosen as 0xc0 + the order
 * the replies returned them in. */
static void
seed_objects(struct seed *s)
{
	B(s, HELLO, "");
	B(s, CLIENT, "\x00");
	B(s, LOGIN, "\x00\x00\x00\x00");
	B(s, CREATE, "\x00\x00\x01");                /* session 1: AES key (0xc0) */
	B(s, GENERATE_PAIR, "\x00\x00\x00\x00\x00"); /* session 1: RSA pair (0xc1, 0xc2) */
	B(s, SIGN,
	  "\x00\x00\xc2"
	  "data");
	B(s, VERIFY,
	  "\x00\x00\xc1\x04"
	  "datasig");
	B(s, ENCRYPT,
	  "\x00\x07\xc0"
	  "0123456789abcdef");
	B(s, DECRYPT,
	  "\x00\x08\xc0"
	  "0123456789abcdef");
	B(s, ENCRYPT,
	  "\x00\x00\xc1"
	  "secret");
	B(s, SIGN,
	  "\x00\x00\xc0"
	  "data"); /* a secret key that may not sign */
	B(s, FIND, "\x00\x00");
	B(s, FIND, "\x00\x01\x00"); /* by class: the pool's and the session's */
	B(s, GET_OBJECT, "\x00\xc1");
	B(s, DESTROY, "\x00\xc1");
	B(s, GET_OBJECT, "\x00\xc1");
	B(s, DESTROY, "\x00\xc1");
	B(s, VERIFY,
	  "\x00\x00\xc1\x04"
	  "datasig");
	B(s, CREATE, "\x00\x01\x00");       /* session 2: a data object (0xc3) */
	B(s, GENERATE, "\x00\x01\x00\x00"); /* session 2: AES (0xc4): 4 objects */
	B(s, GENERATE, "\x00\x01\x00\x01"); /* past the quota */
	B(s, CREATE, "\x04\x01\x00");       /* the other pool: past the quota too */
	B(s, DROP, "\x00\x00");             /* session 1: 0xc0 and 0xc2 */
	B(s, GET_OBJECT, "\x00\xc2");
	B(s, GENERATE_PAIR, "\x00\x02\x01\x01\x01"); /* session 3: EC pair (0xc5, 0xc6) */
	B(s, SIGN,
	  "\x00\x05\xc6"
	  "hash");
	B(s, DROP, "\x00\x04"); /* the private ones */
	B(s, DROP, "\x00\x03"); /* all */
	B(s, FIND, "\x00\x00");
	B(s, DROP, "\x04\x03");
}

/* Logged out: private objects refused (said, or the device's default), public ones made and
 * used, token objects refused; then logged in, and out again. */
static void
seed_objects_logged_out(struct seed *s)
{
	B(s, HELLO, "");
	B(s, CLIENT, "\x01");
	B(s, CREATE, "\x00\x00\x20"); /* CKA_PRIVATE true: refused */
	B(s, CREATE, "\x00\x00\x10"); /* false: made (0xc0) */
	answers(s, "\x00", 1);        /* the device makes it private */
	B(s, CREATE, "\x00\x00\x00"); /* made, found private, destroyed */
	B(s, CREATE, "\x00\x00\x08"); /* CKA_TOKEN true */
	B(s, CREATE, "\x00\x00\x18"); /* CKA_TOKEN true, CKA_PRIVATE false */
	B(s, CREATE, "\x00\x00\x30"); /* false, then true */
	answers(s, "\x30\x30", 2);
	B(s, GENERATE_PAIR, "\x00\x00\x00\x10\x10"); /* a public pair (0xc1, 0xc2) */
	B(s, SIGN,
	  "\x00\x00\xc2"
	  "data");
	B(s, GENERATE, "\x00\x00\x00\x11");
	B(s, GENERATE, "\x00\x00\x00\x28"); /* CKA_TOKEN true on a key */
	B(s, LOGIN, "\x00\x00\x00\x00");
	B(s, CREATE, "\x00\x01\x21"); /* a private AES key (0xc4) */
	B(s, ENCRYPT,
	  "\x00\x07\xc4"
	  "0123456789abcdef");
	B(s, LOGOUT, "\x00");
	B(s, ENCRYPT,
	  "\x00\x07\xc4"
	  "0123456789abcdef");
	B(s, GET_OBJECT, "\x00\xc4");
	B(s, DROP, "\x00\x04");
	B(s, FIND, "\x00\x00");
}

/* What a daemon refuses: a CREATE before CLIENT, a second CLIENT, templates a device must not
 * get, mechanisms that cannot generate, DESTROY of a token object, of a made-up handle. */
static void
seed_objects_refused(struct seed *s)
{
	B(s, HELLO, "");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CLIENT, "\x03\x12\x34\x56\x78\x9a\xbc\xde\xf0");
	B(s, CLIENT, "\x02");
	B(s, LOGIN, "\x00\x00\x00\x00");
	B(s, CREATE, "\x00\x00\x41"); /* an attribute twice */
	B(s, CREATE, "\x00\x00\x81\x00");
	B(s, CREATE, "\x00\x00\x81\x01");
	B(s, CREATE, "\x00\x00\x81\x02");
	B(s, CREATE, "\x00\x00\x81\x03");
	B(s, CREATE, "\x00\x00\x81\x04");
	B(s, CREATE, "\x00\x00\x81\x05");
	B(s, CREATE, "\x00\x00\x06"); /* an empty template */
	B(s, GENERATE, "\x00\x00\x03\x00");
	B(s, GENERATE, "\x00\x00\x04\x00");
	B(s, GENERATE, "\x00\x00\x05\x00");
	B(s, GENERATE, "\x00\x00\x01\x00");
	B(s, GENERATE_PAIR, "\x00\x00\x05\x00\x00");
	B(s, GENERATE_PAIR, "\x00\x00\x00\x80\x02\x00");
	B(s, GENERATE_PAIR, "\x00\x00\x00\x00\x08");
	B(s, DESTROY, "\x00\x00");
	B(s, DESTROY, "\x00\x02");
	B(s, DESTROY, "\x00\x06");
	B(s, DESTROY, "\x00\xc5");
	B(s, DESTROY, "\x03\xc5");
	B(s, DROP, "\x03\x00");
	B(s, GENERATE, "\x07\x00\x00\x00");
}

/* Members failing under session objects: a make tried on another member, one that cost a
 * helper (its user struck), a member lost under its objects (DEVICE_REMOVED, then gone). */
static void
seed_objects_failures(struct seed *s)
{
	B(s, HELLO, "");
	B(s, CLIENT, "\x00");
	B(s, LOGIN, "\x00\x00\x00\x00");
	answers(s, "\x06\x00\x0a", 3);
	B(s, CREATE, "\x00\x00\x01");       /* the second member makes it (0xc0) */
	B(s, GENERATE, "\x00\x00\x00\x00"); /* a device error */
	answers(s, "\x30\x0f\x00\x00\x00\x60\x06", 7);
	B(s, GENERATE, "\x00\x00\x00\x00"); /* 0xc1 */
	B(s, ENCRYPT,
	  "\x00\x07\xc0"
	  "0123456789abcdef"); /* CKR_KEY_HANDLE_INVALID from the device */
	B(s, ENCRYPT,
	  "\x00\x07\xc1"
	  "0123456789abcdef"); /* its member lost: CKR_DEVICE_REMOVED */
	B(s, ENCRYPT,
	  "\x00\x07\xc1"
	  "0123456789abcdef");
	B(s, DESTROY, "\x00\xc1");
	B(s, GET_OBJECT, "\x00\xc0");
	answers(s, "\x07", 1);
	B(s, GENERATE_PAIR, "\x00\x00\x00\x00\x00"); /* cost a helper: struck */
	B(s, CREATE, "\x00\x00\x01");
	B(s, DROP, "\x00\x03");
}

/* Applications: objects outlive a connection and are found by the next one of the same
 * application, not by another application nor another user; the per-user quota. */
static void
seed_objects_apps(struct seed *s)
{
	B(s, HELLO, "");
	B(s, CLIENT, "\x00");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CREATE, "\x00\x00\x12");
	connect_uid(s, RPC_UID);
	B(s, HELLO, "");
	B(s, CLIENT, "\x00");
	B(s, GET_OBJECT, "\x00\xc0");
	B(s, DESTROY, "\x00\xc1");
	connect_uid(s, RPC_UID);
	B(s, HELLO, "");
	B(s, CLIENT, "\x01");
	B(s, GET_OBJECT, "\x00\xc0");
	B(s, DESTROY, "\x00\xc0");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CREATE, "\x00\x00\x10");
	B(s, CREATE, "\x00\x00\x10"); /* the user's sixth */
	B(s, FIND, "\x00\x00");
	B(s, DROP, "\x00\x03");
	connect_uid(s, RPC_UID + 1);
	B(s, HELLO, "");
	B(s, CLIENT, "\x00");
	B(s, GET_OBJECT, "\x00\xc0");
	B(s, DROP, "\x00\x03");
	B(s, CREATE, "\x04\x02\x10");
}

/* The same calls as frames (raw records): what the codec must refuse is for the fuzzer to
 * make of them. */
static void
seed_objects_frames(struct seed *s)
{
	static CK_OBJECT_CLASS data = CKO_DATA;
	static CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE t[3] = {{CKA_CLASS, &data, sizeof(data)},
	                     {CKA_PRIVATE, &no, sizeof(no)},
	                     {CKA_VALUE, "value", 5}};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	struct p11mux_msg *m;

	hello(s);
	m = begin(P11MUX_CALL_CLIENT);
	p11mux_msg_put_ulong(m, 77);
	frame(s, m);
	m = begin(P11MUX_CALL_CREATE);
	p11mux_msg_put_ulong(m, slot(0));
	p11mux_msg_put_ulong(m, 5);
	p11mux_msg_put_attrs(m, t, NULL, 3);
	frame(s, m);
	m = begin(P11MUX_CALL_GENERATE);
	p11mux_msg_put_ulong(m, slot(0));
	p11mux_msg_put_ulong(m, 5);
	p11mux_msg_put_mech(m, &gen);
	p11mux_msg_put_attrs(m, t + 1, NULL, 1);
	frame(s, m);
	m = begin(P11MUX_CALL_DESTROY);
	p11mux_msg_put_ulong(m, slot(0));
	p11mux_msg_put_ulong(m, P11MUX_SESSION_OBJECT | 1);
	frame(s, m);
	m = begin(P11MUX_CALL_DROP);
	p11mux_msg_put_ulong(m, slot(0));
	p11mux_msg_put_ulong(m, 5);
	frame(s, m);
	m = begin(P11MUX_CALL_DROP);
	p11mux_msg_put_ulong(m, slot(0));
	p11mux_msg_put_ulong(m, P11MUX_DROP_PRIVATE);
	frame(s, m);
}

#undef B

static const struct {
	const char *name;
	void (*build)(struct seed *s);
} seeds[] = {
        {"handshake", seed_handshake},
        {"bad-handshakes", seed_bad_handshakes},
        {"browse-logged-out", seed_browse_logged_out},
        {"browse-logged-in", seed_browse_logged_in},
        {"other-pool", seed_other_pool},
        {"find-templates", seed_find_templates},
        {"pin-guess", seed_pin_guess},
        {"login-odd", seed_login_odd},
        {"tickets", seed_tickets},
        {"sign", seed_sign},
        {"params", seed_params},
        {"public-ops", seed_public_ops},
        {"member-failures", seed_member_failures},
        {"poison", seed_poison},
        {"random", seed_random},
        {"no-slot", seed_no_slot},
        {"built", seed_built},
        {"objects", seed_objects},
        {"objects-logged-out", seed_objects_logged_out},
        {"objects-refused", seed_objects_refused},
        {"objects-failures", seed_objects_failures},
        {"objects-apps", seed_objects_apps},
        {"objects-frames", seed_objects_frames},
};

static void
setup(struct stubd *s)
{
	sd = s;
	if (rb == NULL && (rb = p11mux_buf_new(P11MUX_FRAME_MAX)) == NULL)
		abort();
}

int
rpc_write_seeds(struct stubd *s, const char *dir)
{
	static struct seed sb;
	char path[4096];
	size_t i;
	FILE *f;

	setup(s);
	for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		sb.n = 0;
		seeds[i].build(&sb);
		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		if ((f = fopen(path, "we")) == NULL || fwrite(sb.b, 1, sb.n, f) != sb.n ||
		    fclose(f) != 0) {
			fprintf(stderr, "fuzz_rpc: %s: %s\n", path, strerror(errno));
			return -1;
		}
	}
	printf("fuzz_rpc: wrote %zu seeds to %s\n", i, dir);
	return 0;
}

/* --- the dictionary --- */

static void
dict_entry(FILE *f, const char *name, const uint8_t *p, size_t n)
{
	size_t i;

	fprintf(f, "%s=\"", name);
	for (i = 0; i < n; i++)
		fprintf(f, "\\x%02x", p[i]);
	fprintf(f, "\"\n");
}

/* A u64 as the codec writes it: big-endian. */
static void
dict_u64(FILE *f, const char *name, uint64_t v)
{
	uint8_t b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	dict_entry(f, name, b, 8);
}

static void
dict_u32(FILE *f, const char *name, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	dict_entry(f, name, b, 4);
}

int
rpc_write_dict(struct stubd *s, const char *path)
{
	static const CK_ULONG mechs[] = {CKM_RSA_PKCS,
	                                 CKM_RSA_PKCS_PSS,
	                                 CKM_SHA256_RSA_PKCS_PSS,
	                                 CKM_RSA_PKCS_OAEP,
	                                 CKM_ECDSA,
	                                 CKM_SHA256,
	                                 CKM_AES_CBC,
	                                 CKM_AES_CTR,
	                                 CKM_AES_KEY_GEN,
	                                 CKM_RSA_PKCS_KEY_PAIR_GEN,
	                                 CKM_EC_KEY_PAIR_GEN};
	static const CK_ULONG attrs[] = {CKA_CLASS, CKA_PRIVATE, CKA_LABEL,     CKA_ID,
	                                 CKA_SIGN,  CKA_TOKEN,   CKA_VALUE_LEN, CKA_MODULUS_BITS};
	static const uint8_t tags[] = {RPC_REC_FRAME,
	                               RPC_REC_ANSWERS,
	                               RPC_REC_CONNECT,
	                               RPC_REC_TICKET,
	                               RPC_REC_TICKET | RPC_REC_FLIP,
	                               RPC_REC_BUILT};
	char name[64];
	size_t i, k;
	int w;
	FILE *f;

	setup(s);
	if ((f = fopen(path, "we")) == NULL) {
		fprintf(stderr, "fuzz_rpc: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(f, "# fuzz_rpc's dictionary: written by rpc_seeds.c (see there), do not edit.\n");
	for (i = 1; i < P11MUX_CALL_COUNT; i++)
		dict_u32(f, p11mux_calls[i].name, (uint32_t)i);
	dict_u64(f, "magic", P11MUX_PROTO_MAGIC);
	dict_u64(f, "version", P11MUX_PROTO_VERSION);
	for (k = 0; k < STUBD_NPOOLS; k++) {
		snprintf(name, sizeof(name), "slot_%zu", k);
		dict_u64(f, name, slot(k));
		snprintf(name, sizeof(name), "pin_%zu", k);
		dict_entry(f, name, (const uint8_t *)stubd_pins[k], strlen(stubd_pins[k]));
		for (w = 0; w < STUBD_NOBJECTS; w++) {
			snprintf(name, sizeof(name), "handle_%zu_%d", k, w);
			dict_u64(f, name, handle(k, (enum stubd_object)w));
		}
	}
	for (i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
		snprintf(name, sizeof(name), "mech_%lx", mechs[i]);
		dict_u64(f, name, mechs[i]);
	}
	for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		snprintf(name, sizeof(name), "attr_%lx", attrs[i]);
		dict_u64(f, name, attrs[i]);
	}
	dict_u64(f, "private_key", CKO_PRIVATE_KEY);
	dict_u64(f, "session_object", P11MUX_SESSION_OBJECT | 1);
	dict_u64(f, "drop_private", P11MUX_DROP_PRIVATE);
	dict_entry(f, "true", (const uint8_t *)"\x01", 1);
	/* Record starts (fuzz_rpc.h): the delimiter and each kind's tag. */
	for (i = 0; i < sizeof(tags); i++) {
		uint8_t b[RPC_DELIM_LEN + 1];

		memcpy(b, RPC_DELIM, RPC_DELIM_LEN);
		b[RPC_DELIM_LEN] = tags[i];
		snprintf(name, sizeof(name), "record_%u", tags[i]);
		dict_entry(f, name, b, sizeof(b));
	}
	fclose(f);
	printf("fuzz_rpc: wrote the dictionary %s\n", path);
	return 0;
}
