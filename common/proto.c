#include "proto.h"
#include "err.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

const struct p11mux_call_desc p11mux_calls[P11MUX_CALL_COUNT] = {
        [P11MUX_CALL_HELLO] = {P11MUX_CALL_HELLO, "HELLO", "uuu", "uy",
                               "magic, lowest and highest version -> chosen version, daemon name"},
        [P11MUX_CALL_GET_SLOTS] = {P11MUX_CALL_GET_SLOTS, "GET_SLOTS", "", "P",
                                   "-> every pool slot with slot, token and mechanism info"},
        [P11MUX_CALL_LOGIN] = {P11MUX_CALL_LOGIN, "LOGIN", "uuyy", "y",
                               "slot, user type, PIN, ticket -> logs this connection in to the "
                               "slot; a ticket"},
        [P11MUX_CALL_LOGOUT] = {P11MUX_CALL_LOGOUT, "LOGOUT", "u", "",
                                "slot -> logs this connection out of the slot"},
        [P11MUX_CALL_FIND] = {P11MUX_CALL_FIND, "FIND", "uA", "U",
                              "slot, template -> handles of every matching object"},
        [P11MUX_CALL_GET_OBJECT] = {P11MUX_CALL_GET_OBJECT, "GET_OBJECT", "uu", "A",
                                    "slot, object -> every attribute the pool knows, with status"},
        [P11MUX_CALL_SIGN] = {P11MUX_CALL_SIGN, "SIGN", "uMuy", "y",
                              "slot, mechanism, key, data -> signature"},
        [P11MUX_CALL_VERIFY] = {P11MUX_CALL_VERIFY, "VERIFY", "uMuyy", "",
                                "slot, mechanism, key, data, signature -> CKR_OK or why not"},
        [P11MUX_CALL_ENCRYPT] = {P11MUX_CALL_ENCRYPT, "ENCRYPT", "uMuy", "y",
                                 "slot, mechanism, key, plaintext -> ciphertext"},
        [P11MUX_CALL_DECRYPT] = {P11MUX_CALL_DECRYPT, "DECRYPT", "uMuy", "y",
                                 "slot, mechanism, key, ciphertext -> plaintext"},
        [P11MUX_CALL_DIGEST] = {P11MUX_CALL_DIGEST, "DIGEST", "uMy", "y",
                                "slot, mechanism, data -> digest"},
        [P11MUX_CALL_RANDOM] = {P11MUX_CALL_RANDOM, "RANDOM", "uu", "y",
                                "slot, length -> random bytes"},
        [P11MUX_CALL_CLIENT] = {P11MUX_CALL_CLIENT, "CLIENT", "u", "u",
                                "application id -> this connection serves that application's "
                                "session objects; the daemon's instance"},
        [P11MUX_CALL_CREATE] = {P11MUX_CALL_CREATE, "CREATE", "uuA", "uA",
                                "slot, session, template -> a session object: handle, "
                                "attributes"},
        [P11MUX_CALL_GENERATE] = {P11MUX_CALL_GENERATE, "GENERATE", "uuMA", "uA",
                                  "slot, session, mechanism, template -> a session key: "
                                  "handle, attributes"},
        [P11MUX_CALL_GENERATE_PAIR] = {P11MUX_CALL_GENERATE_PAIR, "GENERATE_PAIR", "uuMAA", "uAuA",
                                       "slot, session, mechanism, public and private "
                                       "templates -> a session key pair: handles, attributes"},
        [P11MUX_CALL_DESTROY] = {P11MUX_CALL_DESTROY, "DESTROY", "uu", "",
                                 "slot, session object -> destroyed"},
        [P11MUX_CALL_DROP] = {P11MUX_CALL_DROP, "DROP", "uu", "",
                              "slot, session (0: all; all ones: the private ones) -> the "
                              "application's session objects of that session destroyed"},
        [P11MUX_CALL_FIND_VERSIONED] = {P11MUX_CALL_FIND_VERSIONED, "FIND_VERSIONED", "uA", "Uu",
                                        "slot, template -> handles of every matching object, "
                                        "the version of the pool's view"},
};

const struct p11mux_proto p11mux_client_proto = {"client", p11mux_calls, P11MUX_CALL_COUNT, 0};

const struct p11mux_call_desc *
p11mux_proto_call(const struct p11mux_proto *p, uint32_t code)
{
	if (code == 0 || code >= p->ncalls)
		return NULL;
	return &p->calls[code];
}

const struct p11mux_call_desc *
p11mux_call_find(uint32_t code)
{
	return p11mux_proto_call(&p11mux_client_proto, code);
}

/* Arena: allocations that live as long as the decoded message. */
struct p11mux_alloc {
	struct p11mux_alloc *next;
	alignas(max_align_t) unsigned char data[];
};

