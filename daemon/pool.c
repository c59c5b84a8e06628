#include "pool.h"
#include "err.h"
#include "log.h"
#include "thread.h"
#include "pin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- reading a member's objects --- */

/* An object as one member holds it, before the pool's view is built. */
struct mobject {
	size_t member;
	CK_OBJECT_HANDLE h;
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE ktype; /* (CK_ULONG)-1 for non-keys */
	CK_ATTRIBUTE *attrs;
	CK_RV *status;
	size_t n;
	uint8_t *pub; /* what identifies the key material (see fingerprint()) */
	size_t publen;
	int used;
};

static const CK_ATTRIBUTE_TYPE attrs_common[] = {
        CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE,
};
static const CK_ATTRIBUTE_TYPE attrs_cert[] = {
        CKA_CERTIFICATE_TYPE,
        CKA_TRUSTED,
        CKA_CERTIFICATE_CATEGORY,
        CKA_CHECK_VALUE,
        CKA_START_DATE,
        CKA_END_DATE,
        CKA_SUBJECT,
        CKA_ID,
        CKA_ISSUER,
        CKA_SERIAL_NUMBER,
        CKA_VALUE,
        CKA_URL,
        CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
        CKA_HASH_OF_ISSUER_PUBLIC_KEY,
        CKA_JAVA_MIDP_SECURITY_DOMAIN,
        CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_key[] = {
        CKA_KEY_TYPE, CKA_ID,    CKA_START_DATE,        CKA_END_DATE,
        CKA_DERIVE,   CKA_LOCAL, CKA_KEY_GEN_MECHANISM,
};
static const CK_ATTRIBUTE_TYPE attrs_public[] = {
        CKA_SUBJECT, CKA_ENCRYPT, CKA_VERIFY,          CKA_VERIFY_RECOVER,
        CKA_WRAP,    CKA_TRUSTED, CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_private[] = {
        CKA_SUBJECT,
        CKA_SENSITIVE,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_SIGN_RECOVER,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_ALWAYS_AUTHENTICATE,
        CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_secret[] = {
        CKA_SENSITIVE,
        CKA_ENCRYPT,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_VERIFY,
        CKA_WRAP,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_CHECK_VALUE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_TRUSTED,
        CKA_VALUE_LEN,
        CKA_VALUE,
};
static const CK_ATTRIBUTE_TYPE attrs_rsa[] = {CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT};
static const CK_ATTRIBUTE_TYPE attrs_rsa_private[] = {
        CKA_PRIVATE_EXPONENT, CKA_PRIME_1,    CKA_PRIME_2,
        CKA_EXPONENT_1,       CKA_EXPONENT_2, CKA_COEFFICIENT,
};
static const CK_ATTRIBUTE_TYPE attrs_ec[] = {CKA_EC_PARAMS, CKA_EC_POINT};
static const CK_ATTRIBUTE_TYPE attrs_ec_private[] = {CKA_VALUE};
static const CK_ATTRIBUTE_TYPE attrs_data[] = {CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE};

#define ADD(list)                                                                                  \
	do {                                                                                       \
		for (size_t k_ = 0; k_ < sizeof(list) / sizeof(list[0]) && n < max; k_++)          \
			types[n++] = list[k_];                                                     \
	} while (0)

/* The attribute types worth reading for an object of this class and key type. */
static size_t
attr_list(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, CK_ATTRIBUTE_TYPE *types, size_t max)
{
	size_t n = 0;

	ADD(attrs_common);
	switch (cls) {
	case CKO_CERTIFICATE:
		ADD(attrs_cert);
		break;
	case CKO_PUBLIC_KEY:
	case CKO_PRIVATE_KEY:
	case CKO_SECRET_KEY:
		ADD(attrs_key);
		if (cls == CKO_PUBLIC_KEY)
			ADD(attrs_public);
		else if (cls == CKO_PRIVATE_KEY)
			ADD(attrs_private);
		else
			ADD(attrs_secret);
		if (kt == CKK_RSA) {
			ADD(attrs_rsa);
			if (cls == CKO_PRIVATE_KEY)
				ADD(attrs_rsa_private);
		} else if (kt == CKK_EC) {
			ADD(attrs_ec);
			if (cls == CKO_PRIVATE_KEY)
				ADD(attrs_ec_private);
		}
		break;
	case CKO_DATA:
		ADD(attrs_data);
		break;
	default:
		break;
	}
	return n;
}

static void
free_attrs(CK_ATTRIBUTE *a, size_t n)
{
	size_t i;

	for (i = 0; a != NULL && i < n; i++)
		free(a[i].pValue);
	free(a);
}

static void
mobject_free(struct mobject *o)
{
	if (o == NULL)
		return;
	free_attrs(o->attrs, o->n);
	free(o->status);
	free(o->pub);
	free(o);
}

static int
find_attr(const CK_ATTRIBUTE *a, const CK_RV *st, size_t n, CK_ATTRIBUTE_TYPE t)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (a[i].type == t && (st == NULL || st[i] == CKR_OK))
			return (int)i;
	return -1;
}

/*
 * Reads the listed attributes of h. One call asks every length, one more fetches every
 * value; attributes that came back unavailable are asked alone, to tell a sensitive one
 * (kept, marked CKR_ATTRIBUTE_SENSITIVE) from one the object lacks (dropped).
 */
static CK_RV
read_attrs(struct member *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
           const CK_ATTRIBUTE_TYPE *types, size_t ntypes, struct mobject *o)
{
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_ATTRIBUTE *t = NULL, one;
	size_t i, n = 0;
	CK_RV rv;

	if ((t = calloc(ntypes, sizeof(*t))) == NULL ||
	    (o->attrs = calloc(ntypes, sizeof(*o->attrs))) == NULL ||
	    (o->status = calloc(ntypes, sizeof(*o->status))) == NULL) {
		free(t);
		return CKR_HOST_MEMORY;
	}
	for (i = 0; i < ntypes; i++)
		t[i].type = types[i];
	rv = f->C_GetAttributeValue(s, h, t, ntypes);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_SENSITIVE && rv != CKR_ATTRIBUTE_TYPE_INVALID) {
		free(t);
		return rv;
	}
	for (i = 0; i < ntypes; i++) {
		if (t[i].ulValueLen == CK_UNAVAILABLE_INFORMATION) {
			one.type = types[i];
			one.pValue = NULL;
			one.ulValueLen = 0;
			rv = f->C_GetAttributeValue(s, h, &one, 1);
			if (rv == CKR_ATTRIBUTE_SENSITIVE) {
				o->attrs[n].type = types[i];
				o->status[n++] = CKR_ATTRIBUTE_SENSITIVE;
			}
			continue;
		}
		o->attrs[n].type = types[i];
		o->attrs[n].ulValueLen = t[i].ulValueLen;
		if ((o->attrs[n].pValue = malloc(t[i].ulValueLen ? t[i].ulValueLen : 1)) == NULL) {
			free(t);
			o->n = n;
			return CKR_HOST_MEMORY;
		}
		o->status[n] = CKR_OK;
		n++;
	}
	o->n = n;
	free(t);
	/* Second pass: the values, straight into the object's buffers. */
	for (i = 0; i < n; i++) {
		if (o->status[i] != CKR_OK)
			continue;
		rv = f->C_GetAttributeValue(s, h, &o->attrs[i], 1);
		if (rv != CKR_OK)
			return rv;
	}
	return CKR_OK;
}

static int
attr_bool(const CK_ATTRIBUTE *a, const CK_RV *st, size_t n, CK_ATTRIBUTE_TYPE t, int dflt)
{
	int i = find_attr(a, st, n, t);

	if (i < 0 || a[i].ulValueLen != sizeof(CK_BBOOL))
		return dflt;
	return *(CK_BBOOL *)a[i].pValue != CK_FALSE;
}

/* Appends a length-prefixed attribute value to the fingerprint being built. */
static int
fp_add(uint8_t **fp, size_t *len, const CK_ATTRIBUTE *a)
{
	uint8_t *n;

	if ((n = realloc(*fp, *len + 8 + a->ulValueLen)) == NULL)
		return -1;
	memcpy(n + *len, &a->ulValueLen, 8);
	memcpy(n + *len + 8, a->pValue, a->ulValueLen);
	*fp = n;
	*len += 8 + a->ulValueLen;
	return 0;
}

/*
 * What identifies the key material or content: RSA modulus and exponent, the EC point
 * (for an EC private key, from the public key with the same CKA_ID on that member, since
 * private EC keys need not carry the point), or the value of certificates and data. Empty
 * when nothing is readable (secret keys without a check value).
 */
static int
fingerprint(struct mobject *o, struct mobject **all, size_t nall)
{
	static const CK_ATTRIBUTE_TYPE rsa[] = {CKA_MODULUS, CKA_PUBLIC_EXPONENT};
	int i, idi, idj;
	size_t j, k;

	if (o->ktype == CKK_RSA) {
		for (k = 0; k < 2; k++)
			if ((i = find_attr(o->attrs, o->status, o->n, rsa[k])) >= 0 &&
			    fp_add(&o->pub, &o->publen, &o->attrs[i]) != 0)
				return -1;
		return 0;
	}
	if (o->ktype == CKK_EC || o->ktype == CKK_EC_EDWARDS) {
		if ((i = find_attr(o->attrs, o->status, o->n, CKA_EC_POINT)) >= 0)
			return fp_add(&o->pub, &o->publen, &o->attrs[i]);
		idi = find_attr(o->attrs, o->status, o->n, CKA_ID);
		for (j = 0; idi >= 0 && j < nall; j++) {
			struct mobject *p = all[j];

			if (p->member != o->member || p->cls != CKO_PUBLIC_KEY ||
			    p->ktype != o->ktype)
				continue;
			idj = find_attr(p->attrs, p->status, p->n, CKA_ID);
			if (idj < 0 || p->attrs[idj].ulValueLen != o->attrs[idi].ulValueLen ||
			    memcmp(p->attrs[idj].pValue, o->attrs[idi].pValue,
			           o->attrs[idi].ulValueLen) != 0)
				continue;
			if ((i = find_attr(p->attrs, p->status, p->n, CKA_EC_POINT)) >= 0)
				return fp_add(&o->pub, &o->publen, &p->attrs[i]);
		}
		if ((i = find_attr(o->attrs, o->status, o->n, CKA_PUBLIC_KEY_INFO)) >= 0 &&
		    o->attrs[i].ulValueLen > 0)
			return fp_add(&o->pub, &o->publen, &o->attrs[i]);
		return 0;
	}
	if (o->cls == CKO_SECRET_KEY) {
		if ((i = find_attr(o->attrs, o->status, o->n, CKA_CHECK_VALUE)) >= 0)
			return fp_add(&o->pub, &o->publen, &o->attrs[i]);
		return 0;
	}
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_VALUE)) >= 0)
		return fp_add(&o->pub, &o->publen, &o->attrs[i]);
	return 0;
}

