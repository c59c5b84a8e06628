/* The client socket: who may connect, how many at once, and one thread per connection with
 * time-outs for the handshake, a started request and a reply not read. */
#include "control.h"
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "thread.h"
#include "proto.h"
#include "transport.h"

#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* How long accepting pauses after accept ran out of descriptors or memory. */
#define ACCEPT_BACKOFF_MS 100

size_t
daemon_npools(struct daemon *d)
{
	return __atomic_load_n(&d->npools, __ATOMIC_ACQUIRE);
}

struct pool *
daemon_pool(struct daemon *d, CK_SLOT_ID id)
{
	size_t i, n = daemon_npools(d);

	for (i = 0; i < n; i++)
		if (d->pools[i].slot.id == id)
			return &d->pools[i];
	return NULL;
}

int
server_mkdir_for(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], *slash;

	/* Make the socket's directory if it is missing (e.g. /run/p11mux after a reboot). */
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
			log_error("cannot create %s: %s", dir, strerror(errno));
			return -1;
		}
	}
	return 0;
}

int
server_bind(const char *path, const char *group, int backlog)
{
	struct sockaddr_un sa;
	struct group *gr;
	mode_t old;
	int fd, probe;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("%s: path too long for a Unix socket", path);
		return -1;
	}
	if (server_mkdir_for(path) != 0)
		return -1;
	/* A socket left by a daemon that died is replaced; one with a live daemon is not. */
	if ((probe = p11mux_unix_connect(path)) >= 0) {
		close(probe);
		log_error("another p11muxd is already listening on %s", path);
		return -1;
	}
	if (errno == ECONNREFUSED)
		unlink(path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		log_error("socket: %s", strerror(errno));
		return -1;
	}
	old = umask(0117);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		umask(old);
		log_error("cannot bind %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, 0660) != 0)
		log_warn("chmod %s: %s", path, strerror(errno));
	if (group != NULL && (gr = getgrnam(group)) != NULL &&
	    chown(path, (uid_t)-1, gr->gr_gid) != 0)
		log_warn("chown %s to group %s: %s", path, group, strerror(errno));
	if (listen(fd, backlog) != 0) {
		log_error("listen %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Descriptors kept for what is not a client connection: the standard streams and the log,
 * both listening sockets, the control thread's connections, the stop pipe, and spares. Each
 * member adds twice its helper's channels and pipes, for a helper being replaced. */
#define FD_RESERVE 64

/* max_clients, lowered when the descriptor limit could not hold that many connections. */
static unsigned
fit_max_clients(const struct daemon *d)
{
	unsigned want = d->cfg->limits.max_clients;
	unsigned long reserve = FD_RESERVE, fit;
	struct rlimit rl;
	size_t i, k;

	for (i = 0; i < d->npools; i++)
		for (k = 0; k < d->pools[i].nmembers; k++)
			reserve += 2 * (d->pools[i].members[k].nworkers + 2);
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= reserve + want)
		return want;
	fit = rl.rlim_cur > reserve + 1 ? (unsigned long)rl.rlim_cur - reserve : 1;
	log_warn("max_clients lowered from %u to %lu: the descriptor limit is %lu (LimitNOFILE), "
	         "%lu of them kept for helpers, sockets and logs",
	         want, fit, (unsigned long)rl.rlim_cur, reserve);
	return (unsigned)fit;
}

int
server_listen(struct daemon *d)
{
	if ((d->listen_fd = server_bind(d->cfg->socket, d->cfg->socket_group, 128)) < 0)
		return -1;
	p11mux_cond_init(&d->gone);
	lograte_init(&d->refused, "refused connections or accept errors");
	lograte_init(&d->dropped, "connections closed for a time-out or an error");
	d->max_clients = fit_max_clients(d);
	log_info("listening on %s", d->cfg->socket);
	return 0;
}

int
peer_listed(uid_t uid, gid_t gid, const uid_t *uids, size_t nuids, const gid_t *gids, size_t ngids)
{
	struct passwd pw, *res = NULL;
	gid_t groups[256];
	int ngroups = 256, i;
	char buf[4096];
	size_t k;

	for (k = 0; k < nuids; k++)
		if (uids[k] == uid)
			return 1;
	for (k = 0; k < ngids; k++)
		if (gids[k] == gid)
			return 1;
	if (ngids == 0 || getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
		return 0;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups) < 0)
		ngroups = 256;
	for (i = 0; i < ngroups; i++)
		for (k = 0; k < ngids; k++)
			if (gids[k] == groups[i])
				return 1;
	return 0;
}

/* Whether the peer may use the daemon: root, the daemon's own user, or a user or group of
 * allowed_users / allowed_groups. */
static int
peer_allowed(const struct daemon *d, uid_t uid, gid_t gid)
{
	const struct config *c = d->cfg;

	return uid == 0 || uid == geteuid() ||
	       peer_listed(uid, gid, c->allowed_uids, c->nallowed_uids, c->allowed_gids,
	                   c->nallowed_gids);
}

/* Waits until a request starts (or the connection ends): an idle connection after the
 * handshake is legitimate, whatever its length. 0, or P11MUX_ERR_IO. */
static int
wait_request(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	while (poll(&pfd, 1, -1) < 0)
		if (errno != EINTR)
			return P11MUX_ERR_IO;
	return 0;
}

/* Receives the next request. The handshake must be done within hello_timeout_ms of accept;
 * after it, a frame that has started must be whole within frame_timeout_ms. */
static int
client_recv(struct client *c, struct p11mux_buf *in)
{
	const struct limits *l = &c->d->cfg->limits;
	int r;

	if (!c->hello)
		return p11mux_frame_recv_until(c->fd, in, P11MUX_FRAME_MAX,
		                               c->accepted_ns + l->hello_timeout_ms * 1000000ull);
	if ((r = wait_request(c->fd)) != 0)
		return r;
	return p11mux_frame_recv_until(c->fd, in, P11MUX_FRAME_MAX,
	                               p11mux_now_ns() + l->frame_timeout_ms * 1000000ull);
}

/* Ends a connection: unlinks it, closes its descriptor and frees it, under the lock, so that
 * the stop path, which shuts down the descriptors of listed clients under the same lock,
 * never shuts down a number that was reused. */
static void
client_end(struct client *c)
{
	struct daemon *d = c->d;

	p11mux_lock(&d->lock);
	if (c->next != NULL)
		c->next->pprev = c->pprev;
	*c->pprev = c->next;
	d->nclients--;
	close(c->fd);
	apps_unbind(&d->apps, c);
	free(c->logged_in);
	free(c);
	pthread_cond_broadcast(&d->gone);
	p11mux_unlock(&d->lock);
}

/* Logs why the daemon closed a connection (rate-limited: a client can provoke it). */
static void
client_dropped(struct client *c, int r, int writing)
{
	const struct limits *l = &c->d->cfg->limits;
	char why[128];

	if (r == P11MUX_ERR_TIMEOUT && writing)
		snprintf(why, sizeof(why), "did not read its reply within write_timeout_ms (%u ms)",
		         l->write_timeout_ms);
	else if (r == P11MUX_ERR_TIMEOUT && !c->hello)
		snprintf(why, sizeof(why), "no handshake within hello_timeout_ms (%u ms)",
		         l->hello_timeout_ms);
	else if (r == P11MUX_ERR_TIMEOUT)
		snprintf(why, sizeof(why), "a request not whole within frame_timeout_ms (%u ms)",
		         l->frame_timeout_ms);
	else
		snprintf(why, sizeof(why), "%s", p11mux_strerror(r));
	lograte_warn(&c->d->dropped, "client pid %ld uid %lu: %s; connection closed", (long)c->pid,
	             (unsigned long)c->uid, why);
}

static void *
client_main(void *arg)
{
	struct client *c = arg;
	struct daemon *d = c->d;
	struct p11mux_buf *in, *out;
	int r;

	in = p11mux_buf_new(P11MUX_FRAME_MAX + 64);
	out = p11mux_buf_new(P11MUX_FRAME_MAX + 64);
	while (in != NULL && out != NULL) {
		if ((r = client_recv(c, in)) != 0) {
			if (r != P11MUX_ERR_CLOSED)
				client_dropped(c, r, 0);
			break;
		}
		if (rpc_handle(d, c, in, out) != 0)
			break;
		p11mux_buf_reset(in); /* wipes what the request carried (a PIN, plaintext) */
		r = p11mux_frame_send_until(
		        c->fd, out, p11mux_now_ns() + d->cfg->limits.write_timeout_ms * 1000000ull);
		if (r != 0) {
			if (r == P11MUX_ERR_TIMEOUT)
				client_dropped(c, r, 1);
			break;
		}
	}
	p11mux_buf_free(in);
	p11mux_buf_free(out);
	client_end(c);
	return NULL;
}

/* Why one more connection from cred would break a limit (into why), or NULL. Lock held. */
static const char *
over_limit_locked(const struct daemon *d, const struct ucred *cred, char *why, size_t n)
{
	const struct limits *l = &d->cfg->limits;
	const struct client *c;
	unsigned uid = 0, pid = 0;

	if (d->nclients >= d->max_clients) {
		snprintf(why, n, "%zu connections open (max_clients)", d->nclients);
		return why;
	}
	for (c = d->clients; c != NULL; c = c->next) {
		uid += c->uid == cred->uid;
		pid += c->pid == cred->pid;
	}
	/* A peer in another pid namespace shows as pid 0: only its user's limit applies. */
	if (cred->pid != 0 && pid >= l->max_clients_per_pid) {
		snprintf(why, n, "%u connections from this process (max_clients_per_pid)", pid);
		return why;
	}
	if (uid >= l->max_clients_per_uid) {
		snprintf(why, n, "%u connections from this user (max_clients_per_uid)", uid);
		return why;
	}
	return NULL;
}

/* Starts a thread for a new connection and lists it. 0, or -1 (nothing left to free).
 * Lock held. */
static int
client_start_locked(struct daemon *d, int fd, const struct ucred *cred)
{
	struct client *c;
	pthread_attr_t attr;
	pthread_t t;
	int r;

	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->logged_in = calloc(P11MUX_MAX_POOLS, 1)) == NULL) {
		free(c);
		return -1;
	}
	c->d = d;
	c->fd = fd;
	c->uid = cred->uid;
	c->gid = cred->gid;
	c->pid = cred->pid;
	c->accepted_ns = p11mux_now_ns();
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* The thread cannot end before it is listed: it unlinks itself under the lock. */
	r = pthread_create(&t, &attr, client_main, c);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		free(c->logged_in);
		free(c);
		return -1;
	}
	c->next = d->clients;
	c->pprev = &d->clients;
	if (d->clients != NULL)
		d->clients->pprev = &c->next;
	d->clients = c;
	d->nclients++;
	return 0;
}

