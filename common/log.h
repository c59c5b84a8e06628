/* Logging for the daemon and tools: to stderr, or to syslog once p11mux_log_syslog() is
 * called. The shim logs only when P11MUX_DEBUG is set in its environment. */
#ifndef P11MUX_LOG_H
#define P11MUX_LOG_H

#include <stddef.h>

enum p11mux_log_level { P11MUX_LOG_ERROR, P11MUX_LOG_WARN, P11MUX_LOG_INFO, P11MUX_LOG_DEBUG };

/* Messages above level are dropped. */
void p11mux_log_set_level(enum p11mux_log_level level);
/* The name that stderr lines carry ("p11muxd" by default; a member's helper has its own). */
void p11mux_log_set_name(const char *name);
/* Sends messages to syslog under ident instead of stderr. */
void p11mux_log_syslog(const char *ident);
/* Copies the last error-level message logged into dst ("" when none). */
void p11mux_log_last_error(char *dst, size_t n);
void p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#define log_error(...) p11mux_log(P11MUX_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  p11mux_log(P11MUX_LOG_WARN, __VA_ARGS__)
#define log_info(...)  p11mux_log(P11MUX_LOG_INFO, __VA_ARGS__)
#define log_debug(...) p11mux_log(P11MUX_LOG_DEBUG, __VA_ARGS__)

/* The PKCS#11 name of a return value ("CKR_PIN_INCORRECT"), or "CKR_0x..." for unknown ones
 * (in a static buffer per thread). */
const char *p11mux_rv_name(unsigned long rv);

#endif