/* Reads every object of a member (logged in) and appends them to *all. */
static int
member_read_objects(struct member *m, struct mobject ***all, size_t *nall, struct p11mux_err *e)
{
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_OBJECT_HANDLE hs[64], *handles = NULL, *nh;
	CK_ULONG got, nhandles = 0, i;
	CK_ATTRIBUTE_TYPE types[64];
	CK_ATTRIBUTE head[2];
	struct mobject *o, **na;
	size_t ntypes;
	CK_RV rv;

	if ((rv = f->C_FindObjectsInit(m->anchor, NULL, 0)) != CKR_OK) {
		p11mux_err_set(e, "member %s: C_FindObjectsInit: %s", m->label, p11mux_rv_name(rv));
		return -1;
	}
	do {
		if ((rv = f->C_FindObjects(m->anchor, hs, 64, &got)) != CKR_OK)
			break;
		if ((nh = realloc(handles, (nhandles + got + 1) * sizeof(*nh))) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		handles = nh;
		memcpy(handles + nhandles, hs, got * sizeof(*hs));
		nhandles += got;
	} while (got > 0);
	f->C_FindObjectsFinal(m->anchor);
	if (rv != CKR_OK) {
		p11mux_err_set(e, "member %s: C_FindObjects: %s", m->label, p11mux_rv_name(rv));
		free(handles);
		return -1;
	}
	for (i = 0; i < nhandles; i++) {
		if ((o = calloc(1, sizeof(*o))) == NULL)
			goto nomem;
		o->member = m->index;
		o->h = handles[i];
		o->cls = (CK_ULONG)-1;
		o->ktype = (CK_ULONG)-1;
		head[0].type = CKA_CLASS;
		head[0].pValue = &o->cls;
		head[0].ulValueLen = sizeof(o->cls);
		head[1].type = CKA_KEY_TYPE;
		head[1].pValue = &o->ktype;
		head[1].ulValueLen = sizeof(o->ktype);
		f->C_GetAttributeValue(m->anchor, o->h, head, 2);
		if (head[1].ulValueLen != sizeof(o->ktype))
			o->ktype = (CK_ULONG)-1;
		ntypes = attr_list(o->cls, o->ktype, types, 64);
		if ((rv = read_attrs(m, m->anchor, o->h, types, ntypes, o)) != CKR_OK) {
			log_warn("member %s: cannot read object %lu: %s; left out", m->label, o->h,
			         p11mux_rv_name(rv));
			mobject_free(o);
			continue;
		}
		if ((na = realloc(*all, (*nall + 1) * sizeof(*na))) == NULL) {
			mobject_free(o);
			goto nomem;
		}
		*all = na;
		(*all)[(*nall)++] = o;
	}
	free(handles);
	return 0;
nomem:
	free(handles);
	p11mux_err_set(e, "out of memory");
	return -1;
}

/* --- the pool's view --- */

static int
same_attr(const struct mobject *a, const struct mobject *b, CK_ATTRIBUTE_TYPE t)
{
	int i = find_attr(a->attrs, a->status, a->n, t);
	int j = find_attr(b->attrs, b->status, b->n, t);

	if (i < 0 || j < 0)
		return i == j;
	return a->attrs[i].ulValueLen == b->attrs[j].ulValueLen &&
	       memcmp(a->attrs[i].pValue, b->attrs[j].pValue, a->attrs[i].ulValueLen) == 0;
}

/* Same class, CKA_ID, label and key type: the same object, as far as names go. */
static int
same_name(const struct mobject *a, const struct mobject *b)
{
	return a->cls == b->cls && a->ktype == b->ktype && same_attr(a, b, CKA_ID) &&
	       same_attr(a, b, CKA_LABEL) &&
	       (a->cls != CKO_DATA || same_attr(a, b, CKA_APPLICATION));
}

static int
same_material(const struct mobject *a, const struct mobject *b)
{
	return a->publen == b->publen && (a->publen == 0 || memcmp(a->pub, b->pub, a->publen) == 0);
}

static const char *
class_name(CK_OBJECT_CLASS c)
{
	switch (c) {
	case CKO_DATA:
		return "data";
	case CKO_CERTIFICATE:
		return "certificate";
	case CKO_PUBLIC_KEY:
		return "public key";
	case CKO_PRIVATE_KEY:
		return "private key";
	case CKO_SECRET_KEY:
		return "secret key";
	default:
		return "object";
	}
}

static void
describe(const struct mobject *o, char *dst, size_t n)
{
	char label[64] = "", id[48] = "";
	int i;
	size_t k, len;

	if ((i = find_attr(o->attrs, o->status, o->n, CKA_LABEL)) >= 0) {
		len = o->attrs[i].ulValueLen < sizeof(label) - 1 ? o->attrs[i].ulValueLen
		                                                 : sizeof(label) - 1;
		memcpy(label, o->attrs[i].pValue, len);
		label[len] = '\0';
	}
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_ID)) >= 0)
		for (k = 0; k < o->attrs[i].ulValueLen && k < 20; k++)
			snprintf(id + 2 * k, sizeof(id) - 2 * k, "%02x",
			         ((unsigned char *)o->attrs[i].pValue)[k]);
	snprintf(dst, n, "%s \"%s\" (id %s)", class_name(o->cls), label, id[0] ? id : "none");
}

