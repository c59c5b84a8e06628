/*
 * Choosing the member for an operation. Pure functions over a snapshot of the members'
 * load, so that the policy can be tested without devices.
 */
#ifndef P11MUXD_SCHEDULER_H
#define P11MUXD_SCHEDULER_H

#include <stddef.h>

enum sched_policy { SCHED_LEAST_LOADED, SCHED_ROUND_ROBIN };

#define SCHED_TIE    1.25
#define SCHED_TIE_MS 1.0 /* noise in sub-millisecond operations is no reason to prefer */

struct sched_candidate {
	int eligible;      /* up, holds the key, not tried yet for this operation */
	unsigned load;     /* operations queued and running on the member */
	unsigned workers;  /* operations the member runs at once (1 for a USB HSM) */
	double service_ms; /* moving average of the member's service time */
};

/*
 * Index of the member to use, or -1 when none is eligible.
 * SCHED_LEAST_LOADED: the least expected completion time, (load + 1) / workers rounded up,
 * times the service time; candidates within SCHED_TIE times or SCHED_TIE_MS of the least are
 * ties, and ties go to the first candidate at or after position rr.
 * SCHED_ROUND_ROBIN: the first eligible candidate at or after position rr.
 */
int sched_pick(enum sched_policy policy, const struct sched_candidate *c, size_t n, unsigned rr);

/* The moving average after one more observation (weight 1/8; the first observation is
 * taken as it is when avg is 0). */
double sched_ewma(double avg, double sample_ms);

#endif
