#include "thread.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

uint64_t
p11mux_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
p11mux_lock(pthread_mutex_t *mu)
{
	if (pthread_mutex_lock(mu) != 0)
		abort();
}

void
p11mux_unlock(pthread_mutex_t *mu)
{
	if (pthread_mutex_unlock(mu) != 0)
		abort();
}

void
p11mux_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;

	if (pthread_condattr_init(&a) != 0 || pthread_condattr_setclock(&a, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(c, &a) != 0)
		abort();
	pthread_condattr_destroy(&a);
}

int
p11mux_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, uint64_t deadline_ns)
{
	struct timespec until;
	int r;

	if (p11mux_now_ns() >= deadline_ns)
		return ETIMEDOUT;
	until.tv_sec = (time_t)(deadline_ns / 1000000000u);
	until.tv_nsec = (long)(deadline_ns % 1000000000u);
	r = pthread_cond_timedwait(c, mu, &until);
	if (r != 0 && r != ETIMEDOUT)
		abort();
	return r;
}
