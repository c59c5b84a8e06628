#include "view.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
free_attrs(CK_ATTRIBUTE *a, size_t n)
{
	size_t i;

	for (i = 0; a != NULL && i < n; i++)
		free(a[i].pValue);
	free(a);
}

void
mobject_free(struct mobject *o)
{
	if (o == NULL)
		return;
	free_attrs(o->attrs, o->n);
	free(o->status);
	free(o->pub);
	free(o);
}

struct mobject *
mobject_new(size_t member, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls, CK_KEY_TYPE ktype,
            CK_ATTRIBUTE *attrs, CK_RV *status, size_t n)
{
	struct mobject *o;

	if ((o = calloc(1, sizeof(*o))) == NULL) {
		free_attrs(attrs, n);
		free(status);
		return NULL;
	}
	o->member = member;
	o->h = h;
	o->cls = cls;
	o->ktype = ktype;
	o->attrs = attrs;
	o->status = status;
	o->n = n;
	return o;
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

int
mobjects_fingerprint(struct mobject **all, size_t nall)
{
	size_t i;

	for (i = 0; i < nall; i++)
		if (fingerprint(all[i], all, nall) != 0)
			return -1;
	return 0;
}

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
uint64_t
view_fnv(uint64_t h, const void *p, size_t n)
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
derive_handle(const struct view *p, const struct p11mux_hmap *map, const struct mobject *o)
{
	uint64_t h = 0xcbf29ce484222325ull;
	CK_OBJECT_HANDLE v;
	int i;

	h = view_fnv(h, &p->slot, sizeof(p->slot));
	h = view_fnv(h, &o->cls, sizeof(o->cls));
	h = view_fnv(h, &o->ktype, sizeof(o->ktype));
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_ID)) >= 0)
		h = view_fnv(h, o->attrs[i].pValue, o->attrs[i].ulValueLen);
	h = view_fnv(h, "|", 1);
	if ((i = find_attr(o->attrs, o->status, o->n, CKA_LABEL)) >= 0)
		h = view_fnv(h, o->attrs[i].pValue, o->attrs[i].ulValueLen);
	h = view_fnv(h, "|", 1);
	h = view_fnv(h, o->pub, o->publen);
	v = (CK_OBJECT_HANDLE)((h ^ (h >> 31)) & 0x7fffffff);
	while (v == 0 || p11mux_hmap_get(map, v) != NULL)
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

/* A pool object named after member object o; its handle is derived from o's identity, and
 * differs from every handle of map. NULL when out of memory. */
static struct pobject *
pobject_new(struct view *p, const struct p11mux_hmap *map, const struct mobject *o)
{
	struct pobject *po;
	size_t k;

	if ((po = calloc(1, sizeof(*po))) == NULL ||
	    (po->backend = calloc(VIEW_MAX_MEMBERS, sizeof(*po->backend))) == NULL ||
	    (po->holding = calloc(VIEW_MAX_MEMBERS, 1)) == NULL) {
		pobject_free(po);
		return NULL;
	}
	for (k = 0; k < VIEW_MAX_MEMBERS; k++)
		po->backend[k] = CK_INVALID_HANDLE;
	po->cls = o->cls;
	po->ktype = o->ktype;
	describe(o, po->desc, sizeof(po->desc));
	po->handle = derive_handle(p, map, o);
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
	o->publen = 0;
	po->private = attr_bool(po->attrs, po->status, po->n, CKA_PRIVATE,
	                        po->cls == CKO_PRIVATE_KEY || po->cls == CKO_SECRET_KEY);
}

/* Records which member holds the object of all[best] (same name and key material), and which
 * holds something else under its name; marks those member objects used. */
static void
map_holders(struct view *p, const struct view_member *members, struct pobject *po,
            struct mobject **all, size_t nall, size_t best)
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
			         p->label, members[all[j]->member].label, po->desc);
			all[j]->used = 1;
		}
	}
	po->backend[all[best]->member] = all[best]->h;
	all[best]->used = 1;
	for (k = 0; k < p->nmembers; k++) {
		if (po->backend[k] != CK_INVALID_HANDLE)
			po->holding[k] = HOLD_SAME;
		else if (po->holding[k] != HOLD_DIFFERENT && members[k].up)
			log_warn("pool \"%s\": member %s lacks %s: that member is not used for it",
			         p->label, members[k].label, po->desc);
	}
}

