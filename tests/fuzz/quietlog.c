/*
 * Linked with -Wl,--wrap=p11mux_log into the fuzz targets that run the daemon's code: its log
 * lines (a wrong PIN, a malformed request: thousands a second under a fuzzer) are dropped,
 * unless P11MUX_FUZZ_LOG is set in the environment.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void __real_p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void __wrap_p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

void
__wrap_p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
{
	static int wanted = -1;
	char msg[1024];
	va_list ap;

	if (wanted < 0)
		wanted = getenv("P11MUX_FUZZ_LOG") != NULL;
	if (!wanted)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	__real_p11mux_log(level, "%s", msg);
}
