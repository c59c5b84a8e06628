/*
 * The pool's view: its objects, built from what each member holds, and the virtual handles
 * that name them. Pure: no device, no lock, no thread (unit_view tests it as unit_sched tests
 * the scheduler). The daemon reads each member's objects through its helper, hands them here,
 * and gets back the pool's objects and, for each, the member's own handle or why the member
 * is not used for it.
 */
#ifndef P11MUXD_VIEW_H
#define P11MUXD_VIEW_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "err.h"
#include "hmap.h"

/* Members a view can have over its life (a reload adds some; indexes are not reused): the
 * size of every object's per-member arrays. */
#define VIEW_MAX_MEMBERS 64

/* pobject.index of an object that is not the view's (a session object, sobject.h). */
#define POBJECT_NO_INDEX ((size_t)-1)

/* What a member holds of a pool object. */
#define HOLD_LACKS     0
#define HOLD_SAME      1
#define HOLD_DIFFERENT 2 /* same class, ID and label, other key material */

/* An object as one member holds it, before it is matched. */
struct mobject {
	size_t member;      /* the member's index */
	CK_OBJECT_HANDLE h; /* the member's handle */
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE ktype;   /* (CK_ULONG)-1 for non-keys */
	CK_ATTRIBUTE *attrs; /* values malloc'ed */
	CK_RV *status;       /* CKR_OK, or CKR_ATTRIBUTE_SENSITIVE (no value) */
	size_t n;
	uint8_t *pub; /* what identifies the key material (mobjects_fingerprint) */
	size_t publen;
	int used;
	/* Listed by the member, but its attributes could not be read: only h is known. A
	 * remap keeps what the member held under that handle rather than withdraw it. */
	int unread;
};

/* An object of the pool, the same on every member that is used for it. */
struct pobject {
	CK_OBJECT_HANDLE handle; /* virtual, derived from the object's identity */
	size_t index;            /* position in view.objects; POBJECT_NO_INDEX: none */
	CK_OBJECT_CLASS cls;
	int private; /* CKA_PRIVATE: visible only when logged in */
	/* No member holds it any more (the last one that did was rescanned without it): hidden
	 * from searches, its handle invalid, until a member holds it again. __atomic. */
	int withdrawn;
	CK_ATTRIBUTE *attrs; /* as the first member holding it gave them */
	CK_RV *status;       /* CKR_OK, or e.g. CKR_ATTRIBUTE_SENSITIVE */
	size_t n;
	/* By member index (VIEW_MAX_MEMBERS entries); CK_INVALID_HANDLE: not used. Read and
	 * written with __atomic: a member that rejoins or is rescanned is remapped while
	 * requests read the array. */
	CK_OBJECT_HANDLE *backend;
	/* By member index: HOLD_*; for `p11muxctl keys`. Written with __atomic too. */
	uint8_t *holding;
	CK_KEY_TYPE ktype;
	uint8_t *pub; /* key material or value that identifies it */
	size_t publen;
	char desc[96]; /* for the log: class, label, id */
};

/* A member as the view sees it. */
struct view_member {
	const char *label;
	int up; /* its objects were read: one it lacks is worth a warning */
};

/*
 * The view changes while requests read it: a probe or a rescan (view_remap) adds the objects
 * a member holds that the pool did not know, and withdraws those no member holds any more. An
 * object is never freed before the view: requests and jobs keep pointers to it without a
 * lock. Readers take the array and the handle map with view_objects() and view_object(); a
 * change publishes a new array (when the old one is full) or a new map, and keeps the old
 * ones until view_free(), so that a reader's copy stays valid.
 */
struct view {
	CK_SLOT_ID slot;   /* part of every handle */
	const char *label; /* the pool's, for the log */
	size_t nmembers;   /* grows when a reload adds members; __atomic */
	struct pobject **objects;
	size_t nobjects, cap; /* nobjects: __atomic, published after the array */
	struct p11mux_hmap *by_handle;
	uint64_t version;     /* bumped when objects come, go or come back; __atomic */
	pthread_mutex_t lock; /* serialises changes (view_remap, view_member_gone) */
	int built;            /* view_build ran: the lock exists */
	void **retired;       /* replaced arrays (free) and maps (p11mux_hmap_free) */
	uint8_t *retired_map; /* retired[i] is a map */
	size_t nretired;
};

/* What a remap changed. */
struct view_change {
	size_t held;      /* objects the member holds */
	size_t added;     /* objects new to the pool */
	size_t withdrawn; /* objects no member holds any more */
	size_t revived;   /* withdrawn objects a member holds again */
};

/* A member object; takes attrs and status (malloc'ed, n entries). NULL when out of memory
 * (then they are freed). */
struct mobject *mobject_new(size_t member, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
                            CK_KEY_TYPE ktype, CK_ATTRIBUTE *attrs, CK_RV *status, size_t n);
void mobject_free(struct mobject *o);
/* Works out what identifies each object's key material or content: RSA modulus and exponent,
 * the EC point (for an EC private key without one, from the public key with the same CKA_ID
 * on that member), or the value of certificates and data; empty when nothing is readable.
 * 0, or -1 when out of memory. */
int mobjects_fingerprint(struct mobject **all, size_t nall);

/* Builds the view from every member's objects (fingerprinted). Objects of the same class,
 * CKA_ID, label and key type are one pool object; among their variants (key material) the one
 * most members hold wins (a tie: the member listed first), and a member holding another
 * variant, or none, is not used for it, with a line in the log. members has v->nmembers
 * entries. 0, or -1 with e filled. */
int view_build(struct view *v, const struct view_member *members, struct mobject **all, size_t nall,
               struct p11mux_err *e);
/* Maps the view's objects onto what member (index, label) holds now (its objects,
 * fingerprinted), by the same rules; objects it no longer holds are not used on it. Its
 * objects that no pool object is named as are added to the view (used on it alone until the
 * other members are remapped); objects no member holds any more are withdrawn, and come back
 * when one does. Safe while requests read the view. *chg says what changed. 0, or -1 when
 * out of memory (the objects new to the pool are left out then; the rest is done). */
int view_remap(struct view *v, size_t member, const char *label, struct mobject **all, size_t nall,
               struct view_change *chg);
/* Forgets what member holds (it left the pool): objects only it held are withdrawn. Returns
 * how many. */
size_t view_member_gone(struct view *v, size_t member);
/* The current objects: *n of them. Valid until view_free(). */
struct pobject *const *view_objects(const struct view *v, size_t *n);
/* The view's version: changes whenever objects come, go or come back. */
uint64_t view_version(const struct view *v);
/* Frees the view's objects (not the view struct). */
void view_free(struct view *v);

/* The object with virtual handle h, or NULL (also when it is withdrawn). */
const struct pobject *view_object(const struct view *v, CK_OBJECT_HANDLE h);
/* Whether the object is withdrawn (no member holds it any more). */
int pobject_withdrawn(const struct pobject *o);
/* Whether the object has every attribute of the template with the same value. */
int pobject_matches(const struct pobject *o, const CK_ATTRIBUTE *tmpl, size_t n);
/* The object's key material (an RSA modulus, an EC point) or value: *p and *len, or 0 when
 * unknown. */
int pobject_material(const struct pobject *o, const uint8_t **p, size_t *len);
/* FNV-1a, 64-bit, continuing from h over n bytes (0xcbf29ce484222325 to start). */
uint64_t view_fnv(uint64_t h, const void *p, size_t n);
/* Whether attribute t of the object is a CK_BBOOL, and its value (dflt when absent). */
int pobject_bool(const struct pobject *o, CK_ATTRIBUTE_TYPE t, int dflt);

#endif