static void *
arena_alloc(struct p11mux_msg *m, size_t nmemb, size_t size)
{
	struct p11mux_alloc *a;

	if (size != 0 && nmemb > (SIZE_MAX - sizeof(*a)) / size)
		return NULL;
	if ((a = calloc(1, sizeof(*a) + nmemb * size)) == NULL)
		return NULL;
	a->next = m->arena;
	m->arena = a;
	return a->data;
}

void
p11mux_msg_clear(struct p11mux_msg *m)
{
	struct p11mux_alloc *a, *next;

	for (a = m->arena; a != NULL; a = next) {
		next = a->next;
		free(a);
	}
	m->arena = NULL;
	m->sig = NULL;
	m->call = NULL;
	m->proto = NULL;
	m->tag = 0;
	m->reading = 0;
	m->err = 0;
}

/* Records the first error of the message; returns r. */
static int
sticky(struct p11mux_msg *m, int r)
{
	if (r != 0 && m->err == 0)
		m->err = r;
	return r;
}

int
p11mux_msg_error(const struct p11mux_msg *m)
{
	return m->err != 0 ? m->err : (m->buf != NULL ? p11mux_buf_error(m->buf) : 0);
}

/* Consumes the next signature letter, which must be want. */
static int
expect(struct p11mux_msg *m, char want)
{
	if (m->sig == NULL || *m->sig != want)
		return P11MUX_ERR_INVALID;
	m->sig++;
	return 0;
}

int
p11mux_msg_request(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p,
                   uint32_t call, uint64_t tag)
{
	const struct p11mux_call_desc *d;
	int r;

	p11mux_msg_clear(m);
	m->buf = buf;
	m->proto = p;
	if ((d = p11mux_proto_call(p, call)) == NULL)
		return sticky(m, P11MUX_ERR_INVALID);
	m->call = d;
	m->sig = d->request;
	m->tag = tag;
	p11mux_buf_reset(buf);
	if ((r = p11mux_buf_put_u32(buf, call)) != 0 ||
	    (p->tagged && (r = p11mux_buf_put_u64(buf, tag)) != 0))
		return sticky(m, r);
	return 0;
}

int
p11mux_msg_reply(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p,
                 uint32_t call, uint64_t tag, CK_RV rv)
{
	const struct p11mux_call_desc *d;
	int r;

	p11mux_msg_clear(m);
	m->buf = buf;
	m->proto = p;
	if ((d = p11mux_proto_call(p, call)) == NULL)
		return sticky(m, P11MUX_ERR_INVALID);
	m->call = d;
	m->sig = rv == CKR_OK ? d->reply : "";
	m->tag = tag;
	p11mux_buf_reset(buf);
	if ((r = p11mux_buf_put_u32(buf, call)) != 0 ||
	    (p->tagged && (r = p11mux_buf_put_u64(buf, tag)) != 0) ||
	    (r = p11mux_buf_put_u64(buf, rv)) != 0)
		return sticky(m, r);
	return 0;
}

/* Reads the call code (and tag) that begin a received message. */
static int
read_header(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p)
{
	uint32_t call;
	int r;

	p11mux_msg_clear(m);
	m->buf = buf;
	m->proto = p;
	m->reading = 1;
	if ((r = p11mux_buf_get_u32(buf, &call)) != 0 ||
	    (p->tagged && (r = p11mux_buf_get_u64(buf, &m->tag)) != 0))
		return sticky(m, r);
	if ((m->call = p11mux_proto_call(p, call)) == NULL)
		return sticky(m, P11MUX_ERR_INVALID);
	return 0;
}

int
p11mux_msg_read(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p)
{
	int r;

	if ((r = read_header(m, buf, p)) != 0)
		return r;
	m->sig = m->call->request;
	return 0;
}

int
p11mux_msg_read_any_reply(struct p11mux_msg *m, struct p11mux_buf *buf,
                          const struct p11mux_proto *p, CK_RV *rv)
{
	uint64_t v;
	int r;

	if ((r = read_header(m, buf, p)) != 0)
		return r;
	if ((r = p11mux_buf_get_u64(buf, &v)) != 0)
		return sticky(m, r);
	m->sig = v == CKR_OK ? m->call->reply : "";
	*rv = (CK_RV)v;
	return 0;
}

int
p11mux_msg_begin_request(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call)
{
	return p11mux_msg_request(m, buf, &p11mux_client_proto, call, 0);
}

int
p11mux_msg_begin_reply(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call, CK_RV rv)
{
	return p11mux_msg_reply(m, buf, &p11mux_client_proto, call, 0, rv);
}

int
p11mux_msg_read_request(struct p11mux_msg *m, struct p11mux_buf *buf)
{
	return p11mux_msg_read(m, buf, &p11mux_client_proto);
}

