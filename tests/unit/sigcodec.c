#include "sigcodec.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

uint64_t
sc_rand(struct sc_rng *r)
{
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

uint64_t
sc_below(struct sc_rng *r, uint64_t n)
{
	return sc_rand(r) % n;
}

void
sc_fill(struct sc_rng *r, void *p, size_t n)
{
	uint8_t *d = p;
	size_t i;

	for (i = 0; i < n; i++)
		d[i] = (uint8_t)sc_rand(r);
}

int
sc_mech_is_pss(CK_MECHANISM_TYPE t)
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

/* --- generation --- */

/* Zeroed memory that sc_fields_free() releases; NULL when out of memory. */
static void *
sc_alloc(struct sc_fields *f, size_t n)
{
	void **nm, *p;

	if (f->nmem == f->capmem) {
		size_t cap = f->capmem ? f->capmem * 2 : 32;

		if ((nm = realloc(f->mem, cap * sizeof(*nm))) == NULL)
			return NULL;
		f->mem = nm;
		f->capmem = cap;
	}
	if ((p = calloc(1, n ? n : 1)) == NULL)
		return NULL;
	f->mem[f->nmem++] = p;
	return p;
}

void
sc_fields_free(struct sc_fields *f)
{
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; i < f->nmem; i++)
		free(f->mem[i]);
	free(f->mem);
	memset(f, 0, sizeof(*f));
}

static CK_ULONG
gen_ulong(struct sc_rng *r)
{
	/* Edges of one byte, of 32 bits and of 64 bits. */
	static const CK_ULONG special[] = {
	        0, 1, 0x7f, 0x80, 0xffffffffUL, 0x100000000UL, (CK_ULONG)-1,
	};
	uint64_t k = sc_below(r, 10);

	if (k < sizeof(special) / sizeof(special[0]))
		return special[k];
	return (CK_ULONG)sc_rand(r);
}

static int
gen_bytes(struct sc_fields *f, struct sc_rng *r, unsigned variant, struct sc_field *out)
{
	size_t len;
	uint8_t *p;

	switch (variant % 5) {
	case 0:
		len = 0;
		break;
	case 1:
		len = 1;
		break;
	case 2:
		len = (size_t)sc_below(r, 64);
		break;
	case 3:
		len = (size_t)sc_below(r, 1024);
		break;
	default:
		len = 4096 + (size_t)sc_below(r, 4096);
		break;
	}
	/* An empty string may come with or without a pointer. */
	if (len == 0 && sc_below(r, 2) == 0) {
		out->bytes = NULL;
		out->len = 0;
		return 0;
	}
	if ((p = sc_alloc(f, len)) == NULL)
		return -1;
	sc_fill(r, p, len);
	out->bytes = p;
	out->len = len;
	return 0;
}

static int
gen_ulongs(struct sc_fields *f, struct sc_rng *r, unsigned variant, struct sc_field *out)
{
	size_t i, n = variant % 4 == 0 ? 0 : (size_t)sc_below(r, 33);

	if ((out->ulongs = sc_alloc(f, n * sizeof(CK_ULONG))) == NULL)
		return -1;
	for (i = 0; i < n; i++)
		out->ulongs[i] = gen_ulong(r);
	out->n = n;
	return 0;
}

/* Kinds of attributes the generator mixes into a list. */
enum attr_shape {
	A_CLASS,          /* CKA_CLASS, CK_ULONG value */
	A_LABEL,          /* CKA_LABEL, bytes */
	A_SENSITIVE,      /* CKA_VALUE refused with CKR_ATTRIBUTE_SENSITIVE, no value */
	A_KEY_TYPE,       /* CKA_KEY_TYPE, CK_ULONG */
	A_MODULUS_BITS,   /* CKA_MODULUS_BITS, any 64-bit CK_ULONG */
	A_ID,             /* CKA_ID, 0..20 bytes */
	A_SIGN,           /* CKA_SIGN, one CK_BBOOL */
	A_SENSITIVE_BUF,  /* refused, although the caller left a buffer: must not travel */
	A_TYPE_INVALID,   /* vendor attribute refused with CKR_ATTRIBUTE_TYPE_INVALID */
	A_ULONG_ODD_SIZE, /* CKA_VALUE_LEN with 4 bytes: travels as bytes, not as a u64 */
	A_NO_VALUE,       /* CKA_MODULUS with no buffer (a length query) */
	A_BIG,            /* CKA_VALUE with 300 bytes */
	A_SHAPES
};

