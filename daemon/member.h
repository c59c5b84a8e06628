/*
 * A member of a pool: one device, run as the serial device it is. Each member has its own
 * queue and its own worker threads (one for a USB HSM), so that no pool-wide lock is held
 * across a device call and a hung device blocks nothing but its own queue.
 */
#ifndef P11MUXD_MEMBER_H
#define P11MUXD_MEMBER_H

#include <pthread.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

struct pool;
struct pobject;

enum member_state {
	MEMBER_UP,       /* takes work */
	MEMBER_DRAINING, /* finishes its queue, takes no new work (administrator) */
	MEMBER_DOWN,     /* failed; probed in the background */
	MEMBER_PROBING,  /* being reopened, logged in and checked */
	MEMBER_EXCLUDED, /* left out until the daemon restarts (PIN locked, PIN refused) */
};

/* One private-key (or public-key, or digest) operation waiting for, or on, a member. */
struct job {
	struct job *next;
	uint32_t call;
	CK_MECHANISM mech; /* parameter deep-copied into param */
	uint8_t *param;
	const struct pobject *key; /* NULL for DIGEST */
	uint8_t *in, *sig;         /* copies: the requester may give up and leave */
	size_t inlen, siglen;
	CK_RV rv;
	uint8_t *out;
	size_t outlen;
	uint64_t submitted_ns; /* when it was queued */
	uint64_t started_ns;   /* when a worker took it (0: still queued) */
	int done;              /* result ready */
	int abandoned;         /* the requester left; the worker frees the job */
	pthread_cond_t cond;   /* signalled when done */
	struct member *m;      /* where it is queued or running */
};

/* Latency buckets (upper bounds, milliseconds) of the per-member histograms; the last one
 * is +Inf. Shared by `p11muxctl status` (percentiles over the last minute) and the
 * Prometheus histogram. */
#define LAT_NBUCKETS 16
extern const double lat_bounds_ms[LAT_NBUCKETS - 1];

/* Operations finished in each of the last 60 seconds, by latency bucket. */
struct lat_window {
	uint64_t second[60]; /* which second (monotonic) a slot holds */
	uint32_t count[60][LAT_NBUCKETS];
};

struct member {
	struct pool *pool;
	size_t index;
	char label[33];
	char serial[17];
	CK_TOKEN_INFO token;
	unsigned nworkers;

	pthread_mutex_t lock;     /* protects everything below */
	pthread_cond_t work;      /* jobs queued, or state changed */
	CK_SLOT_ID slot;          /* in the backend; may change after re-insertion */
	CK_SESSION_HANDLE anchor; /* always open while up, so that the login lasts */
	uint64_t generation;      /* bumped each time the member (re)joins */
	enum member_state state;
	char reason[160];  /* why down or excluded */
	uint64_t since_ns; /* when the state last changed */
	struct job *head, *tail;
	unsigned queued, running;
	double service_ms; /* moving average of successful operations */
	double *svc;       /* the same, by pool object index of the key (last: no key) */
	size_t nsvc;
	uint64_t done, errors, failovers;
	uint64_t lat_total[LAT_NBUCKETS]; /* since start, for the Prometheus histogram */
	double lat_sum_s;
	struct lat_window window;
	char last_error[64]; /* the last device error, and when */
	uint64_t last_error_ns;
	int prober;              /* a probe thread is running */
	unsigned probe_delay_ms; /* next back-off */
	int stop;                /* workers exit */
	int stuck;               /* a worker could not be joined: keep the memory */
	pthread_t *workers;
	CK_MECHANISM_TYPE *mechs;
	CK_MECHANISM_INFO *infos;
	CK_ULONG nmechs;
};

/* Starts the member's workers. 0, or -1 if no thread could start. */
int member_start(struct member *m);
/* Stops the workers (after their current device call) and frees the member's memory. */
void member_stop(struct member *m);
/* Queues job on m (lock not held). */
void member_submit(struct member *m, struct job *job);
/* Takes m out of service with a reason, fails its queued jobs (their requesters try
 * elsewhere) and starts a probe. state is MEMBER_DOWN or MEMBER_EXCLUDED. */
void member_fail(struct member *m, enum member_state state, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Draining and resuming for administrators. 0, or -1 when the state does not allow it. */
int member_drain(struct member *m);
int member_resume(struct member *m);
/* Opens the anchor session, logs in, reads the mechanisms. Lock not held. */
CK_RV member_login(struct member *m);
/* Latency percentile q (0..1) over the last minute, in ms (the upper bound of the bucket
 * it falls in); -1 when nothing finished in that minute. *count gets the operations of the
 * last `seconds` seconds. Lock held. */
double member_latency_locked(const struct member *m, double q, unsigned seconds, uint64_t *count);
/* The state's name: "up", "draining", "down", "probing", "excluded". */
const char *member_state_name(enum member_state s);

/* Results that say the device failed, not the request: the member goes down and the
 * operation may be repeated elsewhere. */
int member_device_failure(CK_RV rv);

struct job *job_new(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key,
                    const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen);
void job_free(struct job *j);

#endif
