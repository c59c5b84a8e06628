#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *
p11mux_strerror(int err)
{
	switch (err) {
	case P11MUX_OK:
		return "success";
	case P11MUX_ERR_NOMEM:
		return "out of memory";
	case P11MUX_ERR_TOO_BIG:
		return "message larger than the limit";
	case P11MUX_ERR_SHORT:
		return "message truncated";
	case P11MUX_ERR_INVALID:
		return "malformed message";
	case P11MUX_ERR_IO:
		return "socket error";
	case P11MUX_ERR_CLOSED:
		return "connection closed by peer";
	case P11MUX_ERR_VERSION:
		return "no common protocol version";
	case P11MUX_ERR_TIMEOUT:
		return "no answer in time";
	default:
		return "unknown error";
	}
}

int
p11mux_err_set(struct p11mux_err *e, const char *fmt, ...)
{
	char msg[sizeof(e->msg)];
	va_list ap;

	if (e == NULL)
		return -1;
	/* Through a copy: the arguments may include e->msg itself ("...: %s", e->msg). */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(e->msg, msg, sizeof(msg));
	return -1;
}