/* After accept ran out of descriptors or memory: stop accepting for a moment rather than
 * spin on a listening socket that stays readable. */
static void
accept_failed(struct daemon *d, int err)
{
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		d->paused_until = p11mux_now_ns() + ACCEPT_BACKOFF_MS * 1000000ull;
		lograte_warn(&d->refused, "accept: %s; not accepting for %d ms", strerror(err),
		             ACCEPT_BACKOFF_MS);
	} else if (err != EINTR && err != EAGAIN && err != ECONNABORTED) {
		lograte_warn(&d->refused, "accept: %s", strerror(err));
	}
}

static void
accept_one(struct daemon *d)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	const char *why;
	char buf[96];
	int fd;

	if ((fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		accept_failed(d, errno);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		lograte_warn(&d->refused, "SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	if (!peer_allowed(d, cred.uid, cred.gid)) {
		lograte_warn(&d->refused,
		             "refused a connection from uid %lu (pid %ld): not in allowed_users or "
		             "allowed_groups of %s",
		             (unsigned long)cred.uid, (long)cred.pid, d->cfg->path);
		close(fd);
		return;
	}
	p11mux_lock(&d->lock);
	if ((why = over_limit_locked(d, &cred, buf, sizeof(buf))) == NULL &&
	    client_start_locked(d, fd, &cred) != 0) {
		why = "no memory or thread for it";
		d->paused_until = p11mux_now_ns() + ACCEPT_BACKOFF_MS * 1000000ull;
	}
	p11mux_unlock(&d->lock);
	if (why != NULL) {
		lograte_warn(&d->refused, "refused a connection from uid %lu (pid %ld): %s",
		             (unsigned long)cred.uid, (long)cred.pid, why);
		close(fd);
		return;
	}
	log_debug("client pid %ld uid %lu connected", (long)cred.pid, (unsigned long)cred.uid);
}

/* Closes every connection, and waits for the client threads to end. */
static void
stop_clients(struct daemon *d)
{
	struct client *c;

	p11mux_lock(&d->lock);
	/* Wakes every client thread out of its read or write. */
	for (c = d->clients; c != NULL; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (d->nclients > 0)
		p11mux_cond_wait_until(&d->gone, &d->lock, p11mux_now_ns() + 1000000000ull);
	p11mux_unlock(&d->lock);
}

/* The poll time-out of the accept loop: until accepting resumes, or a second while log
 * lines are held back for a summary, else 10 s (client threads may hold lines back while
 * the loop sleeps: their summary comes at the latest then). */
static int
accept_wait_ms(struct daemon *d, int held)
{
	uint64_t now = p11mux_now_ns();

	if (d->paused_until > now)
		return (int)((d->paused_until - now) / 1000000 + 1);
	return held ? 1000 : 10000;
}

/* Sums up the log lines held back: refused and dropped connections, the pools' wrong PINs
 * and refused logins. 1 while some are held back. */
static int
flush_logs(struct daemon *d)
{
	int held = lograte_flush(&d->refused) | lograte_flush(&d->dropped);
	size_t i;

	for (i = 0; i < daemon_npools(d); i++)
		held |= guard_flush(&d->pools[i].guard);
	/* Not a log line, but due within a second too: gone applications' session objects. */
	held |= apps_sweep(&d->apps);
	return held;
}

void
server_run(struct daemon *d)
{
	struct pollfd pfd[2];
	int held = 0;

	if (control_start(d) != 0)
		log_error("the control socket is not served");
	pfd[1].fd = d->stop_pipe[0];
	pfd[1].events = POLLIN;
	for (;;) {
		/* A negative descriptor is left out by poll: the pause after EMFILE. */
		pfd[0].fd = d->paused_until > p11mux_now_ns() ? -1 : d->listen_fd;
		pfd[0].events = POLLIN;
		if (poll(pfd, 2, accept_wait_ms(d, held)) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents != 0)
			break;
		if (pfd[0].fd >= 0 && (pfd[0].revents & POLLIN))
			accept_one(d);
		held = flush_logs(d);
	}
	/* The byte stays in the stop pipe: the control thread sees it too. */
	control_stop(d);
	close(d->listen_fd);
	d->listen_fd = -1;
	unlink(d->cfg->socket);
	stop_clients(d);
	flush_logs(d);
	lograte_destroy(&d->refused);
	lograte_destroy(&d->dropped);
	pthread_cond_destroy(&d->gone);
}
