/* The shim's copies of what the daemon told it: the slot list and the pool's objects. */
#include "module.h"

#include <stdlib.h>
#include <string.h>

int
cache_slot_index_locked(CK_SLOT_ID id)
{
	size_t i;

	for (i = 0; i < shim.nslots; i++)
		if (shim.slots[i].info.id == id)
			return (int)i;
	return -1;
}

/* Replaces dst's info with a deep copy of src. Lock held. */
static int
slot_set_locked(struct slot *dst, const struct p11mux_slot *src)
{
	CK_MECHANISM_TYPE *mechs;
	CK_MECHANISM_INFO *infos;
	size_t n = src->nmechs ? src->nmechs : 1;

	mechs = calloc(n, sizeof(*mechs));
	infos = calloc(n, sizeof(*infos));
	if (mechs == NULL || infos == NULL) {
		free(mechs);
		free(infos);
		return -1;
	}
	memcpy(mechs, src->mechs, src->nmechs * sizeof(*mechs));
	memcpy(infos, src->infos, src->nmechs * sizeof(*infos));
	free(dst->info.mechs);
	free(dst->info.infos);
	dst->info = *src;
	dst->info.mechs = mechs;
	dst->info.infos = infos;
	return 0;
}

/* Merges the daemon's slot list into the cache. */
static CK_RV
get_slots(struct p11mux_msg *m, struct conn *c, void *arg)
{
	struct p11mux_slot *s;
	size_t n = 0, i;
	CK_RV rv = CKR_OK;
	int idx;

	(void)c;
	(void)arg;
	if (p11mux_msg_get_slots(m, &s, &n) != 0 || p11mux_msg_end(m) != 0)
		return CKR_DEVICE_ERROR;
	shim_lock();
	for (i = 0; i < n; i++) {
		if ((idx = cache_slot_index_locked(s[i].id)) < 0) {
			/* Slots only ever come, never go: applications such as NSS keep slot IDs
			 * for the life of the process. */
			if (shim.nslots == SHIM_MAX_SLOTS)
				continue;
			idx = (int)shim.nslots++;
		}
		if (slot_set_locked(&shim.slots[idx], &s[i]) != 0)
			rv = CKR_HOST_MEMORY;
	}
	shim.have_slots = 1;
	shim_unlock();
	return rv;
}

CK_RV
cache_refresh_slots(void)
{
	return shim_call(P11MUX_CALL_GET_SLOTS, NULL, get_slots, NULL);
}

CK_RV
cache_need_slots(void)
{
	int have;

	shim_lock();
	have = shim.have_slots;
	shim_unlock();
	return have ? CKR_OK : cache_refresh_slots();
}

void
object_free(struct object *o)
{
	size_t i;

	if (o == NULL)
		return;
	for (i = 0; i < o->n; i++)
		free(o->attrs[i].pValue);
	free(o->attrs);
	free(o->status);
	free(o);
}

/* A deep copy of n attributes; NULL when out of memory. */
struct object *
object_make(CK_SLOT_ID slot, const CK_ATTRIBUTE *a, const CK_RV *st, size_t n)
{
	struct object *o;
	size_t i;

	if ((o = calloc(1, sizeof(*o))) == NULL)
		return NULL;
	o->slot = slot;
	o->attrs = calloc(n ? n : 1, sizeof(*o->attrs));
	o->status = calloc(n ? n : 1, sizeof(*o->status));
	if (o->attrs == NULL || o->status == NULL)
		goto fail;
	for (i = 0; i < n; i++) {
		o->attrs[i].type = a[i].type;
		o->attrs[i].ulValueLen = a[i].ulValueLen;
		o->status[i] = st[i];
		o->n = i + 1;
		if (a[i].pValue != NULL) {
			if ((o->attrs[i].pValue = malloc(a[i].ulValueLen ? a[i].ulValueLen : 1)) ==
			    NULL)
				goto fail;
			memcpy(o->attrs[i].pValue, a[i].pValue, a[i].ulValueLen);
		}
	}
	return o;
fail:
	object_free(o);
	return NULL;
}

struct object *
object_dup(const struct object *o)
{
	struct object *copy = object_make(o->slot, o->attrs, o->status, o->n);

	if (copy != NULL)
		copy->session = o->session;
	return copy;
}

int
object_find(const struct object *o, CK_ATTRIBUTE_TYPE type)
{
	size_t i;

	for (i = 0; i < o->n; i++)
		if (o->attrs[i].type == type)
			return (int)i;
	return -1;
}

int
object_bool(const struct object *o, CK_ATTRIBUTE_TYPE type, int dflt)
{
	int i = object_find(o, type);

	if (i < 0 || o->status[i] != CKR_OK || o->attrs[i].ulValueLen != sizeof(CK_BBOOL))
		return dflt;
	return *(CK_BBOOL *)o->attrs[i].pValue != CK_FALSE;
}

CK_ULONG
object_ulong(const struct object *o, CK_ATTRIBUTE_TYPE type, CK_ULONG dflt)
{
	int i = object_find(o, type);
	CK_ULONG v;

	if (i < 0 || o->status[i] != CKR_OK || o->attrs[i].ulValueLen != sizeof(CK_ULONG))
		return dflt;
	memcpy(&v, o->attrs[i].pValue, sizeof(v));
	return v;
}

/* A GET_OBJECT request and what its reply made. */
struct object_call {
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE handle;
	struct object *made;
};

static void
put_object(struct p11mux_msg *m, void *arg)
{
	const struct object_call *oc = arg;

	p11mux_msg_put_ulong(m, oc->slot);
	p11mux_msg_put_ulong(m, oc->handle);
}

