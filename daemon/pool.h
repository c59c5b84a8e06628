/*
 * A pool: several tokens (members) holding the same keys, shown to clients as one slot.
 * The pool's objects and their virtual handles are built once at start-up and never change,
 * so request threads read them without a lock; per-member state has its own lock.
 */
#ifndef P11MUXD_POOL_H
#define P11MUXD_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "backend.h"
#include "config.h"
#include "hmap.h"
#include "proto.h"

#include "member.h"
#include "scheduler.h"

/* Internal result: this member cannot do it (out of service, or lacks the key now); try
 * another. Never sent to a client. */
#define P11MUX_RV_RETRY (CKR_VENDOR_DEFINED | 0x5031UL)

/* What a member holds of a pool object. */
#define HOLD_LACKS     0
#define HOLD_SAME      1
#define HOLD_DIFFERENT 2 /* same class, ID and label, other key material */

/* Members of one pool, at most. */
#define P11MUX_POOL_MAX_MEMBERS 64

/* An object of the pool, the same on every member that is used for it. */
struct pobject {
	CK_OBJECT_HANDLE handle; /* virtual, derived from the object's identity */
	size_t index;            /* position in pool.objects */
	CK_OBJECT_CLASS cls;
	int private;         /* CKA_PRIVATE: visible only when logged in */
	CK_ATTRIBUTE *attrs; /* as read from the first member holding it */
	CK_RV *status;       /* CKR_OK, or e.g. CKR_ATTRIBUTE_SENSITIVE */
	size_t n;
	/* By member index; CK_INVALID_HANDLE: not used. Read and written with __atomic: a
	 * probe remaps a member while requests read the array. */
	CK_OBJECT_HANDLE *backend;
	/* By member index: HOLD_*; for `p11muxctl keys`. Written at start-up and by a probe
	 * of that member. */
	uint8_t *holding;
	CK_KEY_TYPE ktype;
	uint8_t *pub; /* key material or value that identifies it */
	size_t publen;
	char desc[96]; /* for the log: class, label, id */
};

struct pool {
	size_t index;
	const struct pool_config *cfg;
	struct backend *be;
	char label[33];
	struct p11mux_slot slot; /* what shims see; mechs/infos owned */
	struct member *members;  /* every configured member, present or not */
	size_t nmembers;
	struct pobject **objects;
	size_t nobjects;
	struct p11mux_hmap *by_handle;
	char *pin; /* the pool's PIN, from pin_file */
	size_t pinlen;
	int has_rng;
	enum sched_policy policy;
	atomic_uint rr; /* rotates the start of the member scan */
};

/* Opens the pool described by cfg: finds and logs in to its members, reads their objects
 * and builds the pool's view. On failure writes a message to err and returns -1; the pool
 * must still be given to pool_close(). */
int pool_open(struct pool *p, size_t index, const struct pool_config *cfg,
              struct backend **backends, struct p11mux_err *e);
/* Starts the members' workers, and probes for the members that are not up. */
int pool_start(struct pool *p);
/* Stops the workers, closes backend sessions and frees the pool's memory (not the pool
 * struct itself). Returns 1 when a thread stuck in a hung device call keeps the memory (and
 * the backend module) in use, else 0. */
int pool_close(struct pool *p);
/* Re-reads a member's objects and maps the pool's objects onto them (after the member came
 * back). CKR_OK, or an error with a reason in why. */
CK_RV pool_remap_member(struct pool *p, struct member *m, struct p11mux_err *e);
/* The object with virtual handle h, or NULL. */
const struct pobject *pool_object(const struct pool *p, CK_OBJECT_HANDLE h);
/* Whether the object has every attribute of the template with the same value. */
int pool_object_matches(const struct pobject *o, const CK_ATTRIBUTE *tmpl, size_t n);
/* Runs a SIGN, VERIFY, ENCRYPT, DECRYPT or DIGEST call on the member that will finish it
 * soonest among those that hold key (NULL for DIGEST), retrying on other members (up to
 * max_attempts) when a device fails or does not answer within op_timeout_ms. *out is
 * malloc()ed (NULL for VERIFY). CKR_DEVICE_ERROR when no member could do it. */
CK_RV pool_crypto(struct pool *p, uint32_t call, CK_MECHANISM *mech, const struct pobject *key,
                  const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen, uint8_t **out,
                  size_t *outlen);
/* Fills out with random bytes from a member's RNG. */
CK_RV pool_random(struct pool *p, uint8_t *out, size_t len);
/* Logs one line per member: operations done and device errors. */
void pool_log_stats(const struct pool *p);

#endif
