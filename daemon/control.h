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
/* Waits for that thread to end, then closes and removes the control socket. */
void control_stop(struct daemon *d);

#endif
