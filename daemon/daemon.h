/* The daemon's state: one struct, passed down to every part. */
#ifndef P11MUXD_DAEMON_H
#define P11MUXD_DAEMON_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "buffer.h"
#include "config.h"
#include "lograte.h"
#include "pool.h"
#include "sobject.h"

/* One connection to the client socket, served by its own (detached) thread. It is listed in
 * the daemon's clients from accept until its thread unlinks it, closes fd and frees it, all
 * under the daemon's lock. */
struct client {
	struct client *next, **pprev;
	struct daemon *d;
	int fd;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	uint64_t accepted_ns; /* when accepted: the handshake is due hello_timeout_ms later */
	int hello;            /* the handshake is done */
	unsigned version;     /* the protocol version it chose */
	/* By pool index: this connection logged in to the pool. Written by the connection's
	 * thread only, with __atomic_store_n: the control thread counts them (pool_clients). */
	uint8_t *logged_in;
	struct app *app; /* the application it serves (CLIENT), for session objects */
};

/* Pools at most (a reload adds some at the end): the shim's slot limit. */
#define P11MUX_MAX_POOLS 16

struct daemon {
	/* The configuration read at start-up: never replaced (a reload that would change what
	 * it says about sockets, access and limits is refused). The files reloads read are in
	 * reloaded, the last one last, kept until the end: pools point into them. */
	struct config *cfg;
	struct config **reloaded;
	size_t nreloaded;
	int debug;          /* -d: the log level is not the configuration's */
	struct pool *pools; /* room for P11MUX_MAX_POOLS */
	size_t npools;      /* read with daemon_npools(): a reload adds pools */
	int reload_pipe[2]; /* SIGHUP writes a byte: the control thread reloads */
	int listen_fd;
	int control_fd; /* p11muxctl's socket */
	int stop_pipe[2];
	int use_syslog;       /* detached: the daemon and its helpers log to syslog */
	pthread_mutex_t lock; /* protects clients and nclients */
	pthread_cond_t gone;  /* signalled when a client thread has unlinked itself */
	struct client *clients;
	size_t nclients;
	unsigned max_clients;       /* limits.max_clients, lowered to fit the descriptor limit */
	uint64_t paused_until;      /* accepting waits until then (p11mux_now_ns) after EMFILE */
	struct lograte refused;     /* connections refused, accept errors */
	struct lograte dropped;     /* connections closed for a time-out or an error */
	struct lograte ctl_refused; /* control connections refused */
	struct lograte ctl_dropped; /* control connections closed for a time-out */
	pthread_t control_thread;   /* serves control_fd */
	int control_running;        /* control_thread was started */
	struct apps apps;           /* applications and their session objects */
};

/* p11muxd's exit status when a member refused the pool's PIN, now or at an earlier start
 * (the unit's RestartPreventExitStatus): a restart cannot help until the PIN file changes. */
#define P11MUXD_EXIT_PIN_REFUSED 3

/* The pools so far. */
size_t daemon_npools(struct daemon *d);
/* The pool whose slot ID is id, or NULL. */
struct pool *daemon_pool(struct daemon *d, CK_SLOT_ID id);

/* Creates the directory of a socket path when it is missing. 0, or -1 with a message. */
int server_mkdir_for(const char *path);
/* Binds and listens on a Unix socket at path, mode 0660, owned by group when given; a
 * stale socket is replaced, a live daemon's is not. The descriptor, or -1 after a message. */
int server_bind(const char *path, const char *group, int backlog);
/* Whether uid (primary group gid) is one of uids, or in one of gids (supplementary groups
 * count). Both sockets' access checks use it. */
int peer_listed(uid_t uid, gid_t gid, const uid_t *uids, size_t nuids, const gid_t *gids,
                size_t ngids);
/* Binds the client socket from the configuration (mode 0660), and sets max_clients to fit
 * the descriptor limit (logged when it had to be lowered). -1 with a message logged. */
int server_listen(struct daemon *d);
/* Accepts and serves clients until a byte arrives on stop_pipe, and has the control socket
 * served by a thread of its own meanwhile; then closes every connection and waits for the
 * client threads to end. */
void server_run(struct daemon *d);

/* Handles the request in `in` and writes the reply to `out`. Returns 0, or -1 when the
 * connection must be closed (malformed request, failed handshake). */
int rpc_handle(struct daemon *d, struct client *c, struct p11mux_buf *in, struct p11mux_buf *out);

#endif
