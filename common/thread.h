/* Clocks and locks for the daemon and the shim: a monotonic clock, lock wrappers that abort
 * on failure (a pthread error is a bug, never something to ignore), and condition variables
 * whose timed waits take monotonic deadlines. */
#ifndef P11MUX_THREAD_H
#define P11MUX_THREAD_H

#include <pthread.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t p11mux_now_ns(void);

/* pthread_mutex_lock/unlock that abort() on failure. */
void p11mux_lock(pthread_mutex_t *mu);
void p11mux_unlock(pthread_mutex_t *mu);

/* Initialises c for p11mux_cond_wait_until(); aborts on failure. */
void p11mux_cond_init(pthread_cond_t *c);
/* Waits on c (mu held) until signalled or until the monotonic time deadline_ns. Returns 0,
 * or ETIMEDOUT once the deadline has passed. */
int p11mux_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, uint64_t deadline_ns);

#endif
