#include "scheduler.h"

/* Expected completion time of one more operation on candidate c. */
static double
cost(const struct sched_candidate *c)
{
	unsigned w = c->workers ? c->workers : 1;
	/* A member running w operations at once finishes the new one after
	 * ceil((load + 1) / w) service times. */
	unsigned waves = (c->load + w) / w;

	return waves * (c->service_ms > 0 ? c->service_ms : 1.0);
}

int
sched_pick(enum sched_policy policy, const struct sched_candidate *c, size_t n, unsigned rr)
{
	double best = -1;
	size_t i, k;

	for (k = 0; k < n; k++) {
		i = (rr + k) % n;
		if (!c[i].eligible)
			continue;
		if (policy == SCHED_ROUND_ROBIN)
			return (int)i;
		if (best < 0 || cost(&c[i]) < best)
			best = cost(&c[i]);
	}
	if (best < 0)
		return -1;
	/* Costs within a quarter (or a millisecond) of the best count as equal and are taken in
	 * turn, so that an idle pool spreads its work, and neither timing noise nor a moving
	 * average skewed by a mix of fast and slow mechanisms pins everything on one member. */
	for (k = 0; k < n; k++) {
		i = (rr + k) % n;
		if (c[i].eligible &&
		    (cost(&c[i]) <= best * SCHED_TIE || cost(&c[i]) <= best + SCHED_TIE_MS))
			return (int)i;
	}
	return -1;
}

double
sched_ewma(double avg, double sample_ms)
{
	if (avg <= 0)
		return sample_ms;
	return avg + (sample_ms - avg) / 8;
}
