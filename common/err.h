/* Error codes shared by the buffer, codec and transport (negative, 0 is success). */
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

/* Returns a static English description of an error code above. */
const char *p11mux_strerror(int err);

#endif