static void
copy_entry(uint64_t key, void *value, void *arg)
{
	struct p11mux_hmap **m = arg;

	if (*m != NULL && p11mux_hmap_put(*m, key, value) != 0) {
		p11mux_hmap_free(*m);
		*m = NULL;
	}
}

/* A new map with map's entries; NULL when out of memory. */
static struct p11mux_hmap *
map_copy(const struct p11mux_hmap *map)
{
	struct p11mux_hmap *m = p11mux_hmap_new();

	if (map != NULL)
		p11mux_hmap_foreach(map, copy_entry, &m);
	return m;
}

/* Keeps a replaced array or map until view_free(): a reader may still use it. Out of
 * memory, it is never freed rather than freed too soon. */
static void
retire(struct view *p, void *what, int map)
{
	void **nv;
	uint8_t *nm;

	if (what == NULL)
		return;
	if ((nv = realloc(p->retired, (p->nretired + 1) * sizeof(*nv))) == NULL)
		return;
	p->retired = nv;
	if ((nm = realloc(p->retired_map, p->nretired + 1)) == NULL)
		return;
	p->retired_map = nm;
	p->retired[p->nretired] = what;
	p->retired_map[p->nretired++] = (uint8_t)map;
}

/* Appends po to the pool's objects, where readers see it at once (not the handle map). 0, or
 * -1 when out of memory. */
static int
append(struct view *p, struct pobject *po)
{
	struct pobject **nv;
	size_t n = p->nobjects;

	if (n == p->cap) {
		if ((nv = malloc((p->cap ? p->cap * 2 : 16) * sizeof(*nv))) == NULL)
			return -1;
		if (n > 0)
			memcpy(nv, p->objects, n * sizeof(*nv));
		retire(p, p->objects, 0);
		p->cap = p->cap ? p->cap * 2 : 16;
		nv[n] = po;
		__atomic_store_n(&p->objects, nv, __ATOMIC_RELEASE);
	} else {
		p->objects[n] = po;
	}
	po->index = n;
	__atomic_store_n(&p->nobjects, n + 1, __ATOMIC_RELEASE);
	log_debug("pool \"%s\": %s is handle %lu", p->label, po->desc, po->handle);
	return 0;
}

/* Whether o can be one of the pool's objects: read, and a token object (CKA_TOKEN true or
 * not said; a module that shows a session object to the helper's searches must not make it
 * everybody's). */
static int
candidate(const struct mobject *o)
{
	return !o->unread && attr_bool(o->attrs, o->status, o->n, CKA_TOKEN, 1);
}

/* Builds the pool's objects from every member's objects. */
int
view_build(struct view *p, const struct view_member *members, struct mobject **all, size_t nall,
           struct p11mux_err *e)
{
	struct pobject *po;
	size_t i, best;

	if (!p->built) {
		pthread_mutex_init(&p->lock, NULL);
		p->built = 1;
	}
	if (p->by_handle == NULL && (p->by_handle = p11mux_hmap_new()) == NULL)
		return p11mux_err_set(e, "out of memory");
	for (i = 0; i < nall; i++)
		all[i]->used = !candidate(all[i]);
	for (i = 0; i < nall; i++) {
		if (all[i]->used)
			continue;
		best = pick_variant(all, nall, i);
		if ((po = pobject_new(p, p->by_handle, all[best])) == NULL)
			return p11mux_err_set(e, "out of memory");
		map_holders(p, members, po, all, nall, best);
		pobject_take(po, all[best]);
		if (po->publen == 0 && (po->cls == CKO_PRIVATE_KEY || po->cls == CKO_SECRET_KEY))
			log_warn("pool \"%s\": %s has no readable public part; its members are "
			         "matched by name only",
			         p->label, po->desc);
		/* Before the view is shared: the map is changed in place. */
		if (p11mux_hmap_put(p->by_handle, po->handle, po) != 0 || append(p, po) != 0) {
			p11mux_hmap_remove(p->by_handle, po->handle);
			pobject_free(po);
			return p11mux_err_set(e, "out of memory");
		}
	}
	return 0;
}

/* Maps pool object po onto the member's objects: the member's handle, or what it holds
 * instead. Marks the member objects named as po is. Returns whether the member holds it. */
static int
remap_one(struct view *p, struct pobject *po, size_t member, const char *label,
          struct mobject **all, size_t nall)
{
	struct mobject view;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	uint8_t hold = HOLD_LACKS;
	size_t j;

