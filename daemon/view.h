/*
 * The pool's view: its objects, built from what each member holds, and the virtual handles
 * that name them. Pure: no device, no lock, no thread (unit_view tests it as unit_sched tests
 * the scheduler). The daemon reads each member's objects through its helper, hands them here,
 * and gets back the pool's objects and, for each, the member's own handle or why the member
 * is not used for it.
 */
#ifndef P11MUXD_VIEW_H
#define P11MUXD_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "err.h"
#include "hmap.h"

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
};

/* An object of the pool, the same on every member that is used for it. */
struct pobject {
	CK_OBJECT_HANDLE handle; /* virtual, derived from the object's identity */
	size_t index;            /* position in view.objects */
	CK_OBJECT_CLASS cls;
	int private;         /* CKA_PRIVATE: visible only when logged in */
	CK_ATTRIBUTE *attrs; /* as the first member holding it gave them */
	CK_RV *status;       /* CKR_OK, or e.g. CKR_ATTRIBUTE_SENSITIVE */
	size_t n;
	/* By member index; CK_INVALID_HANDLE: not used. Read and written with __atomic: a
	 * member that rejoins is remapped while requests read the array. */
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

struct view {
	CK_SLOT_ID slot;   /* part of every handle */
	const char *label; /* the pool's, for the log */
	size_t nmembers;
	struct pobject **objects;
	size_t nobjects;
	struct p11mux_hmap *by_handle;
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
 * fingerprinted), by the same rules; objects it no longer holds are not used on it. Returns
 * the number of the view's objects it holds. */
size_t view_remap(struct view *v, size_t member, const char *label, struct mobject **all,
                  size_t nall);
/* Frees the view's objects (not the view struct). */
void view_free(struct view *v);

/* The object with virtual handle h, or NULL. */
const struct pobject *view_object(const struct view *v, CK_OBJECT_HANDLE h);
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