int
p11mux_msg_read_reply(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call, CK_RV *rv)
{
	CK_RV got;
	int r;

	if ((r = p11mux_msg_read_any_reply(m, buf, &p11mux_client_proto, &got)) != 0)
		return r;
	if (m->call->code != call)
		return sticky(m, P11MUX_ERR_INVALID);
	*rv = got;
	return 0;
}

int
p11mux_msg_end(struct p11mux_msg *m)
{
	int r;

	if ((r = p11mux_msg_error(m)) != 0)
		return r;
	if (m->sig == NULL || *m->sig != '\0')
		return sticky(m, P11MUX_ERR_INVALID);
	/* A decoded message must have been consumed exactly. */
	if (m->reading && p11mux_buf_remaining(m->buf) != 0)
		return sticky(m, P11MUX_ERR_INVALID);
	return 0;
}

/* --- putters --- */

static int
msg_put_ulong(struct p11mux_msg *m, CK_ULONG v)
{
	int r;

	if ((r = expect(m, 'u')) != 0)
		return r;
	return p11mux_buf_put_u64(m->buf, v);
}

static int
msg_put_bytes(struct p11mux_msg *m, const void *p, size_t len)
{
	int r;

	if ((r = expect(m, 'y')) != 0)
		return r;
	return p11mux_buf_put_bytes(m->buf, p, len);
}

static int
msg_put_ulongs(struct p11mux_msg *m, const CK_ULONG *v, size_t n)
{
	size_t i;
	int r;

	if ((r = expect(m, 'U')) != 0)
		return r;
	if (n > UINT32_MAX)
		return P11MUX_ERR_TOO_BIG;
	if ((r = p11mux_buf_put_u32(m->buf, (uint32_t)n)) != 0)
		return r;
	for (i = 0; i < n; i++)
		if ((r = p11mux_buf_put_u64(m->buf, v[i])) != 0)
			return r;
	return 0;
}

/* Attribute value encodings: absent, raw bytes, or a CK_ULONG as u64. */
#define ATTR_NONE  0
#define ATTR_BYTES 1
#define ATTR_ULONG 2

int
p11mux_attr_is_ulong(CK_ATTRIBUTE_TYPE type)
{
	switch (type) {
	case CKA_CLASS:
	case CKA_CERTIFICATE_TYPE:
	case CKA_CERTIFICATE_CATEGORY:
	case CKA_JAVA_MIDP_SECURITY_DOMAIN:
	case CKA_KEY_TYPE:
	case CKA_MODULUS_BITS:
	case CKA_PRIME_BITS:
	case CKA_SUB_PRIME_BITS:
	case CKA_VALUE_BITS:
	case CKA_VALUE_LEN:
	case CKA_KEY_GEN_MECHANISM:
	case CKA_HW_FEATURE_TYPE:
	case CKA_MECHANISM_TYPE:
	case CKA_NAME_HASH_ALGORITHM:
		return 1;
	default:
		return 0;
	}
}

