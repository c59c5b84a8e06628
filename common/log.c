#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

/* Set once at start-up, before threads exist; read-only afterwards. */
static enum p11mux_log_level max_level = P11MUX_LOG_INFO;
static int use_syslog;
static char name[64] = "p11muxd";

void
p11mux_log_set_level(enum p11mux_log_level level)
{
	max_level = level;
}

void
p11mux_log_set_name(const char *n)
{
	snprintf(name, sizeof(name), "%s", n);
}

void
p11mux_log_syslog(const char *ident)
{
	openlog(ident, LOG_PID, LOG_DAEMON);
	use_syslog = 1;
}

/* The last error logged, for a daemon that fails to start in the background: the command
 * that started it prints it. */
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[1024];

void
p11mux_log_last_error(char *dst, size_t n)
{
	pthread_mutex_lock(&last_lock);
	snprintf(dst, n, "%s", last_error);
	pthread_mutex_unlock(&last_lock);
}

/* Whether stderr is systemd's journal stream ($JOURNAL_STREAM names its device and inode,
 * systemd.exec(5)): then each line carries its priority as "<N>", which journald takes, and no
 * timestamp of ours (the journal has its own). Decided once; helpers inherit both. */
static int
to_journal(void)
{
	static int journal = -1;
	unsigned long long dev, ino;
	const char *e;
	struct stat st;

	if (journal < 0)
		journal = (e = getenv("JOURNAL_STREAM")) != NULL &&
		          sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
		          (unsigned long long)st.st_dev == dev &&
		          (unsigned long long)st.st_ino == ino;
	return journal;
}

void
p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char msg[1024], ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (level == P11MUX_LOG_ERROR) {
		pthread_mutex_lock(&last_lock);
		snprintf(last_error, sizeof(last_error), "%s", msg);
		pthread_mutex_unlock(&last_lock);
	}
	if (use_syslog) {
		syslog(prio[level], "%s", msg);
		return;
	}
	if (to_journal()) {
		fprintf(stderr, "<%d>%s %s: %s\n", prio[level], name, names[level], msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line so that lines of concurrent threads do not interleave. */
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", ts, now.tv_nsec / 1000000, name, names[level],
	        msg);
}

const char *
p11mux_rv_name(unsigned long rv)
{
	static __thread char other[32];

	switch (rv) {
#define N(x)                                                                                       \
	case x:                                                                                    \
		return #x;
		N(CKR_OK)
		N(CKR_CANCEL)
		N(CKR_HOST_MEMORY)
		N(CKR_SLOT_ID_INVALID)
		N(CKR_GENERAL_ERROR)
		N(CKR_FUNCTION_FAILED)
		N(CKR_ARGUMENTS_BAD)
		N(CKR_ATTRIBUTE_SENSITIVE)
		N(CKR_ATTRIBUTE_TYPE_INVALID)
		N(CKR_ATTRIBUTE_VALUE_INVALID)
		N(CKR_DATA_INVALID)
		N(CKR_DATA_LEN_RANGE)
		N(CKR_DEVICE_ERROR)
		N(CKR_DEVICE_MEMORY)
		N(CKR_DEVICE_REMOVED)
		N(CKR_ENCRYPTED_DATA_INVALID)
		N(CKR_ENCRYPTED_DATA_LEN_RANGE)
		N(CKR_FUNCTION_NOT_SUPPORTED)
		N(CKR_KEY_HANDLE_INVALID)
		N(CKR_KEY_SIZE_RANGE)
		N(CKR_KEY_TYPE_INCONSISTENT)
		N(CKR_KEY_FUNCTION_NOT_PERMITTED)
		N(CKR_MECHANISM_INVALID)
		N(CKR_MECHANISM_PARAM_INVALID)
		N(CKR_OBJECT_HANDLE_INVALID)
		N(CKR_OPERATION_ACTIVE)
		N(CKR_OPERATION_NOT_INITIALIZED)
		N(CKR_PIN_INCORRECT)
		N(CKR_PIN_LEN_RANGE)
		N(CKR_PIN_LOCKED)
		N(CKR_SESSION_CLOSED)
		N(CKR_SESSION_HANDLE_INVALID)
		N(CKR_SESSION_READ_ONLY)
		N(CKR_SIGNATURE_INVALID)
		N(CKR_SIGNATURE_LEN_RANGE)
		N(CKR_TEMPLATE_INCOMPLETE)
		N(CKR_TEMPLATE_INCONSISTENT)
		N(CKR_TOKEN_NOT_PRESENT)
		N(CKR_TOKEN_NOT_RECOGNIZED)
		N(CKR_TOKEN_WRITE_PROTECTED)
		N(CKR_USER_ALREADY_LOGGED_IN)
		N(CKR_USER_NOT_LOGGED_IN)
		N(CKR_USER_PIN_NOT_INITIALIZED)
		N(CKR_USER_TYPE_INVALID)
		N(CKR_BUFFER_TOO_SMALL)
		N(CKR_CRYPTOKI_NOT_INITIALIZED)
		N(CKR_CRYPTOKI_ALREADY_INITIALIZED)
		N(CKR_RANDOM_SEED_NOT_SUPPORTED)
		N(CKR_RANDOM_NO_RNG)
		N(CKR_ATTRIBUTE_READ_ONLY)
		N(CKR_CANT_LOCK)
		N(CKR_CURVE_NOT_SUPPORTED)
		N(CKR_DOMAIN_PARAMS_INVALID)
		N(CKR_FUNCTION_CANCELED)
		N(CKR_FUNCTION_NOT_PARALLEL)
		N(CKR_FUNCTION_REJECTED)
		N(CKR_LIBRARY_LOAD_FAILED)
		N(CKR_MUTEX_BAD)
		N(CKR_MUTEX_NOT_LOCKED)
		N(CKR_NEED_TO_CREATE_THREADS)
		N(CKR_NO_EVENT)
		N(CKR_PIN_EXPIRED)
		N(CKR_PIN_INVALID)
		N(CKR_PIN_TOO_WEAK)
		N(CKR_PUBLIC_KEY_INVALID)
		N(CKR_SESSION_COUNT)
		N(CKR_SESSION_EXISTS)
		N(CKR_SESSION_PARALLEL_NOT_SUPPORTED)
		N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
		N(CKR_USER_TOO_MANY_TYPES)
		N(CKR_KEY_NOT_WRAPPABLE)
		N(CKR_KEY_UNEXTRACTABLE)
		N(CKR_UNWRAPPING_KEY_HANDLE_INVALID)
		N(CKR_WRAPPED_KEY_INVALID)
		N(CKR_WRAPPED_KEY_LEN_RANGE)
		N(CKR_WRAPPING_KEY_HANDLE_INVALID)
#undef N
	default:
		snprintf(other, sizeof(other), "CKR_0x%lx", rv);
		return other;
	}
}
