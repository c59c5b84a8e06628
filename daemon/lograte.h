/*
 * Log lines that a client can provoke (refused connections, time-outs, control clients), at
 * most LOGRATE_PER_S a second of each kind: the rest are counted and summed up in one line
 * once the second is over, so that a flood of connections does not flood the log.
 */
#ifndef P11MUXD_LOGRATE_H
#define P11MUXD_LOGRATE_H

#include <pthread.h>
#include <stdint.h>

#define LOGRATE_PER_S 5

struct lograte {
	const char *what;     /* the kind of line, for the summary: "refused connections" */
	pthread_mutex_t lock; /* protects the counts below */
	uint64_t second;      /* the second (monotonic clock) that lines counts in */
	unsigned lines;       /* lines logged in that second */
	unsigned long held;   /* lines held back since the last summary */
	uint64_t held_since;  /* the second of the first of them */
	char last[256];       /* the last of them, for the summary */
};

/* Starts with nothing counted; what (not copied) names the kind of line in summaries. */
void lograte_init(struct lograte *r, const char *what);
void lograte_destroy(struct lograte *r);
/* Logs a warning, unless LOGRATE_PER_S lines of this kind were logged in this second already;
 * then it only counts it (and keeps it as the last one held back). A summary of lines held
 * back in an earlier second, with the last of them, comes first. */
void lograte_warn(struct lograte *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs the summary of lines held back in an earlier second, if any. Returns 1 while lines
 * are held back (call it again a second later), else 0. */
int lograte_flush(struct lograte *r);

#endif