static int
msg_put_attrs(struct p11mux_msg *m, const CK_ATTRIBUTE *a, const CK_RV *status, size_t n)
{
	CK_ULONG ul;
	size_t i;
	int r;

	if ((r = expect(m, 'A')) != 0)
		return r;
	if (n > UINT32_MAX)
		return P11MUX_ERR_TOO_BIG;
	if ((r = p11mux_buf_put_u32(m->buf, (uint32_t)n)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		CK_RV st = status != NULL ? status[i] : CKR_OK;

		if ((r = p11mux_buf_put_u64(m->buf, a[i].type)) != 0 ||
		    (r = p11mux_buf_put_u64(m->buf, st)) != 0)
			return r;
		if (st != CKR_OK || a[i].pValue == NULL) {
			r = p11mux_buf_put_u8(m->buf, ATTR_NONE);
		} else if (p11mux_attr_is_ulong(a[i].type) && a[i].ulValueLen == sizeof(CK_ULONG)) {
			memcpy(&ul, a[i].pValue, sizeof(ul));
			if ((r = p11mux_buf_put_u8(m->buf, ATTR_ULONG)) == 0)
				r = p11mux_buf_put_u64(m->buf, ul);
		} else {
			if ((r = p11mux_buf_put_u8(m->buf, ATTR_BYTES)) == 0)
				r = p11mux_buf_put_bytes(m->buf, a[i].pValue, a[i].ulValueLen);
		}
		if (r != 0)
			return r;
	}
	return 0;
}

/* Parameter encodings of a mechanism. */
#define MECH_PARAM_NONE 0
#define MECH_PARAM_RAW  1 /* pointer-free parameter, sent as its bytes */
#define MECH_PARAM_PSS  2
#define MECH_PARAM_OAEP 3

static int
mech_is_pss(CK_MECHANISM_TYPE t)
{
	switch (t) {
	case CKM_RSA_PKCS_PSS:
	case CKM_SHA1_RSA_PKCS_PSS:
	case CKM_SHA224_RSA_PKCS_PSS:
	case CKM_SHA256_RSA_PKCS_PSS:
	case CKM_SHA384_RSA_PKCS_PSS:
	case CKM_SHA512_RSA_PKCS_PSS:
		return 1;
	default:
		return 0;
	}
}

/* The length of the parameter of a mechanism whose parameter is a plain byte array or a
 * struct without pointers (an IV, CK_AES_CTR_PARAMS); 0 for other mechanisms. A module reads
 * as many bytes as the mechanism says, whatever ulParameterLen claims: any other length is
 * refused before it reaches one. */
static size_t
mech_raw_len(CK_MECHANISM_TYPE t)
{
	switch (t) {
	case CKM_AES_CBC:
	case CKM_AES_CBC_PAD:
		return 16;
	case CKM_AES_CTR:
		return sizeof(CK_AES_CTR_PARAMS);
	case CKM_DES3_CBC:
	case CKM_DES3_CBC_PAD:
	case CKM_DES_CBC:
	case CKM_DES_CBC_PAD:
		return 8;
	default:
		return 0;
	}
}

static int
mech_param_is_raw(CK_MECHANISM_TYPE t)
{
	return mech_raw_len(t) > 0;
}

static int
mech_param_kind(const CK_MECHANISM *mech)
{
	if (mech->pParameter == NULL || mech->ulParameterLen == 0)
		return mech->ulParameterLen == 0 ? MECH_PARAM_NONE : -1;
	if (mech_is_pss(mech->mechanism))
		return mech->ulParameterLen == sizeof(CK_RSA_PKCS_PSS_PARAMS) ? MECH_PARAM_PSS : -1;
	if (mech->mechanism == CKM_RSA_PKCS_OAEP)
		return mech->ulParameterLen == sizeof(CK_RSA_PKCS_OAEP_PARAMS) ? MECH_PARAM_OAEP
		                                                               : -1;
	if (mech_param_is_raw(mech->mechanism))
		return mech->ulParameterLen == mech_raw_len(mech->mechanism) ? MECH_PARAM_RAW : -1;
	return -1;
}

CK_RV
p11mux_mech_param_ok(const CK_MECHANISM *mech)
{
	if (mech_param_kind(mech) < 0)
		return CKR_MECHANISM_PARAM_INVALID;
	/* The hash-and-sign PSS mechanisms have no default parameter (OpenSC refuses them
	 * without one too; CKM_RSA_PKCS_PSS alone has MGF1-SHA-1 as its default there). The
	 * codec carries them without one: this is the application's check. */
	if (mech_is_pss(mech->mechanism) && mech->mechanism != CKM_RSA_PKCS_PSS &&
	    mech->pParameter == NULL)
		return CKR_MECHANISM_PARAM_INVALID;
	return CKR_OK;
}

/* The key types a mechanism family works with, by mechanism code range. */
static const struct {
	CK_MECHANISM_TYPE lo, hi;
	CK_KEY_TYPE kt, kt2;
} mech_keys[] = {
        {0x0000, 0x000f, CKK_RSA, CKK_RSA},   /* CKM_RSA_PKCS ... CKM_SHA1_RSA_PKCS_PSS */
        {0x0040, 0x0047, CKK_RSA, CKK_RSA},   /* CKM_SHA256_RSA_PKCS ... */
        {0x0060, 0x0067, CKK_RSA, CKK_RSA},   /* CKM_SHA3_*_RSA_PKCS(_PSS) */
        {0x0120, 0x012f, CKK_DES, CKK_DES},   /* CKM_DES_* */
        {0x0130, 0x013f, CKK_DES3, CKK_DES2}, /* CKM_DES3_* */
        {0x1040, 0x104f, CKK_EC, CKK_EC},     /* CKM_ECDSA, CKM_ECDSA_SHA* */
        {0x1057, 0x1057, CKK_EC_EDWARDS, CKK_EC_EDWARDS}, /* CKM_EDDSA */
        {0x1080, 0x108f, CKK_AES, CKK_AES},               /* CKM_AES_* */
};

int
p11mux_mech_key_ok(CK_MECHANISM_TYPE mech, CK_KEY_TYPE kt)
{
	size_t i;

	for (i = 0; i < sizeof(mech_keys) / sizeof(mech_keys[0]); i++)
		if (mech >= mech_keys[i].lo && mech <= mech_keys[i].hi)
			return kt == mech_keys[i].kt || kt == mech_keys[i].kt2;
	return 1;
}

int
p11mux_mech_single_part(CK_MECHANISM_TYPE mech)
{
	switch (mech) {
	case CKM_RSA_PKCS:
	case CKM_RSA_9796:
	case CKM_RSA_X_509:
	case CKM_RSA_PKCS_OAEP:
	case CKM_RSA_PKCS_PSS:
	case CKM_ECDSA:
	case CKM_EDDSA:
		return 1;
	default:
		return 0;
	}
}

static int
msg_put_mech(struct p11mux_msg *m, const CK_MECHANISM *mech)
{
	const CK_RSA_PKCS_PSS_PARAMS *pss;
	const CK_RSA_PKCS_OAEP_PARAMS *oaep;
	struct p11mux_buf *b = m->buf;
	int kind, r;

	if ((r = expect(m, 'M')) != 0)
		return r;
	if ((kind = mech_param_kind(mech)) < 0)
		return P11MUX_ERR_INVALID;
	if ((r = p11mux_buf_put_u64(b, mech->mechanism)) != 0 ||
	    (r = p11mux_buf_put_u8(b, (uint8_t)kind)) != 0)
		return r;
	switch (kind) {
	case MECH_PARAM_RAW:
		return p11mux_buf_put_bytes(b, mech->pParameter, mech->ulParameterLen);
	case MECH_PARAM_PSS:
		pss = mech->pParameter;
		if ((r = p11mux_buf_put_u64(b, pss->hashAlg)) != 0 ||
		    (r = p11mux_buf_put_u64(b, pss->mgf)) != 0)
			return r;
		return p11mux_buf_put_u64(b, pss->sLen);
	case MECH_PARAM_OAEP:
		oaep = mech->pParameter;
		if ((r = p11mux_buf_put_u64(b, oaep->hashAlg)) != 0 ||
		    (r = p11mux_buf_put_u64(b, oaep->mgf)) != 0 ||
		    (r = p11mux_buf_put_u64(b, oaep->source)) != 0)
			return r;
		return p11mux_buf_put_bytes(b, oaep->pSourceData,
		                            oaep->pSourceData != NULL ? oaep->ulSourceDataLen : 0);
	default:
		return 0;
	}
}

/* Fixed-size byte fields of the info structures. */
static int
put_fixed(struct p11mux_buf *b, const void *p, size_t len)
{
	return p11mux_buf_put(b, p, len);
}

static int
put_version(struct p11mux_buf *b, CK_VERSION v)
{
	int r;

	if ((r = p11mux_buf_put_u8(b, v.major)) != 0)
		return r;
	return p11mux_buf_put_u8(b, v.minor);
}

static int
msg_put_slots(struct p11mux_msg *m, const struct p11mux_slot *s, size_t n)
{
	struct p11mux_buf *b = m->buf;
	size_t i, j;
	int r;

	if ((r = expect(m, 'P')) != 0)
		return r;
	if ((r = p11mux_buf_put_u32(b, (uint32_t)n)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		const CK_SLOT_INFO *si = &s[i].slot;
		const CK_TOKEN_INFO *ti = &s[i].token;

		p11mux_buf_put_u64(b, s[i].id);
		put_fixed(b, si->slotDescription, sizeof(si->slotDescription));
		put_fixed(b, si->manufacturerID, sizeof(si->manufacturerID));
		p11mux_buf_put_u64(b, si->flags);
		put_version(b, si->hardwareVersion);
		put_version(b, si->firmwareVersion);
		put_fixed(b, ti->label, sizeof(ti->label));
		put_fixed(b, ti->manufacturerID, sizeof(ti->manufacturerID));
		put_fixed(b, ti->model, sizeof(ti->model));
		put_fixed(b, ti->serialNumber, sizeof(ti->serialNumber));
		p11mux_buf_put_u64(b, ti->flags);
		p11mux_buf_put_u64(b, ti->ulMaxSessionCount);
		p11mux_buf_put_u64(b, ti->ulSessionCount);
		p11mux_buf_put_u64(b, ti->ulMaxRwSessionCount);
		p11mux_buf_put_u64(b, ti->ulRwSessionCount);
		p11mux_buf_put_u64(b, ti->ulMaxPinLen);
		p11mux_buf_put_u64(b, ti->ulMinPinLen);
		p11mux_buf_put_u64(b, ti->ulTotalPublicMemory);
		p11mux_buf_put_u64(b, ti->ulFreePublicMemory);
		p11mux_buf_put_u64(b, ti->ulTotalPrivateMemory);
		p11mux_buf_put_u64(b, ti->ulFreePrivateMemory);
		put_version(b, ti->hardwareVersion);
		put_version(b, ti->firmwareVersion);
		put_fixed(b, ti->utcTime, sizeof(ti->utcTime));
		p11mux_buf_put_u32(b, (uint32_t)s[i].nmechs);
		for (j = 0; j < s[i].nmechs; j++) {
			p11mux_buf_put_u64(b, s[i].mechs[j]);
			p11mux_buf_put_u64(b, s[i].infos[j].ulMinKeySize);
			p11mux_buf_put_u64(b, s[i].infos[j].ulMaxKeySize);
			p11mux_buf_put_u64(b, s[i].infos[j].flags);
		}
	}
	/* The buffer's error is sticky: one check covers every put above. */
	return p11mux_buf_error(b);
}

/* --- getters --- */

/* Reads a u64 that must fit a CK_ULONG. */
static int
get_ulong(struct p11mux_buf *b, CK_ULONG *v)
{
	uint64_t u;
	int r;

	if ((r = p11mux_buf_get_u64(b, &u)) != 0)
		return r;
	if ((CK_ULONG)u != u)
		return P11MUX_ERR_INVALID;
	*v = (CK_ULONG)u;
	return 0;
}

/* Reads an element count and checks that min_each bytes per element can follow,
 * before the caller allocates anything for them. */
static int
get_count(struct p11mux_buf *b, size_t min_each, size_t *n)
{
	uint32_t c;
	int r;

	if ((r = p11mux_buf_get_u32(b, &c)) != 0)
		return r;
	if (min_each > 0 && c > p11mux_buf_remaining(b) / min_each)
		return P11MUX_ERR_SHORT;
	*n = c;
	return 0;
}

static int
msg_get_ulong(struct p11mux_msg *m, CK_ULONG *v)
{
	int r;

	if ((r = expect(m, 'u')) != 0)
		return r;
	return get_ulong(m->buf, v);
}

static int
msg_get_bytes(struct p11mux_msg *m, const uint8_t **p, size_t *len)
{
	int r;

	if ((r = expect(m, 'y')) != 0)
		return r;
	return p11mux_buf_get_bytes(m->buf, p, len);
}

static int
msg_get_ulongs(struct p11mux_msg *m, CK_ULONG **v, size_t *n)
{
	CK_ULONG *arr;
	size_t i, c;
	int r;

	if ((r = expect(m, 'U')) != 0 || (r = get_count(m->buf, 8, &c)) != 0)
		return r;
	if ((arr = arena_alloc(m, c ? c : 1, sizeof(*arr))) == NULL)
		return P11MUX_ERR_NOMEM;
	for (i = 0; i < c; i++)
		if ((r = get_ulong(m->buf, &arr[i])) != 0)
			return r;
	*v = arr;
	*n = c;
	return 0;
}

static int
msg_get_attrs(struct p11mux_msg *m, struct p11mux_attrs *out)
{
	CK_ATTRIBUTE *a;
	CK_RV *st;
	CK_ULONG *ul;
	size_t i, c, len;
	const uint8_t *p;
	uint8_t kind;
	int r;

	if ((r = expect(m, 'A')) != 0 || (r = get_count(m->buf, 17, &c)) != 0)
		return r;
	if ((a = arena_alloc(m, c ? c : 1, sizeof(*a))) == NULL ||
	    (st = arena_alloc(m, c ? c : 1, sizeof(*st))) == NULL ||
	    (ul = arena_alloc(m, c ? c : 1, sizeof(*ul))) == NULL)
		return P11MUX_ERR_NOMEM;
	for (i = 0; i < c; i++) {
		if ((r = get_ulong(m->buf, &a[i].type)) != 0 ||
		    (r = get_ulong(m->buf, &st[i])) != 0 ||
		    (r = p11mux_buf_get_u8(m->buf, &kind)) != 0)
			return r;
		switch (kind) {
		case ATTR_NONE:
			a[i].pValue = NULL;
			a[i].ulValueLen = 0;
			break;
		case ATTR_BYTES:
			if ((r = p11mux_buf_get_bytes(m->buf, &p, &len)) != 0)
				return r;
			a[i].pValue = (void *)p;
			a[i].ulValueLen = len;
			break;
		case ATTR_ULONG:
			if ((r = get_ulong(m->buf, &ul[i])) != 0)
				return r;
			a[i].pValue = &ul[i];
			a[i].ulValueLen = sizeof(CK_ULONG);
			break;
		default:
			return P11MUX_ERR_INVALID;
		}
		if (kind != ATTR_NONE && st[i] != CKR_OK)
			return P11MUX_ERR_INVALID;
	}
	out->attrs = a;
	out->status = st;
	out->n = c;
	return 0;
}

/* A decoded mechanism with room for its parameter. */
struct mech_storage {
	CK_MECHANISM mech;
	union {
		CK_RSA_PKCS_PSS_PARAMS pss;
		CK_RSA_PKCS_OAEP_PARAMS oaep;
	} u;
};

static int
msg_get_mech(struct p11mux_msg *m, CK_MECHANISM **out)
{
	struct p11mux_buf *b = m->buf;
	struct mech_storage *ms;
	const uint8_t *p;
	size_t len;
	uint8_t kind;
	int r;

	if ((r = expect(m, 'M')) != 0)
		return r;
	if ((ms = arena_alloc(m, 1, sizeof(*ms))) == NULL)
		return P11MUX_ERR_NOMEM;
	if ((r = get_ulong(b, &ms->mech.mechanism)) != 0 || (r = p11mux_buf_get_u8(b, &kind)) != 0)
		return r;
	switch (kind) {
	case MECH_PARAM_NONE:
		ms->mech.pParameter = NULL;
		ms->mech.ulParameterLen = 0;
		break;
	case MECH_PARAM_RAW:
		if (!mech_param_is_raw(ms->mech.mechanism))
			return P11MUX_ERR_INVALID;
		if ((r = p11mux_buf_get_bytes(b, &p, &len)) != 0)
			return r;
		if (len != mech_raw_len(ms->mech.mechanism))
			return P11MUX_ERR_INVALID;
		/* A copy in the arena is aligned for the parameter's structure (AES-CTR). */
		if ((ms->mech.pParameter = arena_alloc(m, len ? len : 1, 1)) == NULL)
			return P11MUX_ERR_NOMEM;
		memcpy(ms->mech.pParameter, p, len);
		ms->mech.ulParameterLen = len;
		break;
	case MECH_PARAM_PSS:
		if (!mech_is_pss(ms->mech.mechanism))
			return P11MUX_ERR_INVALID;
		if ((r = get_ulong(b, &ms->u.pss.hashAlg)) != 0 ||
		    (r = get_ulong(b, &ms->u.pss.mgf)) != 0 ||
		    (r = get_ulong(b, &ms->u.pss.sLen)) != 0)
			return r;
		ms->mech.pParameter = &ms->u.pss;
		ms->mech.ulParameterLen = sizeof(ms->u.pss);
		break;
	case MECH_PARAM_OAEP:
		if (ms->mech.mechanism != CKM_RSA_PKCS_OAEP)
			return P11MUX_ERR_INVALID;
		if ((r = get_ulong(b, &ms->u.oaep.hashAlg)) != 0 ||
		    (r = get_ulong(b, &ms->u.oaep.mgf)) != 0 ||
		    (r = get_ulong(b, &ms->u.oaep.source)) != 0 ||
		    (r = p11mux_buf_get_bytes(b, &p, &len)) != 0)
			return r;
		ms->u.oaep.pSourceData = len > 0 ? (void *)p : NULL;
		ms->u.oaep.ulSourceDataLen = len;
		ms->mech.pParameter = &ms->u.oaep;
		ms->mech.ulParameterLen = sizeof(ms->u.oaep);
		break;
	default:
		return P11MUX_ERR_INVALID;
	}
	*out = &ms->mech;
	return 0;
}

static int
get_fixed(struct p11mux_buf *b, void *dst, size_t len)
{
	const uint8_t *p;
	int r;

	if ((r = p11mux_buf_get(b, len, &p)) != 0)
		return r;
	memcpy(dst, p, len);
	return 0;
}

static int
get_version(struct p11mux_buf *b, CK_VERSION *v)
{
	int r;

	if ((r = p11mux_buf_get_u8(b, &v->major)) != 0)
		return r;
	return p11mux_buf_get_u8(b, &v->minor);
}

/* Smallest encoded size of one slot descriptor, for the count check. */
#define SLOT_MIN_WIRE (8 + 64 + 32 + 8 + 4 + 32 + 32 + 16 + 16 + 8 + 80 + 4 + 16 + 4)

static int
msg_get_slots(struct p11mux_msg *m, struct p11mux_slot **out, size_t *nout)
{
	struct p11mux_buf *b = m->buf;
	struct p11mux_slot *s;
	size_t i, j, c, nm;
	int r;

	if ((r = expect(m, 'P')) != 0 || (r = get_count(b, SLOT_MIN_WIRE, &c)) != 0)
		return r;
	if ((s = arena_alloc(m, c ? c : 1, sizeof(*s))) == NULL)
		return P11MUX_ERR_NOMEM;
	for (i = 0; i < c; i++) {
		CK_SLOT_INFO *si = &s[i].slot;
		CK_TOKEN_INFO *ti = &s[i].token;

		get_ulong(b, &s[i].id);
		get_fixed(b, si->slotDescription, sizeof(si->slotDescription));
		get_fixed(b, si->manufacturerID, sizeof(si->manufacturerID));
		get_ulong(b, &si->flags);
		get_version(b, &si->hardwareVersion);
		get_version(b, &si->firmwareVersion);
		get_fixed(b, ti->label, sizeof(ti->label));
		get_fixed(b, ti->manufacturerID, sizeof(ti->manufacturerID));
		get_fixed(b, ti->model, sizeof(ti->model));
		get_fixed(b, ti->serialNumber, sizeof(ti->serialNumber));
		get_ulong(b, &ti->flags);
		get_ulong(b, &ti->ulMaxSessionCount);
		get_ulong(b, &ti->ulSessionCount);
		get_ulong(b, &ti->ulMaxRwSessionCount);
		get_ulong(b, &ti->ulRwSessionCount);
		get_ulong(b, &ti->ulMaxPinLen);
		get_ulong(b, &ti->ulMinPinLen);
		get_ulong(b, &ti->ulTotalPublicMemory);
		get_ulong(b, &ti->ulFreePublicMemory);
		get_ulong(b, &ti->ulTotalPrivateMemory);
		get_ulong(b, &ti->ulFreePrivateMemory);
		get_version(b, &ti->hardwareVersion);
		get_version(b, &ti->firmwareVersion);
		get_fixed(b, ti->utcTime, sizeof(ti->utcTime));
		if ((r = p11mux_buf_error(b)) != 0 || (r = get_count(b, 32, &nm)) != 0)
			return r;
		if ((s[i].mechs = arena_alloc(m, nm ? nm : 1, sizeof(*s[i].mechs))) == NULL ||
		    (s[i].infos = arena_alloc(m, nm ? nm : 1, sizeof(*s[i].infos))) == NULL)
			return P11MUX_ERR_NOMEM;
		s[i].nmechs = nm;
		for (j = 0; j < nm; j++) {
			get_ulong(b, &s[i].mechs[j]);
			get_ulong(b, &s[i].infos[j].ulMinKeySize);
			get_ulong(b, &s[i].infos[j].ulMaxKeySize);
			get_ulong(b, &s[i].infos[j].flags);
		}
		if ((r = p11mux_buf_error(b)) != 0)
			return r;
	}
	*out = s;
	*nout = c;
	return 0;
}

/* --- the public puts and gets: each one checks and records the sticky error --- */

/* A failed message stays failed: expr is not evaluated once an error is recorded. */
#define STICKY(m, expr) ((m)->err != 0 ? (m)->err : sticky((m), (expr)))

int
p11mux_msg_put_ulong(struct p11mux_msg *m, CK_ULONG v)
{
	return STICKY(m, msg_put_ulong(m, v));
}

int
p11mux_msg_put_bytes(struct p11mux_msg *m, const void *p, size_t len)
{
	return STICKY(m, msg_put_bytes(m, p, len));
}

int
p11mux_msg_put_ulongs(struct p11mux_msg *m, const CK_ULONG *v, size_t n)
{
	return STICKY(m, msg_put_ulongs(m, v, n));
}

int
p11mux_msg_put_attrs(struct p11mux_msg *m, const CK_ATTRIBUTE *a, const CK_RV *status, size_t n)
{
	return STICKY(m, msg_put_attrs(m, a, status, n));
}

int
p11mux_msg_put_mech(struct p11mux_msg *m, const CK_MECHANISM *mech)
{
	return STICKY(m, msg_put_mech(m, mech));
}

int
p11mux_msg_put_slots(struct p11mux_msg *m, const struct p11mux_slot *s, size_t n)
{
	return STICKY(m, msg_put_slots(m, s, n));
}

int
p11mux_msg_get_ulong(struct p11mux_msg *m, CK_ULONG *v)
{
	return STICKY(m, msg_get_ulong(m, v));
}

int
p11mux_msg_get_bytes(struct p11mux_msg *m, const uint8_t **p, size_t *len)
{
	return STICKY(m, msg_get_bytes(m, p, len));
}

int
p11mux_msg_get_ulongs(struct p11mux_msg *m, CK_ULONG **v, size_t *n)
{
	return STICKY(m, msg_get_ulongs(m, v, n));
}

int
p11mux_msg_get_attrs(struct p11mux_msg *m, struct p11mux_attrs *out)
{
	return STICKY(m, msg_get_attrs(m, out));
}

int
p11mux_msg_get_mech(struct p11mux_msg *m, CK_MECHANISM **out)
{
	return STICKY(m, msg_get_mech(m, out));
}

int
p11mux_msg_get_slots(struct p11mux_msg *m, struct p11mux_slot **out, size_t *nout)
{
	return STICKY(m, msg_get_slots(m, out, nout));
}

void
p11mux_free_secret(void *p, size_t n)
{
	if (p == NULL)
		return;
	explicit_bzero(p, n);
	free(p);
}

void
p11mux_pad(unsigned char *dst, size_t n, const char *s)
{
	size_t len = strlen(s);

	memset(dst, ' ', n);
	memcpy(dst, s, len < n ? len : n);
}

void
p11mux_field(char *dst, const unsigned char *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
	while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		dst[--n] = '\0';
}
