/* The control socket (for p11muxctl): status, key inventory, metrics, drain and resume. */
#ifndef P11MUXD_CONTROL_H
#define P11MUXD_CONTROL_H

#include "daemon.h"
#include "transport.h"

/* Binds control_socket (mode 0660) into d->control_fd. -1 with a message logged. */
int control_listen(struct daemon *d);
/* Starts the thread that serves d->control_fd (when bound) until a byte arrives on the stop
 * pipe. 0, or -1 when the thread cannot start. */
int control_start(struct daemon *d);
/* Waits for that thread to end (and a rescan or reload under way), then closes and removes
 * the control socket. */
void control_stop(struct daemon *d);
/* Ends the worker thread that ran rescans and reloads; after the pools are closed, since the
 * helpers it started end with it. */
void control_end(void);
/* An answer being written (control.c's); out_printf appends to it, as printf formats. */
struct out;
void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The answer to one command line, as the control thread sends it to a peer: line[0..len) is
 * what the peer sent (cut at the first CR or LF; past 255 bytes, ignored), who names the peer
 * in messages; reader: it may read status, keys and metrics; admin: it may drain, resume and
 * unlock-pin too. Returns a malloc()ed string the caller frees, or NULL when out of memory.
 * The control thread's own path after reading a line; fuzz_ctlline calls it. */
char *control_answer(struct daemon *d, const char *line, size_t len, const char *who, int admin,
                     int reader);

#endif
