/*
 * The project's error conventions, three in all:
 *   - CK_RV for anything PKCS#11-shaped (requests, device calls, the shim's entry points);
 *   - the codec's codes below (negative, 0 is success), sticky in a buffer or a message;
 *   - struct p11mux_err for configuration, start-up and members: a message for a person,
 *     written on every failure by the function that fails.
 */
#ifndef P11MUX_ERR_H
#define P11MUX_ERR_H

#define P11MUX_OK          0
#define P11MUX_ERR_NOMEM   -1 /* allocation failed */
#define P11MUX_ERR_TOO_BIG -2 /* would exceed the buffer's or frame's hard cap */
#define P11MUX_ERR_SHORT   -3 /* data ends before the value it announces */
#define P11MUX_ERR_INVALID -4 /* malformed: unknown call, bad signature, trailing bytes */
#define P11MUX_ERR_IO      -5 /* read or write on the socket failed (errno kept) */
#define P11MUX_ERR_CLOSED  -6 /* peer closed the connection */
#define P11MUX_ERR_VERSION -7 /* no protocol version in common */
#define P11MUX_ERR_TIMEOUT -8 /* the peer did not send, or read, in time */

/* Returns a static English description of an error code above. */
const char *p11mux_strerror(int err);

/* Why something failed, for a log line or an administrator's terminal. */
struct p11mux_err {
	char msg[256];
};

/* Writes the message (printf format) into e and returns -1, so that a failing function can
 * say `return p11mux_err_set(e, ...);`. e may be NULL; e->msg may be one of the arguments. */
int p11mux_err_set(struct p11mux_err *e, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#endif