static int
gen_attr(struct sc_fields *f, struct sc_rng *r, enum attr_shape shape, CK_ATTRIBUTE *a, CK_RV *st)
{
	CK_ULONG *ul;
	size_t len;
	uint8_t *p;

	*st = CKR_OK;
	a->pValue = NULL;
	a->ulValueLen = 0;
	switch (shape) {
	case A_CLASS:
	case A_KEY_TYPE:
	case A_MODULUS_BITS:
		a->type = shape == A_CLASS      ? CKA_CLASS
		          : shape == A_KEY_TYPE ? CKA_KEY_TYPE
		                                : CKA_MODULUS_BITS;
		if ((ul = sc_alloc(f, sizeof(*ul))) == NULL)
			return -1;
		*ul = shape == A_CLASS      ? CKO_PRIVATE_KEY + sc_below(r, 3)
		      : shape == A_KEY_TYPE ? CKK_RSA + sc_below(r, 4)
		                            : gen_ulong(r);
		a->pValue = ul;
		a->ulValueLen = sizeof(*ul);
		return 0;
	case A_SENSITIVE:
		a->type = CKA_VALUE;
		a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		*st = CKR_ATTRIBUTE_SENSITIVE;
		return 0;
	case A_SENSITIVE_BUF:
		a->type = CKA_PRIVATE_EXPONENT;
		if ((a->pValue = sc_alloc(f, 8)) == NULL)
			return -1;
		a->ulValueLen = 8;
		*st = CKR_ATTRIBUTE_SENSITIVE;
		return 0;
	case A_TYPE_INVALID:
		a->type = CKA_VENDOR_DEFINED | (CK_ULONG)sc_below(r, 1000);
		a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		*st = CKR_ATTRIBUTE_TYPE_INVALID;
		return 0;
	case A_NO_VALUE:
		a->type = CKA_MODULUS;
		return 0;
	case A_SIGN:
		a->type = CKA_SIGN;
		len = 1;
		break;
	case A_LABEL:
		a->type = CKA_LABEL;
		len = 1 + (size_t)sc_below(r, 32);
		break;
	case A_ID:
		a->type = CKA_ID;
		len = (size_t)sc_below(r, 21);
		break;
	case A_ULONG_ODD_SIZE:
		a->type = CKA_VALUE_LEN;
		len = 4;
		break;
	default:
		a->type = CKA_VALUE;
		len = 300;
		break;
	}
	if ((p = sc_alloc(f, len)) == NULL)
		return -1;
	sc_fill(r, p, len);
	if (shape == A_SIGN)
		p[0] = CK_TRUE;
	a->pValue = p;
	a->ulValueLen = len;
	return 0;
}