/* FNV-1a, 64-bit, over a byte string. */
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n-- > 0) {
		h ^= *b++;
		h *= 0x100000001b3ull;
	}
	return h;
}

/*
 * The virtual handle: a hash of the object's identity (pool slot, class, key type, CKA_ID,
 * label and key material), so that the same object has the same handle in every run of
 * the daemon. 31 bits, never 0, stepped past the rare collision.
 */
static CK_OBJECT_HANDLE
derive_handle(const struct pool *p, const struct mobject *o)
{
	uint64_t h = 0xcbf29ce484222325ull;
	CK_OBJECT_HANDLE v;
	int i;

	h = fnv(h, &p->slot.id, sizeof(p->slot.id));
	h = fnv(h, &o->cls, sizeof(o->cls));
	h = fnv(h, &o->ktype, sizeof(o->ktype));
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_ID)) >= 0)
		h = fnv(h, o->attrs[i].pValue, o->attrs[i].ulValueLen);
	h = fnv(h, "|", 1);
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_LABEL)) >= 0)
		h = fnv(h, o->attrs[i].pValue, o->attrs[i].ulValueLen);
	h = fnv(h, "|", 1);
	h = fnv(h, o->pub, o->publen);
	v = (CK_OBJECT_HANDLE)((h ^ (h >> 31)) & 0x7fffffff);
	while (v == 0 || p11mux_hmap_get(p->by_handle, v) != NULL)
		v = (v + 1) & 0x7fffffff;
	return v;
}

/* Among the unused objects named as all[i] is, the variant (key material) held by the most
 * members; a tie goes to the one on the member listed first. */
