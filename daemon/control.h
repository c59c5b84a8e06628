/* The control socket (for p11muxctl): status, key inventory, metrics, drain and resume. */
#ifndef P11MUXD_CONTROL_H
#define P11MUXD_CONTROL_H

#include "daemon.h"
#include "transport.h"

/* Binds control_socket (mode 0660) into d->control_fd. -1 with a message logged. */
int control_listen(struct daemon *d);
/* Accepts one connection on d->control_fd and answers its one command. */
void control_serve(struct daemon *d);

#endif