static int
gen_attrs(struct sc_fields *f, struct sc_rng *r, unsigned variant, struct sc_field *out)
{
	enum attr_shape shapes[3 + 8];
	size_t i, j, n = 0, extra;
	int all_ok = 1;

	/* Every sixth variant is an empty list; the others always hold a CK_ULONG attribute, a
	 * byte attribute and a refused one, plus random extras in random order. */
	if (variant % 6 != 0) {
		shapes[n++] = A_CLASS;
		shapes[n++] = A_LABEL;
		/* Some lists have only CKR_OK entries, so that a NULL status array is exercised. */
		if (variant % 6 != 1)
			shapes[n++] = A_SENSITIVE;
		extra = (size_t)sc_below(r, 9);
		for (i = 0; i < extra; i++) {
			enum attr_shape s =
			        (enum attr_shape)(A_KEY_TYPE + sc_below(r, A_SHAPES - A_KEY_TYPE));

			if (variant % 6 == 1 && (s == A_SENSITIVE_BUF || s == A_TYPE_INVALID))
				s = A_KEY_TYPE;
			shapes[n++] = s;
		}
		for (i = n; i > 1; i--) {
			enum attr_shape t;

			j = (size_t)sc_below(r, i);
			t = shapes[i - 1];
			shapes[i - 1] = shapes[j];
			shapes[j] = t;
		}
	}
	if ((out->attrs = sc_alloc(f, (n ? n : 1) * sizeof(CK_ATTRIBUTE))) == NULL ||
	    (out->status = sc_alloc(f, (n ? n : 1) * sizeof(CK_RV))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (gen_attr(f, r, shapes[i], &out->attrs[i], &out->status[i]) != 0)
			return -1;
		if (out->status[i] != CKR_OK)
			all_ok = 0;
	}
	if (all_ok && variant % 2 == 1)
		out->status = NULL;
	out->nattrs = n;
	return 0;
}

static int
gen_mech(struct sc_fields *f, struct sc_rng *r, unsigned variant, struct sc_field *out)
{
	static const CK_MECHANISM_TYPE plain[] = {CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS, CKM_ECDSA,
	                                          CKM_SHA256, CKM_ECDSA_SHA384};
	static const CK_MECHANISM_TYPE hashed_pss[] = {
	        CKM_SHA1_RSA_PKCS_PSS, CKM_SHA224_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS,
	        CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS};
	static const CK_MECHANISM_TYPE hashes[] = {CKM_SHA_1, CKM_SHA256, CKM_SHA384, CKM_SHA512};
	static const CK_ULONG mgfs[] = {CKG_MGF1_SHA1, CKG_MGF1_SHA256, CKG_MGF1_SHA384,
	                                CKG_MGF1_SHA512};
	enum sc_mech_kind kind = (enum sc_mech_kind)(variant % SC_MECH_KINDS);
	CK_RSA_PKCS_PSS_PARAMS *pss;
	CK_RSA_PKCS_OAEP_PARAMS *oaep;
	CK_AES_CTR_PARAMS *ctr;
	CK_MECHANISM *mech;
	uint8_t *p;
	size_t len;

	if ((mech = sc_alloc(f, sizeof(*mech))) == NULL)
		return -1;
	out->mech = mech;
	out->mech_kind = kind;
	switch (kind) {
	case SC_MECH_NONE:
		mech->mechanism = plain[sc_below(r, 5)];
		return 0;
	case SC_MECH_NONE_PTR:
		mech->mechanism = CKM_ECDSA;
		if ((mech->pParameter = sc_alloc(f, 1)) == NULL)
			return -1;
		return 0;
	case SC_MECH_PSS:
	case SC_MECH_PSS_HASHED:
		mech->mechanism =
		        kind == SC_MECH_PSS ? CKM_RSA_PKCS_PSS : hashed_pss[sc_below(r, 5)];
		if ((pss = sc_alloc(f, sizeof(*pss))) == NULL)
			return -1;
		pss->hashAlg = hashes[sc_below(r, 4)];
		pss->mgf = mgfs[sc_below(r, 4)];
		pss->sLen = gen_ulong(r);
		mech->pParameter = pss;
		mech->ulParameterLen = sizeof(*pss);
		return 0;
	case SC_MECH_OAEP_SOURCE:
	case SC_MECH_OAEP_PLAIN:
		mech->mechanism = CKM_RSA_PKCS_OAEP;
		if ((oaep = sc_alloc(f, sizeof(*oaep))) == NULL)
			return -1;
		oaep->hashAlg = hashes[sc_below(r, 4)];
		oaep->mgf = mgfs[sc_below(r, 4)];
		oaep->source = CKZ_DATA_SPECIFIED;
		if (kind == SC_MECH_OAEP_SOURCE) {
			len = 1 + (size_t)sc_below(r, 40);
			if ((p = sc_alloc(f, len)) == NULL)
				return -1;
			sc_fill(r, p, len);
			oaep->pSourceData = p;
			oaep->ulSourceDataLen = len;
		}
		mech->pParameter = oaep;
		mech->ulParameterLen = sizeof(*oaep);
		return 0;
	case SC_MECH_AES_CBC_IV:
		mech->mechanism = sc_below(r, 2) ? CKM_AES_CBC : CKM_AES_CBC_PAD;
		if ((p = sc_alloc(f, 16)) == NULL)
			return -1;
		sc_fill(r, p, 16);
		mech->pParameter = p;
		mech->ulParameterLen = 16;
		return 0;
	default:
		mech->mechanism = CKM_AES_CTR;
		if ((ctr = sc_alloc(f, sizeof(*ctr))) == NULL)
			return -1;
		ctr->ulCounterBits = 1 + sc_below(r, 128);
		sc_fill(r, ctr->cb, sizeof(ctr->cb));
		mech->pParameter = ctr;
		mech->ulParameterLen = sizeof(*ctr);
		return 0;
	}
}

static void
gen_version(struct sc_rng *r, CK_VERSION *v)
{
	v->major = (CK_BYTE)sc_rand(r);
	v->minor = (CK_BYTE)sc_rand(r);
}

static int
gen_slots(struct sc_fields *f, struct sc_rng *r, unsigned variant, struct sc_field *out)
{
	size_t i, j, n = variant % 5 == 0 ? 0 : 1 + (size_t)sc_below(r, 3);

	if ((out->slots = sc_alloc(f, (n ? n : 1) * sizeof(struct p11mux_slot))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		struct p11mux_slot *s = &out->slots[i];
		CK_SLOT_INFO *si = &s->slot;
		CK_TOKEN_INFO *ti = &s->token;

		s->id = gen_ulong(r);
		sc_fill(r, si->slotDescription, sizeof(si->slotDescription));
		sc_fill(r, si->manufacturerID, sizeof(si->manufacturerID));
		si->flags = gen_ulong(r);
		gen_version(r, &si->hardwareVersion);
		gen_version(r, &si->firmwareVersion);
		sc_fill(r, ti->label, sizeof(ti->label));
		sc_fill(r, ti->manufacturerID, sizeof(ti->manufacturerID));
		sc_fill(r, ti->model, sizeof(ti->model));
		sc_fill(r, ti->serialNumber, sizeof(ti->serialNumber));
		ti->flags = gen_ulong(r);
		ti->ulMaxSessionCount = gen_ulong(r);
		ti->ulSessionCount = gen_ulong(r);
		ti->ulMaxRwSessionCount = gen_ulong(r);
		ti->ulRwSessionCount = gen_ulong(r);
		ti->ulMaxPinLen = gen_ulong(r);
		ti->ulMinPinLen = gen_ulong(r);
		ti->ulTotalPublicMemory = gen_ulong(r);
		ti->ulFreePublicMemory = gen_ulong(r);
		ti->ulTotalPrivateMemory = gen_ulong(r);
		ti->ulFreePrivateMemory = gen_ulong(r);
		gen_version(r, &ti->hardwareVersion);
		gen_version(r, &ti->firmwareVersion);
		sc_fill(r, ti->utcTime, sizeof(ti->utcTime));
		/* The first slot always has mechanisms; later ones may have none. */
		s->nmechs = i == 0 ? 1 + sc_below(r, 6) : sc_below(r, 7);
		if ((s->mechs = sc_alloc(f, (s->nmechs + 1) * sizeof(*s->mechs))) == NULL ||
		    (s->infos = sc_alloc(f, (s->nmechs + 1) * sizeof(*s->infos))) == NULL)
			return -1;
		for (j = 0; j < s->nmechs; j++) {
			s->mechs[j] = gen_ulong(r);
			s->infos[j].ulMinKeySize = gen_ulong(r);
			s->infos[j].ulMaxKeySize = gen_ulong(r);
			s->infos[j].flags = gen_ulong(r);
		}
	}
	out->nslots = n;
	return 0;
}

int
sc_gen(struct sc_fields *out, const char *sig, uint64_t seed, unsigned variant)
{
	struct sc_rng r = {seed * 0x100000001B3ull + variant};
	size_t i;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	for (i = 0; sig[i] != '\0' && rc == 0; i++) {
		struct sc_field *fl = &out->f[i];

		if (i == SC_MAX_FIELDS)
			return -1;
		fl->letter = sig[i];
		/* Fields of one message differ in shape too. */
		switch (sig[i]) {
		case 'u':
			fl->ul = gen_ulong(&r);
			break;
		case 'y':
			rc = gen_bytes(out, &r, variant + (unsigned)i, fl);
			break;
		case 'U':
			rc = gen_ulongs(out, &r, variant, fl);
			break;
		case 'A':
			rc = gen_attrs(out, &r, variant, fl);
			break;
		case 'M':
			rc = gen_mech(out, &r, variant, fl);
			break;
		case 'P':
			rc = gen_slots(out, &r, variant, fl);
			break;
		default:
			rc = -1;
			break;
		}
		out->n = i + 1;
	}
	return rc;
}

/* --- encoding and decoding --- */

int
sc_encode(struct p11mux_msg *m, const struct sc_fields *f)
{
	size_t i;
	int r = 0;

	for (i = 0; i < f->n && r == 0; i++) {
		const struct sc_field *fl = &f->f[i];

		switch (fl->letter) {
		case 'u':
			r = p11mux_msg_put_ulong(m, fl->ul);
			break;
		case 'y':
			r = p11mux_msg_put_bytes(m, fl->bytes, fl->len);
			break;
		case 'U':
			r = p11mux_msg_put_ulongs(m, fl->ulongs, fl->n);
			break;
		case 'A':
			r = p11mux_msg_put_attrs(m, fl->attrs, fl->status, fl->nattrs);
			break;
		case 'M':
			r = p11mux_msg_put_mech(m, fl->mech);
			break;
		case 'P':
			r = p11mux_msg_put_slots(m, fl->slots, fl->nslots);
			break;
		default:
			r = P11MUX_ERR_INVALID;
			break;
		}
	}
	return r;
}

int
sc_decode(struct p11mux_msg *m, struct sc_fields *out)
{
	const char *sig = m->sig;
	struct p11mux_attrs a;
	size_t i;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (sig == NULL)
		return P11MUX_ERR_INVALID;
	for (i = 0; sig[i] != '\0' && r == 0; i++) {
		struct sc_field *fl = &out->f[i];

		if (i == SC_MAX_FIELDS)
			return P11MUX_ERR_INVALID;
		fl->letter = sig[i];
		switch (sig[i]) {
		case 'u':
			r = p11mux_msg_get_ulong(m, &fl->ul);
			break;
		case 'y':
			r = p11mux_msg_get_bytes(m, &fl->bytes, &fl->len);
			break;
		case 'U':
			r = p11mux_msg_get_ulongs(m, &fl->ulongs, &fl->n);
			break;
		case 'A':
			if ((r = p11mux_msg_get_attrs(m, &a)) == 0) {
				fl->attrs = a.attrs;
				fl->status = a.status;
				fl->nattrs = a.n;
			}
			break;
		case 'M':
			r = p11mux_msg_get_mech(m, &fl->mech);
			break;
		case 'P':
			r = p11mux_msg_get_slots(m, &fl->slots, &fl->nslots);
			break;
		default:
			r = P11MUX_ERR_INVALID;
			break;
		}
		if (r == 0)
			out->n = i + 1;
	}
	return r;
}

static uint64_t
sum(uint64_t acc, const void *p, size_t n)
{
	const volatile uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		acc = acc * 31 + b[i];
	return acc;
}

uint64_t
sc_touch(const struct sc_fields *f)
{
	const CK_RSA_PKCS_OAEP_PARAMS *oaep;
	uint64_t acc = 0;
	size_t i, j, k;

	for (i = 0; i < f->n; i++) {
		const struct sc_field *fl = &f->f[i];

		switch (fl->letter) {
		case 'u':
			acc = acc * 31 + fl->ul;
			break;
		case 'y':
			acc = sum(acc, fl->bytes, fl->len);
			break;
		case 'U':
			acc = sum(acc, fl->ulongs, fl->n * sizeof(CK_ULONG));
			break;
		case 'A':
			for (j = 0; j < fl->nattrs; j++) {
				acc = acc * 31 + fl->attrs[j].type +
				      (fl->status != NULL ? fl->status[j] : CKR_OK);
				if (fl->attrs[j].pValue != NULL)
					acc = sum(acc, fl->attrs[j].pValue,
					          fl->attrs[j].ulValueLen);
			}
			break;
		case 'M':
			acc = acc * 31 + fl->mech->mechanism;
			if (fl->mech->pParameter == NULL)
				break;
			acc = sum(acc, fl->mech->pParameter, fl->mech->ulParameterLen);
			if (fl->mech->mechanism == CKM_RSA_PKCS_OAEP) {
				oaep = fl->mech->pParameter;
				if (oaep->pSourceData != NULL)
					acc = sum(acc, oaep->pSourceData, oaep->ulSourceDataLen);
			}
			break;
		case 'P':
			for (j = 0; j < fl->nslots; j++) {
				const struct p11mux_slot *s = &fl->slots[j];

				acc = sum(acc, &s->slot.slotDescription,
				          sizeof(s->slot.slotDescription));
				acc = sum(acc, &s->token.label, sizeof(s->token.label));
				acc = sum(acc, &s->token.utcTime, sizeof(s->token.utcTime));
				acc = acc * 31 + s->id + s->token.flags +
				      s->token.ulFreePrivateMemory;
				for (k = 0; k < s->nmechs; k++)
					acc = acc * 31 + s->mechs[k] + s->infos[k].ulMinKeySize +
					      s->infos[k].ulMaxKeySize + s->infos[k].flags;
			}
			break;
		default:
			break;
		}
	}
	return acc;
}

/* --- comparison of decoded values --- */

static int
bytes_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int
attrs_eq(const struct sc_field *a, const struct sc_field *b)
{
	size_t i;

	if (a->nattrs != b->nattrs)
		return 0;
	for (i = 0; i < a->nattrs; i++) {
		const CK_ATTRIBUTE *x = &a->attrs[i], *y = &b->attrs[i];

		if (x->type != y->type || a->status[i] != b->status[i] ||
		    (x->pValue == NULL) != (y->pValue == NULL) ||
		    !bytes_eq(x->pValue, x->ulValueLen, y->pValue, y->ulValueLen))
			return 0;
	}
	return 1;
}

static int
mech_eq(const CK_MECHANISM *a, const CK_MECHANISM *b)
{
	const CK_RSA_PKCS_OAEP_PARAMS *x, *y;

	if (a->mechanism != b->mechanism)
		return 0;
	if (a->mechanism == CKM_RSA_PKCS_OAEP && a->ulParameterLen == sizeof(*x) &&
	    b->ulParameterLen == sizeof(*y)) {
		x = a->pParameter;
		y = b->pParameter;
		return x->hashAlg == y->hashAlg && x->mgf == y->mgf && x->source == y->source &&
		       bytes_eq(x->pSourceData, x->ulSourceDataLen, y->pSourceData,
		                y->ulSourceDataLen);
	}
	/* PSS parameters hold no pointers and no padding: their bytes say it all. */
	return bytes_eq(a->pParameter, a->ulParameterLen, b->pParameter, b->ulParameterLen);
}

static int
slot_eq(const struct p11mux_slot *a, const struct p11mux_slot *b)
{
	const CK_SLOT_INFO *sa = &a->slot, *sb = &b->slot;
	const CK_TOKEN_INFO *ta = &a->token, *tb = &b->token;
	size_t j;

	if (a->id != b->id || a->nmechs != b->nmechs ||
	    memcmp(sa->slotDescription, sb->slotDescription, sizeof(sa->slotDescription)) != 0 ||
	    memcmp(sa->manufacturerID, sb->manufacturerID, sizeof(sa->manufacturerID)) != 0 ||
	    sa->flags != sb->flags || sa->hardwareVersion.major != sb->hardwareVersion.major ||
	    sa->hardwareVersion.minor != sb->hardwareVersion.minor ||
	    sa->firmwareVersion.major != sb->firmwareVersion.major ||
	    sa->firmwareVersion.minor != sb->firmwareVersion.minor)
		return 0;
	if (memcmp(ta->label, tb->label, sizeof(ta->label)) != 0 ||
	    memcmp(ta->manufacturerID, tb->manufacturerID, sizeof(ta->manufacturerID)) != 0 ||
	    memcmp(ta->model, tb->model, sizeof(ta->model)) != 0 ||
	    memcmp(ta->serialNumber, tb->serialNumber, sizeof(ta->serialNumber)) != 0 ||
	    memcmp(ta->utcTime, tb->utcTime, sizeof(ta->utcTime)) != 0 || ta->flags != tb->flags ||
	    ta->ulMaxSessionCount != tb->ulMaxSessionCount ||
	    ta->ulSessionCount != tb->ulSessionCount ||
	    ta->ulMaxRwSessionCount != tb->ulMaxRwSessionCount ||
	    ta->ulRwSessionCount != tb->ulRwSessionCount || ta->ulMaxPinLen != tb->ulMaxPinLen ||
	    ta->ulMinPinLen != tb->ulMinPinLen ||
	    ta->ulTotalPublicMemory != tb->ulTotalPublicMemory ||
	    ta->ulFreePublicMemory != tb->ulFreePublicMemory ||
	    ta->ulTotalPrivateMemory != tb->ulTotalPrivateMemory ||
	    ta->ulFreePrivateMemory != tb->ulFreePrivateMemory ||
	    ta->hardwareVersion.major != tb->hardwareVersion.major ||
	    ta->hardwareVersion.minor != tb->hardwareVersion.minor ||
	    ta->firmwareVersion.major != tb->firmwareVersion.major ||
	    ta->firmwareVersion.minor != tb->firmwareVersion.minor)
		return 0;
	for (j = 0; j < a->nmechs; j++)
		if (a->mechs[j] != b->mechs[j] ||
		    a->infos[j].ulMinKeySize != b->infos[j].ulMinKeySize ||
		    a->infos[j].ulMaxKeySize != b->infos[j].ulMaxKeySize ||
		    a->infos[j].flags != b->infos[j].flags)
			return 0;
	return 1;
}

int
sc_equal(const struct sc_fields *a, const struct sc_fields *b)
{
	size_t i, j;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++) {
		const struct sc_field *x = &a->f[i], *y = &b->f[i];

		if (x->letter != y->letter)
			return 0;
		switch (x->letter) {
		case 'u':
			if (x->ul != y->ul)
				return 0;
			break;
		case 'y':
			if (!bytes_eq(x->bytes, x->len, y->bytes, y->len))
				return 0;
			break;
		case 'U':
			if (!bytes_eq(x->ulongs, x->n * sizeof(CK_ULONG), y->ulongs,
			              y->n * sizeof(CK_ULONG)))
				return 0;
			break;
		case 'A':
			if (!attrs_eq(x, y))
				return 0;
			break;
		case 'M':
			if (!mech_eq(x->mech, y->mech))
				return 0;
			break;
		case 'P':
			if (x->nslots != y->nslots)
				return 0;
			for (j = 0; j < x->nslots; j++)
				if (!slot_eq(&x->slots[j], &y->slots[j]))
					return 0;
			break;
		default:
			return 0;
		}
	}
	return 1;
}