static size_t
pick_variant(struct mobject **all, size_t nall, size_t i)
{
	size_t j, k, best = i, bestcount = 0, count;

	for (j = i; j < nall; j++) {
		if (all[j]->used || !same_name(all[i], all[j]))
			continue;
		count = 0;
		for (k = i; k < nall; k++)
			if (!all[k]->used && same_name(all[j], all[k]) &&
			    same_material(all[j], all[k]))
				count++;
		if (count > bestcount) {
			best = j;
			bestcount = count;
		}
	}
	return best;
}

static void
pobject_free(struct pobject *po)
{
	if (po == NULL)
		return;
	free_attrs(po->attrs, po->n);
	free(po->status);
	free(po->backend);
	free(po->holding);
	free(po->pub);
	free(po);
}

/* A pool object named after member object o; its handle is derived from o's identity.
 * NULL when out of memory. */
static struct pobject *
pobject_new(struct pool *p, const struct mobject *o)
{
	struct pobject *po;
	size_t k;

	if ((po = calloc(1, sizeof(*po))) == NULL ||
	    (po->backend = calloc(p->nmembers, sizeof(*po->backend))) == NULL ||
	    (po->holding = calloc(p->nmembers, 1)) == NULL) {
		pobject_free(po);
		return NULL;
	}
	for (k = 0; k < p->nmembers; k++)
		po->backend[k] = CK_INVALID_HANDLE;
	po->cls = o->cls;
	po->ktype = o->ktype;
	describe(o, po->desc, sizeof(po->desc));
	po->handle = derive_handle(p, o);
	return po;
}

/* The pool object takes o's attributes and key material (o keeps none of them). */
static void
pobject_take(struct pobject *po, struct mobject *o)
{
	po->attrs = o->attrs;
	po->status = o->status;
	po->n = o->n;
	po->pub = o->pub;
	po->publen = o->publen;
	o->attrs = NULL;
	o->status = NULL;
	o->n = 0;
	o->pub = NULL;
	po->private = attr_bool(po->attrs, po->status, po->n, CKA_PRIVATE,
	                        po->cls == CKO_PRIVATE_KEY || po->cls == CKO_SECRET_KEY);
}

/* Records which member holds the object of all[best] (same name and key material), and which
 * holds something else under its name; marks those member objects used. */
static void
map_holders(struct pool *p, struct pobject *po, struct mobject **all, size_t nall, size_t best)
{
	size_t j, k;

	for (j = 0; j < nall; j++) {
		if (j == best || all[j]->used || !same_name(all[best], all[j]))
			continue;
		if (same_material(all[best], all[j])) {
			if (po->backend[all[j]->member] == CK_INVALID_HANDLE)
				po->backend[all[j]->member] = all[j]->h;
			all[j]->used = 1;
		} else if (po->holding[all[j]->member] != HOLD_DIFFERENT) {
			po->holding[all[j]->member] = HOLD_DIFFERENT;
			log_warn("pool \"%s\": member %s holds a different %s under the same name: "
			         "that member is not used for it",
			         p->label, p->members[all[j]->member].label, po->desc);
			all[j]->used = 1;
		}
	}
	po->backend[all[best]->member] = all[best]->h;
	all[best]->used = 1;
	for (k = 0; k < p->nmembers; k++) {
		if (po->backend[k] != CK_INVALID_HANDLE)
			po->holding[k] = HOLD_SAME;
		else if (po->holding[k] != HOLD_DIFFERENT && p->members[k].state == MEMBER_UP)
			log_warn("pool \"%s\": member %s lacks %s: that member is not used for it",
			         p->label, p->members[k].label, po->desc);
	}
}

/* Adds po to the pool's objects and handle map. 0, or -1 when out of memory. */
static int
pool_add_object(struct pool *p, struct pobject *po)
{
	struct pobject **nv;

	if ((nv = realloc(p->objects, (p->nobjects + 1) * sizeof(*nv))) == NULL)
		return -1;
	p->objects = nv;
	if (p11mux_hmap_put(p->by_handle, po->handle, po) != 0)
		return -1;
	po->index = p->nobjects;
	p->objects[p->nobjects++] = po;
	log_debug("pool \"%s\": %s is handle %lu", p->label, po->desc, po->handle);
	return 0;
}

/* Builds the pool's objects from every member's objects. */
static int
build_view(struct pool *p, struct mobject **all, size_t nall, struct p11mux_err *e)
{
	struct pobject *po;
	size_t i, best;

	for (i = 0; i < nall; i++) {
		if (all[i]->used)
			continue;
		best = pick_variant(all, nall, i);
		if ((po = pobject_new(p, all[best])) == NULL)
			return p11mux_err_set(e, "out of memory");
		map_holders(p, po, all, nall, best);
		pobject_take(po, all[best]);
		if (po->publen == 0 && (po->cls == CKO_PRIVATE_KEY || po->cls == CKO_SECRET_KEY))
			log_warn("pool \"%s\": %s has no readable public part; its members are "
			         "matched by name only",
			         p->label, po->desc);
		if (pool_add_object(p, po) != 0) {
			pobject_free(po);
			return p11mux_err_set(e, "out of memory");
		}
	}
	return 0;
}

