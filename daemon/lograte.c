#include "lograte.h"
#include "log.h"
#include "thread.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void
lograte_init(struct lograte *r, const char *what)
{
	r->what = what;
	r->second = 0;
	r->lines = 0;
	r->held = 0;
	r->held_since = 0;
	r->last[0] = '\0';
	if (pthread_mutex_init(&r->lock, NULL) != 0)
		abort();
}

void
lograte_destroy(struct lograte *r)
{
	pthread_mutex_destroy(&r->lock);
}

/* Starts counting second sec if it is a new one; returns how many lines were held back
 * before it (since when, and the last of them into last), for a summary. Lock held. */
static unsigned long
new_second_locked(struct lograte *r, uint64_t sec, uint64_t *since, char *last)
{
	unsigned long held = 0;

	if (sec != r->second) {
		held = r->held;
		*since = r->held_since;
		memcpy(last, r->last, sizeof(r->last));
		r->held = 0;
		r->second = sec;
		r->lines = 0;
	}
	return held;
}

static void
summary(const struct lograte *r, unsigned long held, uint64_t since, uint64_t now, const char *last)
{
	if (held > 0)
		log_warn("%lu more %s in the last %llu s, not logged one by one; the last: %s",
		         held, r->what, (unsigned long long)(now - since), last);
}

/* The second by the wall clock, as the log's time stamps count them: "5 lines a second" holds
 * for the seconds a reader of the log sees. */
static uint64_t
now_s(void)
{
	return (uint64_t)time(NULL);
}

void
lograte_warn(struct lograte *r, const char *fmt, ...)
{
	uint64_t sec = now_s(), since = 0;
	char msg[sizeof(r->last)], last[sizeof(r->last)];
	unsigned long held;
	va_list ap;
	int show;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p11mux_lock(&r->lock);
	held = new_second_locked(r, sec, &since, last);
	if ((show = r->lines < LOGRATE_PER_S) != 0) {
		r->lines++;
	} else {
		if (r->held++ == 0)
			r->held_since = sec;
		memcpy(r->last, msg, sizeof(r->last));
	}
	p11mux_unlock(&r->lock);
	summary(r, held, since, sec, last);
	if (show)
		log_warn("%s", msg);
}

int
lograte_flush(struct lograte *r)
{
	uint64_t sec = now_s(), since = 0;
	char last[sizeof(r->last)];
	unsigned long held;
	int pending;

	p11mux_lock(&r->lock);
	held = new_second_locked(r, sec, &since, last);
	pending = r->held > 0;
	p11mux_unlock(&r->lock);
	summary(r, held, since, sec, last);
	return pending;
}