	/* The pool object seen as a member object, to compare with the same rules. */
	memset(&view, 0, sizeof(view));
	view.cls = po->cls;
	view.ktype = po->ktype;
	view.attrs = po->attrs;
	view.status = po->status;
	view.n = po->n;
	view.pub = po->pub;
	view.publen = po->publen;
	for (j = 0; j < nall; j++) {
		/* Unreadable this time: what the member held under that handle stands. */
		if (all[j]->unread &&
		    all[j]->h == __atomic_load_n(&po->backend[member], __ATOMIC_ACQUIRE) &&
		    h == CK_INVALID_HANDLE) {
			h = all[j]->h;
			continue;
		}
		if (!candidate(all[j]) || !same_name(&view, all[j]))
			continue;
		all[j]->used = 1; /* named as a pool object: not a new one */
		if (h == CK_INVALID_HANDLE && same_material(&view, all[j]))
			h = all[j]->h;
		else if (h == CK_INVALID_HANDLE)
			hold = HOLD_DIFFERENT;
	}
	__atomic_store_n(&po->holding[member], h != CK_INVALID_HANDLE ? HOLD_SAME : hold,
	                 __ATOMIC_RELEASE);
	if (h == CK_INVALID_HANDLE &&
	    __atomic_load_n(&po->backend[member], __ATOMIC_ACQUIRE) != CK_INVALID_HANDLE)
		log_warn("pool \"%s\": member %s no longer holds %s", p->label, label, po->desc);
	__atomic_store_n(&po->backend[member], h, __ATOMIC_RELEASE);
	return h != CK_INVALID_HANDLE;
}

/* Adds the member's objects that no pool object is named as (all[j]->used clear), held by
 * that member alone for now: the new handle map is published first, then the objects are
 * appended, so that a search never returns a handle the map does not know. 0 or -1. */
static int
add_new(struct view *p, size_t member, const char *label, struct mobject **all, size_t nall,
        struct view_change *chg)
{
	struct p11mux_hmap *next = NULL;
	struct pobject *po, **made;
	size_t i, j, n = 0;
	int r = 0;

	if ((made = calloc(nall + 1, sizeof(*made))) == NULL)
		return -1;
	for (i = 0; i < nall && r == 0; i++) {
		if (all[i]->used || !candidate(all[i]))
			continue;
		if ((next == NULL && (next = map_copy(p->by_handle)) == NULL) ||
		    (po = pobject_new(p, next, all[i])) == NULL) {
			r = -1;
			break;
		}
		/* Duplicates on the member (same name): the first one stands for them. */
		for (j = i + 1; j < nall; j++)
			if (!all[j]->used && same_name(all[i], all[j]))
				all[j]->used = 1;
		all[i]->used = 1;
		po->backend[member] = all[i]->h;
		po->holding[member] = HOLD_SAME;
		pobject_take(po, all[i]);
		if (p11mux_hmap_put(next, po->handle, po) != 0) {
			pobject_free(po);
			r = -1;
			break;
		}
		made[n++] = po;
	}
	if (n > 0) {
		retire(p, p->by_handle, 1);
		__atomic_store_n(&p->by_handle, next, __ATOMIC_RELEASE);
		next = NULL;
	}
	p11mux_hmap_free(next);
	for (i = 0; i < n; i++) {
		/* Out of memory here, the object is known by handle but not found by searches. */
		if (append(p, made[i]) != 0) {
			r = -1;
			continue;
		}
		chg->added++;
		log_info("pool \"%s\": new object on member %s: %s, handle %lu", p->label, label,
		         made[i]->desc, made[i]->handle);
	}
	free(made);
	return r;
}

/* Withdraws the objects no member holds, and brings back those one holds again. */
static void
update_withdrawn(struct view *p, struct view_change *chg)
{
	size_t i, k, nmembers = __atomic_load_n(&p->nmembers, __ATOMIC_ACQUIRE);

	for (i = 0; i < p->nobjects; i++) {
		struct pobject *po = p->objects[i];
		int held = 0, was = __atomic_load_n(&po->withdrawn, __ATOMIC_ACQUIRE);

		for (k = 0; k < nmembers && !held; k++)
			held = __atomic_load_n(&po->holding[k], __ATOMIC_ACQUIRE) == HOLD_SAME;
		if (held == !was)
			continue;
		__atomic_store_n(&po->withdrawn, !held, __ATOMIC_RELEASE);
		if (held) {
			chg->revived++;
			log_info("pool \"%s\": %s is back (handle %lu)", p->label, po->desc,
			         po->handle);
		} else {
			chg->withdrawn++;
			log_warn("pool \"%s\": %s withdrawn: no member holds it any more; handle "
			         "%lu "
			         "is invalid now",
			         p->label, po->desc, po->handle);
		}
	}
}