/* The mechanisms every member that is up has, with the capabilities they all share. */
static int
build_mechanisms(struct pool *p)
{
	struct p11mux_slot *s = &p->slot;
	struct member *m0 = NULL;
	CK_ULONG i, j, n = 0;
	size_t k;

	for (k = 0; k < p->nmembers && m0 == NULL; k++)
		if (p->members[k].state == MEMBER_UP)
			m0 = &p->members[k];
	if (m0 == NULL)
		return -1;
	s->mechs = calloc(m0->nmechs + 1, sizeof(*s->mechs));
	s->infos = calloc(m0->nmechs + 1, sizeof(*s->infos));
	if (s->mechs == NULL || s->infos == NULL)
		return -1;
	for (i = 0; i < m0->nmechs; i++) {
		CK_MECHANISM_INFO info = m0->infos[i];
		int everywhere = 1;

		for (k = 0; k < p->nmembers && everywhere; k++) {
			struct member *m = &p->members[k];

			if (m == m0 || m->state != MEMBER_UP)
				continue;
			for (j = 0; j < m->nmechs && m->mechs[j] != m0->mechs[i]; j++)
				;
			if (j == m->nmechs) {
				everywhere = 0;
				break;
			}
			if (m->infos[j].ulMinKeySize > info.ulMinKeySize)
				info.ulMinKeySize = m->infos[j].ulMinKeySize;
			if (m->infos[j].ulMaxKeySize < info.ulMaxKeySize)
				info.ulMaxKeySize = m->infos[j].ulMaxKeySize;
			info.flags &= m->infos[j].flags;
		}
		if (!everywhere)
			continue;
		/* Key generation, derivation and wrapping write to the devices: not offered. */
		info.flags &= ~(CKF_GENERATE | CKF_GENERATE_KEY_PAIR | CKF_DERIVE | CKF_WRAP |
		                CKF_UNWRAP);
		s->mechs[n] = m0->mechs[i];
		s->infos[n] = info;
		n++;
	}
	s->nmechs = n;
	return 0;
}

static void
pad(unsigned char *dst, size_t n, const char *s)
{
	size_t len = strlen(s);

	memset(dst, ' ', n);
	memcpy(dst, s, len < n ? len : n);
}

static void
build_slot_info(struct pool *p)
{
	CK_SLOT_INFO *si = &p->slot.slot;
	CK_TOKEN_INFO *ti = &p->slot.token;
	char desc[96], serial[17];
	size_t k;

	p->slot.id = (CK_SLOT_ID)p->cfg->slot_id;
	snprintf(desc, sizeof(desc), "p11mux pool of %zu: %s", p->nmembers, p->label);
	pad(si->slotDescription, sizeof(si->slotDescription), desc);
	pad(si->manufacturerID, sizeof(si->manufacturerID), "p11mux");
	/* Not removable: the pool is always there, whatever its members do. */
	si->flags = CKF_TOKEN_PRESENT;
	si->hardwareVersion.major = 0;
	si->hardwareVersion.minor = 1;
	si->firmwareVersion = si->hardwareVersion;

	pad(ti->label, sizeof(ti->label), p->label);
	pad(ti->manufacturerID, sizeof(ti->manufacturerID), "p11mux");
	pad(ti->model, sizeof(ti->model), "pool");
	snprintf(serial, sizeof(serial), "%016llx",
	         (unsigned long long)fnv(0xcbf29ce484222325ull, p->label, strlen(p->label)));
	pad(ti->serialNumber, sizeof(ti->serialNumber), serial);
	ti->flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
	p->has_rng = 1;
	ti->ulMinPinLen = 0;
	ti->ulMaxPinLen = 255;
	for (k = 0; k < p->nmembers; k++) {
		const CK_TOKEN_INFO *mt = &p->members[k].token;

		if (p->members[k].state != MEMBER_UP)
			continue;
		if (!(mt->flags & CKF_RNG))
			p->has_rng = 0;
		if (mt->ulMinPinLen > ti->ulMinPinLen)
			ti->ulMinPinLen = mt->ulMinPinLen;
		if (mt->ulMaxPinLen < ti->ulMaxPinLen)
			ti->ulMaxPinLen = mt->ulMaxPinLen;
	}
	if (p->has_rng)
		ti->flags |= CKF_RNG;
	ti->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
	ti->ulSessionCount = CK_UNAVAILABLE_INFORMATION;
	ti->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
	ti->ulRwSessionCount = CK_UNAVAILABLE_INFORMATION;
	ti->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	ti->hardwareVersion = si->hardwareVersion;
	ti->firmwareVersion = si->hardwareVersion;
	memset(ti->utcTime, ' ', sizeof(ti->utcTime));
}

/* Sets up the member structure (not yet started). */
static void
member_init(struct pool *p, struct member *m, const char *label, const char *serial)
{
	m->pool = p;
	m->index = (size_t)(m - p->members);
	snprintf(m->label, sizeof(m->label), "%s", label);
	snprintf(m->serial, sizeof(m->serial), "%s", serial);
	m->anchor = CK_INVALID_HANDLE;
	m->nworkers = p->cfg->workers_per_member;
	m->state = MEMBER_DOWN;
	m->since_ns = p11mux_now_ns();
	pthread_mutex_init(&m->lock, NULL);
	p11mux_cond_init(&m->work);
	p->nmembers++;
}

/* Finds the backend slots whose tokens belong to the pool. A configured member that is not
 * present gets a place too, down, so that it joins when it appears. */
