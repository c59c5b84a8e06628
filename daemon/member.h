/*
 * A member of a pool: one device, driven by its own helper process (helper.c), which loads
 * the backend module for it alone. The helper has one channel per worker
 * (workers_per_member: one for a USB HSM). A request thread that wants the member waits for a
 * free channel, in arrival order, sends its operation on it and waits at most op_timeout_ms
 * for the answer; past that, or when the helper dies, the helper is killed and the member
 * goes down. The member's own thread watches an idle helper, reaps a lost one, and probes the
 * device with a fresh helper, with back-off. No lock is held across a write to a helper or a
 * wait for one.
 */
#ifndef P11MUXD_MEMBER_H
#define P11MUXD_MEMBER_H

#include <pthread.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "err.h"
#include "helper.h"
#include "latency.h"
#include "view.h"

struct pool;
struct member_config;

enum member_state {
	MEMBER_UP,       /* takes work */
	MEMBER_DRAINING, /* finishes its queue, takes no new work (administrator) */
	MEMBER_DOWN,     /* failed; probed in the background */
	MEMBER_PROBING,  /* a fresh helper is finding, logging in and checking the device */
	MEMBER_EXCLUDED, /* left out until the daemon restarts (PIN locked, PIN refused) */
};

/* One operation, as a request thread carries it to a member. */
struct job {
	uint32_t call;
	CK_MECHANISM mech; /* parameter deep-copied into param */
	uint8_t *param;
	const struct pobject *key; /* NULL for DIGEST and RANDOM */
	uint8_t *in, *sig;         /* RANDOM: inlen is the length wanted */
	size_t inlen, siglen;
	CK_RV rv;
	uint8_t *out;
	size_t outlen;
	uint64_t submitted_ns;        /* when it asked for a channel */
	uint64_t started_ns;          /* when it was sent to the helper */
	CK_OBJECT_HANDLE started_key; /* the key's handle on that member */
	int cost_helper; /* the helper died or was killed while it ran this operation */
	int alone;       /* it cost a helper before: run it with no other on the member */
	uint64_t gen;    /* the helper generation it ran on */
	/* Session objects (sobject.h): CREATE, GENERATE and GENERATE_PAIR carry templates and
	 * get what the member made (DESTROY names its object as key). pin_gen, when not 0, is
	 * the only helper generation the job may run on: a session object lives in one. */
	const struct p11mux_attrs *tmpl, *tmpl2;
	struct mobject *made[2];
	uint64_t pin_gen;
};

/* Latency buckets (upper bounds, milliseconds) of the Prometheus histogram; the last one is
 * +Inf. (The percentiles of `p11muxctl status` come from the finer window of latency.h.) */
#define LAT_NBUCKETS 16
extern const double lat_bounds_ms[LAT_NBUCKETS - 1];

struct member {
	struct pool *pool;
	size_t index;
	const struct member_config *cfg; /* module and environment */
	unsigned nworkers;               /* the helper's operation channels */

	pthread_mutex_t lock; /* protects everything below, down to the member thread's */
	pthread_cond_t work;  /* for the member thread: stop, a lost helper, a channel back */
	pthread_cond_t free;  /* for request threads: a channel free, or the member gone */
	char label[33];       /* the token's, or the configured name until it was seen */
	char serial[17];      /* "" until seen; both rewritten by each probe (member_names) */
	CK_TOKEN_INFO token;  /* as the helper saw it last */
	CK_SLOT_ID slot;      /* in the helper's module: where the next helper looks first */
	uint64_t generation;  /* bumped each time the member (re)joins */
	enum member_state state;
	char reason[160];    /* why down or excluded */
	uint64_t since_ns;   /* when the state last changed */
	uint64_t up_ns;      /* when it last joined */
	int lost;            /* the helper is lost: the member thread reaps it */
	int lost_status;     /* the reason is how the helper ended, known once it is reaped */
	unsigned queued;     /* request threads waiting for a channel */
	unsigned running;    /* channels in use */
	int exclusive;       /* an operation that runs alone is running */
	uint64_t killed_gen; /* the generation whose helper the daemon killed (UINT64_MAX: none) */
	uint64_t next_ticket, serving; /* waiting request threads go in arrival order */
	uint8_t busy[HELPER_MAX_CHANNELS];
	double service_ms; /* moving average of successful operations */
	double *svc;       /* the same, by pool object index of the key (grown as keys come) */
	size_t nsvc;
	double svc_nokey; /* ... for operations without a pool key (DIGEST, session objects) */
	uint64_t done, errors, failovers, helpers; /* helpers: started, the first included */
	unsigned lone_failures; /* ambiguous errors in a row that other members did not give */
	uint64_t lat_total[LAT_NBUCKETS]; /* since start, for the Prometheus histogram */
	double lat_sum_s;
	struct lat_window window;
	char last_error[64]; /* the last device error, and when */
	uint64_t last_error_ns;
	/* Rescans (`p11muxctl rescan`, member_rescan): the member thread runs one when asked
	 * differs from done, and signals rescanned with what it changed. */
	uint64_t rescan_asked, rescan_done;
	int retired;   /* removed from the pool by a reload (member_retire) */
	int probe_now; /* a rescan asked for a probe without the back-off */
	struct view_change rescan_chg;
	int rescan_failed;
	pthread_cond_t rescanned;
	pid_t helper_pid; /* 0: none */
	CK_MECHANISM_TYPE *mechs;
	CK_MECHANISM_INFO *infos;
	CK_ULONG nmechs;
	int stop;

