/*
 * A pool: several tokens (members) holding the same keys, shown to clients as one slot. The
 * pool's objects and their virtual handles (view.h) are built once at start-up and never
 * change, so request threads read them without a lock; each member has its own lock, its own
 * thread and its own helper process (member.h).
 *
 * pool.c: the pool's life (start-up, the login order, shut-down); dispatch.c: running an
 * operation on the member that will finish it soonest.
 */
#ifndef P11MUXD_POOL_H
#define P11MUXD_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "config.h"
#include "err.h"
#include "proto.h"

#include "member.h"
#include "scheduler.h"
#include "guard.h"
#include "view.h"

/* Internal result: this member cannot do it (out of service, or lacks the key now); try
 * another. Never sent to a client. */
#define P11MUX_RV_RETRY (CKR_VENDOR_DEFINED | 0x5031UL)

/* Members of one pool, at most. */
#define P11MUX_POOL_MAX_MEMBERS 64

/* Operations that cost two helpers (dispatch.c): refused at once for QUARANTINE_S seconds, so
 * that a client repeating one cannot take every member's helper down in turn. */
#define QUARANTINE_SIZE 64
#define QUARANTINE_S    600
struct quarantine {
	pthread_mutex_t lock; /* protects the entries */
	struct {
		uint8_t digest[32]; /* SHA-256 of the call, mechanism, key and data */
		uint64_t until_ns;
	} e[QUARANTINE_SIZE];
	size_t next;       /* the entry to replace next */
	atomic_uint count; /* entries ever added: 0 spares every lookup */
};

struct pool {
	size_t index;
	const struct pool_config *cfg;
	const char *exe; /* what helpers are started from (p11muxd itself) */
	int use_syslog;  /* helpers log to syslog as the daemon does */
	char label[33];
	struct p11mux_slot slot;     /* what shims see; mechs/infos owned */
	struct member_config plain;  /* members named by a string: the pool's module */
	struct member_config *found; /* members found by discovery (owned tokens) */
	struct member *members;      /* every member, present or not */
	size_t nmembers;
	struct view view;
	char *pin; /* the pool's PIN, from pin_file */
	size_t pinlen;
	struct pin_guard guard; /* the PIN counter and the tickets */
	int has_rng;
	struct quarantine quarantine;
	enum sched_policy policy;
	atomic_uint rr;  /* rotates the start of the member scan */
	int pin_refused; /* a member refused the PIN, now or at an earlier start (guard.h) */
};

/* Opens the pool described by cfg: finds its members' tokens (each through its own helper,
 * started from exe), logs in to them, reads their objects and builds the pool's view. On
 * failure writes e and returns -1; the pool must still be given to pool_close(). */
int pool_open(struct pool *p, size_t index, const struct pool_config *cfg, const char *exe,
              int use_syslog, struct p11mux_err *e);
/* Starts the members' threads; members that are not up are probed. 0 or -1. */
int pool_start(struct pool *p);
/* Stops the members and their helpers, and frees the pool's memory (not the struct). */
void pool_close(struct pool *p);
/* The object with virtual handle h, or NULL. */
const struct pobject *pool_object(const struct pool *p, CK_OBJECT_HANDLE h);
/* Runs a SIGN, VERIFY, ENCRYPT, DECRYPT or DIGEST call on the member that will finish it
 * soonest among those that hold key (NULL for DIGEST), retrying on other members (up to
 * max_attempts) when a device fails, does not answer within op_timeout_ms, or its helper
 * dies; an operation whose attempt cost a helper is tried on one more member at most. *out
 * is malloc()ed (NULL for VERIFY). CKR_DEVICE_ERROR when no member could do it. */
CK_RV pool_crypto(struct pool *p, uint32_t call, CK_MECHANISM *mech, const struct pobject *key,
                  const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen, uint8_t **out,
                  size_t *outlen);
/* Session objects (sobject.h). pool_make runs a CREATE, GENERATE or GENERATE_PAIR job on the
 * member that is least busy (another when that one is out of service); *idx and j->gen say
 * where it was made. pool_pinned_crypto runs an operation with session object key on member
 * idx, on helper generation gen only: CKR_DEVICE_REMOVED when that helper is gone (the object
 * went with it); an input that costs the helper is refused for QUARANTINE_S seconds at once
 * (there is no second member to ask). pool_pinned_destroy destroys it there (CKR_DEVICE_REMOVED:
 * nothing left to destroy). */
CK_RV pool_make(struct pool *p, struct job *j, size_t *idx);
CK_RV pool_pinned_crypto(struct pool *p, size_t idx, uint64_t gen, uint32_t call,
                         CK_MECHANISM *mech, const struct pobject *key, const uint8_t *in,
                         size_t inlen, const uint8_t *sig, size_t siglen, uint8_t **out,
                         size_t *outlen);
CK_RV pool_pinned_destroy(struct pool *p, size_t idx, uint64_t gen, const struct pobject *key);
/* The pool's configuration and scheduling policy: a reload replaces them while other
 * threads read them. */
const struct pool_config *pool_cfg(const struct pool *p);
enum sched_policy pool_policy(const struct pool *p);
/* Members so far, retired ones included (a reload adds some; indexes are not reused): what
 * threads other than the pool's changer read. */
size_t pool_nmembers(const struct pool *p);
/* Adds a member while the pool runs (a reload or a rescan): it starts down and is probed at
 * once (slot: where its helper looks first). Only one thread changes a pool at a time
 * (live.c). 0, or -1 with e. */
int pool_add_live(struct pool *p, const char *name, const char *serial, CK_SLOT_ID slot,
                  const struct member_config *mc, struct p11mux_err *e);
/* For a pool of every token present (no members list): adds the tokens its module shows now
 * that are not members yet; *added says how many. 0, or -1 with e. */
int pool_find_new(struct pool *p, size_t *added, struct p11mux_err *e);
/* Fills out with random bytes from a member's RNG. */
CK_RV pool_random(struct pool *p, uint8_t *out, size_t len);
/* Logs one line per member: operations done and device errors. */
void pool_log_stats(const struct pool *p);
/* Lists the tokens that module shows, through a helper started from exe with env added to its
 * environment (NULL-ended; NULL: none), waiting timeout_ms at most: C_Initialize, the slot
 * list and each token's info, never a session or a login. *v (malloc'ed, *n entries) as
 * pool_got_tokens() gives them. 0, or -1 with e. */
int pool_discover(const char *exe, const char *module, char *const *env, int use_syslog,
                  unsigned timeout_ms, struct p11mux_slot **v, size_t *n, struct p11mux_err *e);
/* Takes a discovery helper's answer to TOKENS: *v (malloc'ed, *n entries) gets each token's
 * slot ID, slot info and token info, no mechanisms. CKR_OK; LINK_RV_GONE for an answer that
 * does not decode; CKR_HOST_MEMORY. The pool's reply decoder, apart for
 * tests/fuzz/fuzz_hproto.c. */
CK_RV pool_got_tokens(struct p11mux_msg *m, struct p11mux_slot **v, size_t *n);

#endif