static int
find_members(struct pool *p, struct p11mux_err *e)
{
	CK_FUNCTION_LIST *f = p->be->f;
	const struct pool_config *cfg = p->cfg;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG nslots = 0, i;
	CK_TOKEN_INFO ti;
	char label[33], serial[17];
	size_t k, *seen = NULL, present = 0;
	int r = -1, want;
	CK_RV rv;

	if ((rv = f->C_GetSlotList(CK_TRUE, NULL, &nslots)) != CKR_OK ||
	    (slots = calloc(nslots + 1, sizeof(*slots))) == NULL ||
	    (rv = f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK) {
		p11mux_err_set(e, "%s: C_GetSlotList: %s", cfg->module, p11mux_rv_name(rv));
		goto out;
	}
	if ((p->members = calloc(nslots + cfg->nmembers + 1, sizeof(*p->members))) == NULL ||
	    (seen = calloc(cfg->nmembers + 1, sizeof(*seen))) == NULL) {
		p11mux_err_set(e, "out of memory");
		goto out;
	}
	for (i = 0; i < nslots; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    !(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		backend_field(label, ti.label, sizeof(ti.label));
		backend_field(serial, ti.serialNumber, sizeof(ti.serialNumber));
		want = cfg->members == NULL;
		for (k = 0; k < cfg->nmembers; k++)
			if (strcmp(cfg->members[k], label) == 0 ||
			    strcmp(cfg->members[k], serial) == 0) {
				want = 1;
				seen[k]++;
			}
		if (!want)
			continue;
		if (p->nmembers == P11MUX_POOL_MAX_MEMBERS) {
			log_warn("pool %zu: more than %d tokens; \"%s\" left out", p->index,
			         P11MUX_POOL_MAX_MEMBERS, label);
			continue;
		}
		struct member *m = &p->members[p->nmembers];
		member_init(p, m, label, serial);
		m->slot = slots[i];
		m->token = ti;
		present++;
	}
	for (k = 0; k < cfg->nmembers; k++)
		if (seen[k] == 0 && p->nmembers < P11MUX_POOL_MAX_MEMBERS) {
			struct member *m = &p->members[p->nmembers];

			log_warn("pool %zu: member \"%s\" is not present in %s; it joins when it "
			         "appears",
			         p->index, cfg->members[k], cfg->module);
			member_init(p, m, cfg->members[k], "");
			snprintf(m->reason, sizeof(m->reason), "not present");
		}
	if (present == 0) {
		p11mux_err_set(
		        e,
		        "pool %zu (%s line %d): no member token present in %s: the pool's objects "
		        "are read from its members at start-up",
		        p->index, "config", cfg->line, cfg->module);
		goto out;
	}
	r = 0;
out:
	free(slots);
	free(seen);
	return r;
}

/* Orders members so that those whose PIN counter is intact are tried first. */
static int
pin_risky(const struct member *m)
{
	return (m->token.flags & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY)) != 0;
}

static int
login_members(struct pool *p, struct p11mux_err *e)
{
	size_t k, pass, nup = 0;
	int verified = 0;
	CK_RV rv;

	/* A wrong PIN tried on every member would burn a retry on each (three locks a
	 * SmartCard-HSM). So the PIN is first tried on one member whose counter is intact;
	 * only once a device has accepted it are the others logged in. */
	for (pass = 0; pass < 2; pass++) {
		for (k = 0; k < p->nmembers; k++) {
			struct member *m = &p->members[k];

			if (m->serial[0] == '\0' || pin_risky(m) != (int)pass ||
			    m->state == MEMBER_UP || m->state == MEMBER_EXCLUDED)
				continue;
			if (m->token.flags & CKF_USER_PIN_LOCKED) {
				m->state = MEMBER_EXCLUDED;
				snprintf(m->reason, sizeof(m->reason), "user PIN locked");
				log_error("pool \"%s\": member %s: user PIN locked; excluded",
				          p->label, m->label);
				continue;
			}
			if (pin_risky(m) && !verified) {
				m->state = MEMBER_EXCLUDED;
				snprintf(m->reason, sizeof(m->reason),
				         "PIN retry counter low, PIN not confirmed by another "
				         "member");
				log_error(
				        "pool \"%s\": member %s: PIN retry counter low and the PIN "
				        "not yet confirmed by another member; excluded",
				        p->label, m->label);
				continue;
			}
			rv = member_login(m);
			if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE) {
				return p11mux_err_set(
				        e,
				        "pool \"%s\": member %s rejected the PIN from %s (%s); not "
				        "tried on any other member, to spare their retry counters",
				        p->label, m->label, p->cfg->pin_file, p11mux_rv_name(rv));
			}
			if (rv == CKR_PIN_LOCKED) {
				m->state = MEMBER_EXCLUDED;
				snprintf(m->reason, sizeof(m->reason), "user PIN locked");
				log_error("pool \"%s\": member %s: %s; excluded", p->label,
				          m->label, p11mux_rv_name(rv));
				continue;
			}
			if (rv != CKR_OK) {
				snprintf(m->reason, sizeof(m->reason), "login: %s",
				         p11mux_rv_name(rv));
				log_error(
				        "pool \"%s\": member %s: login failed: %s; will be probed",
				        p->label, m->label, p11mux_rv_name(rv));
				continue;
			}
			verified = 1;
			m->state = MEMBER_UP;
			m->reason[0] = '\0';
			nup++;
			log_info("pool \"%s\": member %s (serial %s) logged in", p->label, m->label,
			         m->serial);
		}
	}
	if (nup == 0) {
		p11mux_err_set(e, "pool \"%s\": no member could be logged in", p->label);
		return -1;
	}
	return 0;
}

int
pool_open(struct pool *p, size_t index, const struct pool_config *cfg, struct backend **backends,
          struct p11mux_err *e)
{
	struct mobject **all = NULL;
	const char **labels = NULL;
	size_t nall = 0, i, nlabels = 0;
	int r = -1;

