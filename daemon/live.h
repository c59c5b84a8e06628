/*
 * Live changes (docs/operations.md, "Live changes"): `p11muxctl rescan` and `p11muxctl
 * reload` (or SIGHUP), with client connections left open. One runs at a time, on the control
 * socket's worker thread (control.c), never on a client's thread.
 *
 * rescan: a pool of every token present lists its module's tokens again and adds the new
 * ones as members; a member that is down is probed at once; a member that is up re-reads its
 * objects, and the pool's view is remapped (view_remap): keys new to the pool appear, keys no
 * member holds any more are withdrawn.
 *
 * reload: the configuration file is read again. Applied live: log_level; per pool, the
 * scheduling and health keys (scheduler, op_timeout_ms, max_attempts, probe_interval_ms,
 * probe_max_ms); members added (probed at once) or removed (drained first); pools added at
 * the end of the file. Anything else that changed (a socket, the access lists, the limits, a
 * pool's label, module, PIN file, slot, workers_per_member or pin_max_failures, a pool
 * removed) refuses the whole reload, which then changes nothing.
 */
#ifndef P11MUXD_LIVE_H
#define P11MUXD_LIVE_H

#include "daemon.h"

struct out;

/* Rescans member (label or serial), or everything when member is "". Writes the answer
 * ("ok" or "error: ...", then a line per member) to o. */
void live_rescan(struct daemon *d, const char *member, struct out *o);
/* Reloads the configuration; writes the answer to o ("ok", then what changed; or "error:
 * ..." when nothing did). who is for the log. */
void live_reload(struct daemon *d, const char *who, struct out *o);

#endif