int
view_remap(struct view *p, size_t member, const char *label, struct mobject **all, size_t nall,
           struct view_change *chg)
{
	size_t i;
	int r;

	memset(chg, 0, sizeof(*chg));
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < nall; i++)
		all[i]->used = 0;
	for (i = 0; i < p->nobjects; i++)
		chg->held += (size_t)remap_one(p, p->objects[i], member, label, all, nall);
	r = add_new(p, member, label, all, nall, chg);
	chg->held += chg->added;
	update_withdrawn(p, chg);
	if (chg->added + chg->withdrawn + chg->revived > 0)
		__atomic_add_fetch(&p->version, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->lock);
	log_info("pool \"%s\": member %s holds %zu of the pool's %zu objects", p->label, label,
	         chg->held, __atomic_load_n(&p->nobjects, __ATOMIC_ACQUIRE));
	return r;
}

size_t
view_member_gone(struct view *p, size_t member)
{
	struct view_change chg;
	size_t i;

	memset(&chg, 0, sizeof(chg));
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < p->nobjects; i++) {
		__atomic_store_n(&p->objects[i]->holding[member], HOLD_LACKS, __ATOMIC_RELEASE);
		__atomic_store_n(&p->objects[i]->backend[member], CK_INVALID_HANDLE,
		                 __ATOMIC_RELEASE);
	}
	update_withdrawn(p, &chg);
	if (chg.withdrawn > 0)
		__atomic_add_fetch(&p->version, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->lock);
	return chg.withdrawn;
}

struct pobject *const *
view_objects(const struct view *v, size_t *n)
{
	*n = __atomic_load_n(&v->nobjects, __ATOMIC_ACQUIRE);
	return __atomic_load_n(&v->objects, __ATOMIC_ACQUIRE);
}

uint64_t
view_version(const struct view *v)
{
	return __atomic_load_n(&v->version, __ATOMIC_ACQUIRE);
}

int
pobject_withdrawn(const struct pobject *o)
{
	return __atomic_load_n(&o->withdrawn, __ATOMIC_ACQUIRE);
}

void
view_free(struct view *v)
{
	size_t i;

	for (i = 0; i < v->nobjects; i++)
		pobject_free(v->objects[i]);
	free(v->objects);
	p11mux_hmap_free(v->by_handle);
	for (i = 0; i < v->nretired; i++)
		if (v->retired_map[i])
			p11mux_hmap_free(v->retired[i]);
		else
			free(v->retired[i]);
	free(v->retired);
	free(v->retired_map);
	if (v->built)
		pthread_mutex_destroy(&v->lock);
	v->objects = NULL;
	v->nobjects = v->cap = v->nretired = 0;
	v->by_handle = NULL;
	v->retired = NULL;
	v->retired_map = NULL;
	v->built = 0;
}

const struct pobject *
view_object(const struct view *v, CK_OBJECT_HANDLE h)
{
	const struct p11mux_hmap *map = __atomic_load_n(&v->by_handle, __ATOMIC_ACQUIRE);
	const struct pobject *o = map != NULL ? p11mux_hmap_get(map, h) : NULL;

	return o != NULL && !pobject_withdrawn(o) ? o : NULL;
}

int
pobject_matches(const struct pobject *o, const CK_ATTRIBUTE *tmpl, size_t n)
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

int
pobject_material(const struct pobject *o, const uint8_t **p, size_t *len)
{
	uint64_t first;

	/* The fingerprint holds length-prefixed attribute values; the first one is the modulus
	 * (RSA), the point (EC), or the value. */
	if (o->publen < 8)
		return 0;
	memcpy(&first, o->pub, 8);
	if (first > o->publen - 8)
		first = o->publen - 8;
	*p = o->pub + 8;
	*len = (size_t)first;
	return 1;
}

int
pobject_bool(const struct pobject *o, CK_ATTRIBUTE_TYPE t, int dflt)
{
	return attr_bool(o->attrs, o->status, o->n, t, dflt);
}
