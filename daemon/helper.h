/* p11muxd as a member's helper (helper.c), and how the daemon starts and talks to one
 * (link.c). */
#ifndef P11MUXD_HELPER_H
#define P11MUXD_HELPER_H

#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "buffer.h"
#include "err.h"
#include "hproto.h"
#include "proto.h"

/* A helper's argv[0], followed by the member's name: what ps shows. */
#define HELPER_TITLE "p11muxd: member "

/* Serves the daemon on the helper's channels until it closes them; the process's exit
 * status. name is the member's, for the log. */
int helper_main(const char *name, int use_syslog);

/* The request dispatcher alone, without the process and its channels (tests/fuzz/fuzz_hproto.c
 * drives it with a stub module). */
struct helper;
/* A helper whose module is f, initialised already: TOKENS and INIT take it as the module
 * they load (the path they name is not opened). It has no operation channels: INIT starts no
 * threads. NULL when out of memory. */
struct helper *helper_new(CK_FUNCTION_LIST *f);
/* Answers the request in `in` (one frame's payload) into out, as the helper's control channel
 * (op 0) or an operation channel (op 1) whose session is *s (CK_INVALID_HANDLE: none yet;
 * updated, the caller's to close) does. 0, or -1 when the helper would stop serving the
 * channel. */
int helper_answer(struct helper *h, int op, CK_SESSION_HANDLE *s, struct p11mux_buf *in,
                  struct p11mux_buf *out);
/* Closes h's login session and frees h; the module stays loaded. NULL is fine. */
void helper_free(struct helper *h);

/* One channel to a helper: a socketpair end and the buffer for its messages. */
struct chan {
	int fd; /* -1: none */
	struct p11mux_buf *buf;
	int lost; /* a call on it returned LINK_RV_GONE or LINK_RV_TIMEOUT */
};

/* The daemon's end of one helper. */
struct link {
	pid_t pid; /* 0: none */
	struct chan ctl;
	struct chan op[HELPER_MAX_CHANNELS];
	unsigned nop;
};

/* What a helper is started with. */
struct link_spec {
	const char *exe;          /* the p11muxd executable (re-executed) */
	const char *name;         /* the member's, for ps ("p11muxd: member NAME") and the log */
	char *const *env;         /* KEY=VALUE entries added to the environment; NULL-ended */
	int use_syslog;           /* the helper logs to syslog (the daemon does) */
	unsigned channels;        /* operation channels (workers_per_member) */
	unsigned send_timeout_ms; /* a write that cannot go on for this long fails */
};

/* An unused link (no helper). */
void link_init(struct link *l);
/* Starts a helper: the channels, then fork and exec of exe with the member's environment;
 * the child dies with the daemon (PR_SET_PDEATHSIG). 0, or -1 with e filled. */
int link_spawn(struct link *l, const struct link_spec *spec, struct p11mux_err *e);

/* Fills a request's fields (after the call code); errors are sticky in m. */
typedef void (*link_put_fn)(struct p11mux_msg *m, void *arg);
/* Reads a successful reply's fields, copying what it keeps. CKR_OK, or the call's result. */
typedef CK_RV (*link_get_fn)(struct p11mux_msg *m, void *arg);

/* What chan_call() returns when the helper is gone, or answered what cannot be read, and when
 * it did not answer in time: either way it must be killed. Never sent to a client. */
#define LINK_RV_GONE    (CKR_VENDOR_DEFINED | 0x5033UL)
#define LINK_RV_TIMEOUT (CKR_VENDOR_DEFINED | 0x5034UL)

/* Whether rv says the helper must be killed. A function, not a macro: rv is evaluated once. */
static inline int
link_lost(CK_RV rv)
{
	return rv == LINK_RV_GONE || rv == LINK_RV_TIMEOUT;
}

/* The daemon's own result codes (P11MUX_RV_RETRY, LINK_RV_GONE, LINK_RV_TIMEOUT) lie in this
 * range; a module's answer in it is taken as CKR_FUNCTION_FAILED, so that no module can pass
 * for one of them. */
static inline int
p11muxd_own_rv(CK_RV rv)
{
	return rv >= (CKR_VENDOR_DEFINED | 0x5030UL) && rv <= (CKR_VENDOR_DEFINED | 0x503fUL);
}

/* One call and its reply on channel c, waiting at most timeout_ms for the reply. The helper's
 * CK_RV (with e filled when it is not CKR_OK), LINK_RV_GONE or LINK_RV_TIMEOUT. *sent (may be NULL)
 * says whether the whole request was written: a helper that died before that never saw it. */
CK_RV chan_call(struct chan *c, uint32_t call, link_put_fn put, link_get_fn get, void *arg,
                unsigned timeout_ms, struct p11mux_err *e, int *sent);

/* Kills the helper (SIGKILL); the channels stay open until link_close(). */
void link_kill(struct link *l);
/* Closes the channels, lets the helper exit for up to wait_ms (not at all when a call on the
 * control channel was lost: a hung helper is killed at once), then kills it, and reaps it.
 * Its exit status as waitpid() gives it, or -1 when there was none. The buffers are kept. */
int link_close(struct link *l, unsigned wait_ms);
/* Frees the buffers (after link_close). */
void link_free(struct link *l);
/* "exited with status N", "killed by signal N (Name)" */
void link_status_text(int status, char *dst, size_t n);

#endif