static CK_RV
get_object(struct p11mux_msg *m, struct conn *c, void *arg)
{
	struct object_call *oc = arg;
	struct p11mux_attrs attrs;

	(void)c;
	if (p11mux_msg_get_attrs(m, &attrs) != 0 || p11mux_msg_end(m) != 0)
		return CKR_DEVICE_ERROR;
	oc->made = object_make(oc->slot, attrs.attrs, attrs.status, attrs.n);
	return oc->made != NULL ? CKR_OK : CKR_HOST_MEMORY;
}

CK_RV
cache_get_object(CK_SLOT_ID slot, CK_OBJECT_HANDLE h, struct object **out)
{
	struct object_call oc = {slot, h, NULL};
	struct object *o, *copy = NULL;
	CK_RV rv;

	shim_lock();
	o = p11mux_hmap_get(shim.objects, h);
	if (o != NULL && o->slot == slot)
		copy = object_dup(o);
	shim_unlock();
	if (o != NULL && o->slot == slot) {
		*out = copy;
		return copy != NULL ? CKR_OK : CKR_HOST_MEMORY;
	}
	if (o != NULL)
		return CKR_OBJECT_HANDLE_INVALID;

	if ((rv = shim_call(P11MUX_CALL_GET_OBJECT, put_object, get_object, &oc)) != CKR_OK) {
		object_free(oc.made);
		/* A code about single attributes cannot describe an object that was not read: from
		 * C_GetAttributeValue, an application would take the template's lengths, which
		 * nothing filled, for answers. The daemon never sends one for GET_OBJECT. */
		if (rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID)
			rv = CKR_DEVICE_ERROR;
		return rv;
	}
	if ((copy = object_dup(oc.made)) == NULL) {
		object_free(oc.made);
		return CKR_HOST_MEMORY;
	}
	if (h & P11MUX_SESSION_OBJECT) {
		/* Cached only as they are made, with their session (which ends them). */
		object_free(oc.made);
		*out = copy;
		return CKR_OK;
	}
	shim_lock();
	object_free(p11mux_hmap_remove(shim.objects, h));
	if (p11mux_hmap_put(shim.objects, h, oc.made) != 0)
		object_free(oc.made);
	shim_unlock();
	*out = copy;
	return CKR_OK;
}

static void
free_entry(uint64_t key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	object_free(value);
}

void
cache_clear_objects_locked(void)
{
	struct p11mux_hmap *fresh;

	if (shim.objects == NULL)
		return;
	p11mux_hmap_foreach(shim.objects, free_entry, NULL);
	fresh = p11mux_hmap_new();
	p11mux_hmap_free(shim.objects);
	shim.objects = fresh;
}

void
cache_forget_locked(CK_OBJECT_HANDLE h)
{
	if (shim.objects != NULL)
		object_free(p11mux_hmap_remove(shim.objects, h));
}

/* What to forget: the session objects of a session (0: every session; P11MUX_DROP_PRIVATE:
 * the private ones), or with tokens set the token objects, of a slot. */
struct forget {
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	int tokens;
	uint64_t *keys;
	size_t n, cap;
};

static void
collect_forget(uint64_t key, void *value, void *arg)
{
	struct forget *f = arg;
	const struct object *o = value;
	uint64_t *grown;

	if (o->slot != f->slot || ((key & P11MUX_SESSION_OBJECT) != 0) == f->tokens)
		return;
	if (!f->tokens &&
	    (f->session == P11MUX_DROP_PRIVATE ? !object_bool(o, CKA_PRIVATE, 1)
	                                       : f->session != 0 && o->session != f->session))
		return;
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 16;
		if ((grown = realloc(f->keys, f->cap * sizeof(*grown))) == NULL)
			return;
		f->keys = grown;
	}
	f->keys[f->n++] = key;
}

static void
forget_locked(struct forget *f)
{
	size_t i;

	if (shim.objects == NULL)
		return;
	p11mux_hmap_foreach(shim.objects, collect_forget, f);
	for (i = 0; i < f->n; i++)
		cache_forget_locked(f->keys[i]);
	free(f->keys);
}

void
cache_forget_session_locked(CK_SLOT_ID slot, CK_SESSION_HANDLE session)
{
	struct forget f = {slot, session, 0, NULL, 0, 0};

	forget_locked(&f);
}

void
cache_forget_token_objects_locked(CK_SLOT_ID slot)
{
	struct forget f = {slot, 0, 1, NULL, 0, 0};

	forget_locked(&f);
}

CK_RV
cache_with_object(CK_SLOT_ID slot, CK_OBJECT_HANDLE h,
                  CK_RV (*fn)(const struct object *o, void *arg), void *arg)
{
	struct object *o, *fetched = NULL;
	CK_RV rv;

	/* Fetched at most once per process and handle; afterwards the cached copy is used in
	 * place, under the lock, without copying it (this is on every signature's path). */
	for (int tries = 0; tries < 2; tries++) {
		shim_lock();
		o = p11mux_hmap_get(shim.objects, h);
		if (o != NULL) {
			rv = o->slot == slot ? fn(o, arg) : CKR_OBJECT_HANDLE_INVALID;
			shim_unlock();
			object_free(fetched);
			return rv;
		}
		shim_unlock();
		if (tries == 0 && (rv = cache_get_object(slot, h, &fetched)) != CKR_OK)
			return rv;
	}
	/* Dropped from the cache in between (a logout): use the copy just fetched. */
	rv = fetched != NULL ? fn(fetched, arg) : CKR_OBJECT_HANDLE_INVALID;
	object_free(fetched);
	return rv;
}