	/* The helper: its control channel is the member thread's (pool_open's before the thread
	 * starts); an operation channel belongs to the request thread that marked it busy. */
	struct link link;
	unsigned probe_delay_ms;
	int wake[2]; /* a byte: stop, or the helper lost */
	pthread_t thread;
	int started;
};

/* Sets up a member named name (a serial, or a label until the device is seen), down, with no
 * helper. 0, or -1 with e filled. */
int member_init(struct member *m, struct pool *p, size_t index, const char *name,
                const struct member_config *cfg, struct p11mux_err *e);
/* Starts a helper and lets it find the token (label, serial, token info, mechanisms). CKR_OK,
 * or why not, with e filled; the helper is gone then. */
CK_RV member_open(struct member *m, struct p11mux_err *e);
/* Takes the helper's answer to INIT (the token it found: slot, token info, label, serial,
 * mechanisms) into m. CKR_OK; LINK_RV_GONE for an answer that does not decode;
 * CKR_HOST_MEMORY. member_open()'s reply decoder, apart for tests/fuzz/fuzz_hproto.c. */
CK_RV member_got_token(struct member *m, struct p11mux_msg *msg);
/* Sends the pool's PIN to the member's helper. CKR_OK, or the device's answer. */
CK_RV member_login(struct member *m, struct p11mux_err *e);
/* Reads the member's objects through its helper and appends them to *all (fingerprints not
 * yet made); one whose attributes cannot be read is appended with only its handle (unread).
 * 0, or -1 with e filled. */
int member_read_objects(struct member *m, struct mobject ***all, size_t *nall,
                        struct p11mux_err *e);
/* Ends the member's helper (after start-up failed for it). */
void member_close(struct member *m);
/* Starts the member thread: it serves an up member, probes one that is down. 0 or -1. */
int member_start(struct member *m);
/* Tells the member thread to stop, and ends a probe under way; returns at once. */
void member_stop_begin(struct member *m);
/* Stops the thread and the helper, and frees what the member holds (not the struct). */
void member_stop(struct member *m);

/* Runs job on m: waits for a free channel (time that does not count), sends the operation to
 * the helper and waits at most op_timeout_ms for its answer. job->rv is the answer, or
 * P11MUX_RV_RETRY when the member could not do it (not up, lacks the key, the device failed,
 * its helper died or was killed: then job->cost_helper says whether the helper was running
 * this operation). */
void member_run(struct member *m, struct job *job);
/* The moving average of operations with key on m (NULL: without a key); 0 when unknown.
 * Lock held. */
double member_service_locked(const struct member *m, const struct pobject *key);
/* Asks the member's thread to re-read its objects and remap the pool's view onto them
 * (view_remap: keys new to the pool are added, keys no member holds are withdrawn). Returns
 * the ticket to wait for, or 0 when the member is not up (a down member is probed at once
 * instead, and a probe remaps it). */
uint64_t member_rescan_ask(struct member *m);
/* Waits until deadline_ns for rescan ticket. 0 with *chg; 1 when the member went down
 * meanwhile; -1 when the rescan failed or did not end in time, with why. */
int member_rescan_wait(struct member *m, uint64_t ticket, uint64_t deadline_ns,
                       struct view_change *chg, char *why, size_t whylen);
/* Takes the member out of the pool for good (a reload removed it): waits at most wait_ms
 * for the operations it runs, then ends its thread and helper. The struct stays valid
 * (request threads may still look at it) until member_stop(). */
void member_retire(struct member *m, unsigned wait_ms);
/* Whether the member was retired. */
int member_retired(struct member *m);
/* Draining and resuming for administrators. 0, or -1 when the state does not allow it. */
int member_drain(struct member *m);
int member_resume(struct member *m);
/* Latency percentile q (0..1) over the last minute, in ms (within 2.5%: latency.h); -1 when
 * nothing finished in that minute. *count gets the operations of the
 * last `seconds` seconds. Lock held. */
double member_latency_locked(const struct member *m, double q, unsigned seconds, uint64_t *count);
/* Copies the member's label and serial ("" until seen) into label[33] and serial[17]: a
 * probe rewrites them under the member's lock, so other threads read them with this. */
void member_names(struct member *m, char *label, char *serial);
/* Whether name is the member's label or (once seen) its serial number. */
int member_is(struct member *m, const char *name);
/* The state's name: "up", "draining", "down", "probing", "excluded". */
const char *member_state_name(enum member_state s);

/* Results that say the device failed, not the request: the member goes down and the
 * operation may be repeated elsewhere. */
int member_device_failure(CK_RV rv);
/* Results that may be the device's fault or the input's (CKR_GENERAL_ERROR,
 * CKR_FUNCTION_FAILED, CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY): a client can provoke them with
 * a bad ciphertext, so they take no member down by themselves (dispatch.c asks a second
 * member). */
int member_ambiguous(CK_RV rv);
/* Another member did what m failed with the ambiguous rv, in generation gen: the failure was
 * m's. LONE_FAILURES_MAX of them in a row take m down. */
void member_lone_failure(struct member *m, uint64_t gen, CK_RV rv);

#define LONE_FAILURES_MAX 3

/* A job for call (mech and the data are copied; key is kept). NULL when out of memory. */
struct job *job_new(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key,
                    const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen);
void job_free(struct job *j);

#endif