	memset(p, 0, sizeof(*p));
	p->index = index;
	p->cfg = cfg;
	p->policy = cfg->scheduler == 1 ? SCHED_ROUND_ROBIN : SCHED_LEAST_LOADED;
	if ((p->by_handle = p11mux_hmap_new()) == NULL) {
		p11mux_err_set(e, "out of memory");
		return -1;
	}
	if ((p->be = backend_get(backends, cfg->module, e)) == NULL)
		return -1;
	if (find_members(p, e) != 0)
		return -1;
	/* The label: configured, or the one every member shares. */
	if (cfg->label != NULL) {
		snprintf(p->label, sizeof(p->label), "%s", cfg->label);
	} else {
		snprintf(p->label, sizeof(p->label), "%s", p->members[0].label);
		for (i = 1; i < p->nmembers; i++)
			if (p->members[i].serial[0] != '\0' &&
			    strcmp(p->members[i].label, p->label) != 0) {
				p11mux_err_set(e,
				               "pool %zu: members have different labels (\"%s\", "
				               "\"%s\"): set "
				               "label in pools.[%zu]",
				               index, p->label, p->members[i].label, index);
				return -1;
			}
		if (strchr(p->label, ':') != NULL) {
			p11mux_err_set(
			        e,
			        "pool %zu: the members' label \"%s\" contains ':', which NSS "
			        "cannot "
			        "use: set label in pools.[%zu]",
			        index, p->label, index);
			return -1;
		}
	}
	/* The PIN file may name the pool's label or a member's. */
	if ((labels = calloc(p->nmembers + 1, sizeof(*labels))) == NULL)
		return p11mux_err_set(e, "out of memory");
	labels[nlabels++] = p->label;
	for (i = 0; i < p->nmembers; i++)
		labels[nlabels++] = p->members[i].label;
	if (pin_read(cfg->pin_file, labels, nlabels, &p->pin, &p->pinlen, e) != 0)
		goto out;
	if (login_members(p, e) != 0)
		goto out;
	for (i = 0; i < p->nmembers; i++)
		if (p->members[i].state == MEMBER_UP &&
		    member_read_objects(&p->members[i], &all, &nall, e) != 0)
			goto out;
	for (i = 0; i < nall; i++)
		if (fingerprint(all[i], all, nall) != 0) {
			p11mux_err_set(e, "out of memory");
			goto out;
		}
	build_slot_info(p);
	if (build_view(p, all, nall, e) != 0)
		goto out;
	if (build_mechanisms(p) != 0) {
		p11mux_err_set(e, "out of memory");
		goto out;
	}
	log_info("pool \"%s\": slot %lu, %zu members, %zu objects, %lu mechanisms, %s scheduling",
	         p->label, p->slot.id, p->nmembers, p->nobjects, p->slot.nmechs,
	         p->policy == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded");
	r = 0;
out:
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
	free(labels);
	return r;
}

int
pool_start(struct pool *p)
{
	size_t i;

	for (i = 0; i < p->nmembers; i++) {
		struct member *m = &p->members[i];

		/* Service times by key (the last slot: operations without a key). */
		m->nsvc = p->nobjects + 1;
		if ((m->svc = calloc(m->nsvc, sizeof(*m->svc))) == NULL || member_start(m) != 0)
			return -1;
		if (m->state == MEMBER_DOWN) {
			/* Not present, or its login failed: probe it. */
			char reason[sizeof(m->reason)];

			snprintf(reason, sizeof(reason), "%s", m->reason[0] ? m->reason : "not up");
			m->state = MEMBER_UP; /* so that member_fail() records the change */
			member_fail(m, MEMBER_DOWN, "%s", reason);
		}
	}
	return 0;
}

int
pool_close(struct pool *p)
{
	size_t i;
	int stuck = 0;

	for (i = 0; i < p->nmembers; i++) {
		struct member *m = &p->members[i];

		member_stop(m);
		stuck |= m->stuck;
		if (p->be != NULL && m->anchor != CK_INVALID_HANDLE && !m->stuck) {
			p->be->f->C_Logout(m->anchor);
			p->be->f->C_CloseSession(m->anchor);
		}
		if (!m->stuck) {
			free(m->svc);
			free(m->mechs);
			free(m->infos);
			pthread_mutex_destroy(&m->lock);
			pthread_cond_destroy(&m->work);
		}
	}
	if (stuck) {
		/* A thread left inside a hung device call still points at the pool, its members
		 * and objects: the process is exiting, let them be. */
		return 1;
	}
	free(p->members);
	for (i = 0; i < p->nobjects; i++)
		pobject_free(p->objects[i]);
	free(p->objects);
	p11mux_hmap_free(p->by_handle);
	free(p->slot.mechs);
	free(p->slot.infos);
	if (p->pin != NULL) {
		explicit_bzero(p->pin, p->pinlen);
		free(p->pin);
	}
	memset(p, 0, sizeof(*p));
	return 0;
}

CK_RV
pool_remap_member(struct pool *p, struct member *m, struct p11mux_err *e)
{
	struct mobject **all = NULL, view;
	size_t nall = 0, i, j, held = 0;
	uint8_t hold;
	CK_OBJECT_HANDLE h;
	CK_RV rv = CKR_OK;

	if (member_read_objects(m, &all, &nall, e) != 0) {
		rv = CKR_DEVICE_ERROR;
		goto out;
	}
	for (i = 0; i < nall; i++)
		if (fingerprint(all[i], all, nall) != 0) {
			p11mux_err_set(e, "out of memory");
			rv = CKR_HOST_MEMORY;
			goto out;
		}
	for (i = 0; i < p->nobjects; i++) {
		struct pobject *po = p->objects[i];

		/* The pool object seen as a member object, to compare with the same rules. */
		memset(&view, 0, sizeof(view));
		view.cls = po->cls;
		view.ktype = po->ktype;
		view.attrs = po->attrs;
		view.status = po->status;
		view.n = po->n;
		view.pub = po->pub;
		view.publen = po->publen;
		h = CK_INVALID_HANDLE;
		hold = HOLD_LACKS;
		for (j = 0; j < nall && h == CK_INVALID_HANDLE; j++) {
			if (!same_name(&view, all[j]))
				continue;
			if (same_material(&view, all[j]))
				h = all[j]->h;
			else
				hold = HOLD_DIFFERENT;
		}
		__atomic_store_n(&po->holding[m->index], h != CK_INVALID_HANDLE ? HOLD_SAME : hold,
		                 __ATOMIC_RELEASE);
		if (h != CK_INVALID_HANDLE)
			held++;
		else if (__atomic_load_n(&po->backend[m->index], __ATOMIC_ACQUIRE) !=
		         CK_INVALID_HANDLE)
			log_warn("pool \"%s\": member %s no longer holds %s", p->label, m->label,
			         po->desc);
		__atomic_store_n(&po->backend[m->index], h, __ATOMIC_RELEASE);
	}
	log_info("pool \"%s\": member %s holds %zu of the pool's %zu objects", p->label, m->label,
	         held, p->nobjects);
out:
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
	return rv;
}

const struct pobject *
pool_object(const struct pool *p, CK_OBJECT_HANDLE h)
{
	return p11mux_hmap_get(p->by_handle, h);
}

int
pool_object_matches(const struct pobject *o, const CK_ATTRIBUTE *tmpl, size_t n)
{
	size_t i;
	int k;

	for (i = 0; i < n; i++) {
		if ((k = find_attr(o->attrs, o->status, o->n, tmpl[i].type)) < 0)
			return 0;
		if (tmpl[i].pValue == NULL || o->attrs[k].ulValueLen != tmpl[i].ulValueLen ||
		    memcmp(o->attrs[k].pValue, tmpl[i].pValue, tmpl[i].ulValueLen) != 0)
			return 0;
	}
	return 1;
}

/* --- operations --- */

/* A snapshot of the members for the scheduler. Members whose service time is not known yet
 * are taken to be as fast as the average of the others. */
static int
pick_member(struct pool *p, const struct pobject *key, const uint8_t *tried)
{
	struct sched_candidate c[P11MUX_POOL_MAX_MEMBERS];
	double sum = 0;
	size_t i, n = p->nmembers < P11MUX_POOL_MAX_MEMBERS ? p->nmembers : P11MUX_POOL_MAX_MEMBERS;
	unsigned known = 0;

	for (i = 0; i < n; i++) {
		struct member *m = &p->members[i];

		p11mux_lock(&m->lock);
		c[i].eligible =
		        m->state == MEMBER_UP && !tried[i] &&
		        (key == NULL ||
		         __atomic_load_n(&key->backend[i], __ATOMIC_ACQUIRE) != CK_INVALID_HANDLE);
		c[i].load = m->queued + m->running;
		c[i].workers = m->nworkers;
		/* What this kind of operation costs on this member: RSA-2048 and EC P-256
		 * differ threefold on a Nitrokey HSM, so one average would mislead. */
		c[i].service_ms =
		        m->svc != NULL ? m->svc[key != NULL ? key->index : m->nsvc - 1] : 0;
		p11mux_unlock(&m->lock);
		if (c[i].service_ms > 0) {
			sum += c[i].service_ms;
			known++;
		}
	}
	for (i = 0; i < n; i++)
		if (c[i].service_ms <= 0)
			c[i].service_ms = known > 0 ? sum / known : 1.0;
	return sched_pick(p->policy, c, n, atomic_fetch_add(&p->rr, 1));
}

/* Waits for a job; gives up when the device call takes longer than op_timeout_ms. The
 * clock starts when a worker takes the job, not when it is queued: a long queue in front of
 * a slow but working device is not a failure. A queue behind a device that hangs does not
 * wait forever either: the requester of the hung call times out, and member_fail() sends
 * the queue elsewhere. Returns 1 when the job finished, 0 on time-out (the job is then
 * abandoned to its worker). */
static int
wait_job(struct member *m, struct job *j, unsigned timeout_ms)
{
	uint64_t limit = (uint64_t)timeout_ms * 1000000u, deadline;
	struct timespec until;

	p11mux_lock(&m->lock);
	while (!j->done) {
		deadline = (j->started_ns != 0 ? j->started_ns : p11mux_now_ns()) + limit;
		if (j->started_ns != 0 && p11mux_now_ns() >= deadline) {
			j->abandoned = 1;
			p11mux_unlock(&m->lock);
			return 0;
		}
		until.tv_sec = (time_t)(deadline / 1000000000u);
		until.tv_nsec = (long)(deadline % 1000000000u);
		pthread_cond_timedwait(&j->cond, &m->lock, &until);
	}
	p11mux_unlock(&m->lock);
	return 1;
}

CK_RV
pool_crypto(struct pool *p, uint32_t call, CK_MECHANISM *mech, const struct pobject *key,
            const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen, uint8_t **out,
            size_t *outlen)
{
	uint8_t tried[P11MUX_POOL_MAX_MEMBERS] = {0};
	const struct pool_config *cfg = p->cfg;
	struct member *m;
	struct job *j;
	unsigned attempt;
	CK_RV rv;
	int idx;

	*out = NULL;
	*outlen = 0;
	for (attempt = 0; attempt < cfg->max_attempts; attempt++) {
		if ((idx = pick_member(p, key, tried)) < 0)
			break;
		m = &p->members[idx];
		tried[idx] = 1;
		if ((j = job_new(call, mech, key, in, inlen, sig, siglen)) == NULL)
			return CKR_HOST_MEMORY;
		member_submit(m, j);
		if (!wait_job(m, j, cfg->op_timeout_ms)) {
			/* The job belongs to the worker now; the member is taken out. */
			member_fail(m, MEMBER_DOWN, "no answer within %u ms", cfg->op_timeout_ms);
			p11mux_lock(&m->lock);
			m->failovers++;
			p11mux_unlock(&m->lock);
			continue;
		}
		rv = j->rv;
		if (rv == P11MUX_RV_RETRY || member_device_failure(rv)) {
			job_free(j);
			p11mux_lock(&m->lock);
			m->failovers++;
			p11mux_unlock(&m->lock);
			continue;
		}
		*out = j->out;
		*outlen = j->outlen;
		j->out = NULL;
		job_free(j);
		return rv;
	}
	/* No member could do it: the application sees a device error, never a hang. */
	return CKR_DEVICE_ERROR;
}

CK_RV
pool_random(struct pool *p, uint8_t *out, size_t len)
{
	uint8_t *buf = NULL;
	size_t got = 0;
	CK_RV rv;

	if (!p->has_rng)
		return CKR_RANDOM_NO_RNG;
	/* RANDOM jobs carry the wanted length as their input size. */
	rv = pool_crypto(p, P11MUX_CALL_RANDOM, NULL, NULL, NULL, len, NULL, 0, &buf, &got);
	if (rv == CKR_OK && got == len)
		memcpy(out, buf, len);
	else if (rv == CKR_OK)
		rv = CKR_DEVICE_ERROR;
	if (buf != NULL) {
		explicit_bzero(buf, got);
		free(buf);
	}
	return rv;
}

void
pool_log_stats(const struct pool *p)
{
	size_t i;

	for (i = 0; i < p->nmembers; i++) {
		struct member *m = &p->members[i];

		p11mux_lock(&m->lock);
		log_info("pool \"%s\": member %s: %llu operations, %llu device errors, %llu "
		         "failovers, %s",
		         p->label, m->label, (unsigned long long)m->done,
		         (unsigned long long)m->errors, (unsigned long long)m->failovers,
		         member_state_name(m->state));
		p11mux_unlock(&m->lock);
	}
}
