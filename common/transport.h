/*
 * Frames on a Unix stream socket: a u32 big-endian payload length, then the payload.
 * The length is checked against the cap before any byte of the payload is read or any
 * memory is set aside for it.
 */
#ifndef P11MUX_TRANSPORT_H
#define P11MUX_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

/* Sends the buffer's bytes as one frame. Never raises SIGPIPE. */
int p11mux_frame_send(int fd, const struct p11mux_buf *b);
/* The same, but the whole frame must have been handed to the socket by deadline_ns
 * (p11mux_now_ns(); 0: no deadline): P11MUX_ERR_TIMEOUT when it has not. */
int p11mux_frame_send_until(int fd, const struct p11mux_buf *b, uint64_t deadline_ns);
/* Receives one frame into b (reset once a header has arrived; untouched if none did).
 * P11MUX_ERR_TOO_BIG when the announced length exceeds max, P11MUX_ERR_CLOSED on an end of stream
 * before a whole header, P11MUX_ERR_SHORT when the stream ends inside the payload. */
int p11mux_frame_recv(int fd, struct p11mux_buf *b, size_t max);
/* The same, but the whole frame must have arrived by deadline_ns (p11mux_now_ns(); 0: no
 * deadline): P11MUX_ERR_TIMEOUT when it has not, whether or not a header came. */
int p11mux_frame_recv_until(int fd, struct p11mux_buf *b, size_t max, uint64_t deadline_ns);
/* Connects to the Unix socket at path; returns the descriptor (close-on-exec) or -1 with
 * errno set. */
int p11mux_unix_connect(const char *path);

#endif
