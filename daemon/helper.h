/* p11muxd as a member's helper (helper.c), and how the daemon starts and talks to one
 * (link.c). */
#ifndef P11MUXD_HELPER_H
#define P11MUXD_HELPER_H

#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "buffer.h"
#include "err.h"
#include "proto.h"

/* A helper's argv[0], followed by the member's name: what ps shows. */
#define HELPER_TITLE "p11muxd: member "

/* Serves the daemon on HELPER_FD until it closes the socketpair; the process's exit status.
 * name is the member's, for the log. */
int helper_main(const char *name, int use_syslog);

/* The daemon's end of one helper. */
struct link {
	pid_t pid; /* 0: none */
	int fd;    /* -1: none */
	struct p11mux_buf *buf;
};

/* What a helper is started with. */
struct link_spec {
	const char *exe;          /* the p11muxd executable (re-executed) */
	const char *name;         /* the member's, for ps ("p11muxd: member NAME") and the log */
	char *const *env;         /* KEY=VALUE entries added to the environment; NULL-ended */
	int use_syslog;           /* the helper logs to syslog (the daemon does) */
	unsigned send_timeout_ms; /* a write that cannot go on for this long fails */
};

/* Starts a helper: a socketpair, then fork and exec of exe with the member's environment; the
 * child dies with the daemon (PR_SET_PDEATHSIG). 0, or -1 with e filled. */
int link_spawn(struct link *l, const struct link_spec *spec, struct p11mux_err *e);

/* Fills a request's fields (after the call code and tag); errors are sticky in m. */
typedef void (*link_put_fn)(struct p11mux_msg *m, void *arg);
/* Reads a successful reply's fields, copying what it keeps. CKR_OK, or the call's result. */
typedef CK_RV (*link_get_fn)(struct p11mux_msg *m, void *arg);

/* What link_call() returns when the helper did not answer in time, is gone, or answered what
 * cannot be read: it must be killed. Never sent to a client. */
#define LINK_RV_GONE (CKR_VENDOR_DEFINED | 0x5033UL)

/* One call and its reply, waiting at most timeout_ms (tag 0; nothing else may be in flight).
 * The helper's CK_RV (with e filled when it is not CKR_OK), or LINK_RV_GONE. */
CK_RV link_call(struct link *l, uint32_t call, link_put_fn put, link_get_fn get, void *arg,
                unsigned timeout_ms, struct p11mux_err *e);

/* Kills the helper (SIGKILL) and reaps it. Its exit status as waitpid() gives it, or -1. */
int link_kill(struct link *l);
/* Closes the socketpair, lets the helper exit for up to wait_ms, then kills it. The exit
 * status as waitpid() gives it, or -1. */
int link_close(struct link *l, unsigned wait_ms);
/* "exited with status N", "killed by signal N (Name)" */
void link_status_text(int status, char *dst, size_t n);

#endif
