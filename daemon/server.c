/* The client socket: who may connect, and one thread per connection. */
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct pool *
daemon_pool(struct daemon *d, CK_SLOT_ID id)
{
	size_t i;

	for (i = 0; i < d->npools; i++)
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

int
server_listen(struct daemon *d)
{
	if ((d->listen_fd = server_bind(d->cfg->socket, d->cfg->socket_group, 128)) < 0)
		return -1;
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
		r = p11mux_frame_recv(c->fd, in, P11MUX_FRAME_MAX);
		if (r == P11MUX_ERR_CLOSED)
			break;
		if (r != 0) {
			log_warn("client pid %ld uid %lu: %s; connection closed", (long)c->pid,
			         (unsigned long)c->uid, p11mux_strerror(r));
			break;
		}
		if (rpc_handle(d, c, in, out) != 0)
			break;
		p11mux_buf_reset(in); /* wipes what the request carried (a PIN, plaintext) */
		if (p11mux_frame_send(c->fd, out) != 0)
			break;
	}
	p11mux_buf_free(in);
	p11mux_buf_free(out);
	/* The peer sees the end of the stream now; the descriptor itself stays open until the
	 * thread is joined, so that the stop path never shuts down a number that was reused. */
	shutdown(c->fd, SHUT_RDWR);
	p11mux_lock(&d->lock);
	c->finished = 1;
	p11mux_unlock(&d->lock);
	return NULL;
}

static void
client_free(struct client *c)
{
	close(c->fd);
	free(c->logged_in);
	free(c);
}

/* Joins and frees the clients whose threads have ended. Lock held. */
static void
reap_locked(struct daemon *d)
{
	struct client **pc = &d->clients, *c;

	while ((c = *pc) != NULL) {
		if (c->finished) {
			*pc = c->next;
			pthread_join(c->thread, NULL);
			client_free(c);
			d->nclients--;
		} else {
			pc = &c->next;
		}
	}
}

static void
accept_one(struct daemon *d)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct client *c;
	pthread_attr_t attr;
	int fd;

	if ((fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			log_warn("accept: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		log_warn("SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	if (!peer_allowed(d, cred.uid, cred.gid)) {
		log_warn("refused a connection from uid %lu (pid %ld): not in allowed_users or "
		         "allowed_groups of %s",
		         (unsigned long)cred.uid, (long)cred.pid, d->cfg->path);
		close(fd);
		return;
	}
	p11mux_lock(&d->lock);
	reap_locked(d);
	if (d->nclients >= DAEMON_MAX_CLIENTS) {
		p11mux_unlock(&d->lock);
		log_warn("refused a connection from pid %ld: %d connections open", (long)cred.pid,
		         DAEMON_MAX_CLIENTS);
		close(fd);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->logged_in = calloc(d->npools + 1, 1)) == NULL) {
		p11mux_unlock(&d->lock);
		free(c);
		close(fd);
		return;
	}
	c->d = d;
	c->fd = fd;
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->pid = cred.pid;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&c->thread, &attr, client_main, c) != 0) {
		p11mux_unlock(&d->lock);
		pthread_attr_destroy(&attr);
		log_warn("cannot start a thread for pid %ld", (long)cred.pid);
		client_free(c);
		return;
	}
	pthread_attr_destroy(&attr);
	c->next = d->clients;
	d->clients = c;
	d->nclients++;
	p11mux_unlock(&d->lock);
	log_debug("client pid %ld uid %lu connected", (long)cred.pid, (unsigned long)cred.uid);
}

void
server_run(struct daemon *d)
{
	struct pollfd pfd[3];
	struct client *c;

	pfd[0].fd = d->listen_fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = d->stop_pipe[0];
	pfd[1].events = POLLIN;
	pfd[2].fd = d->control_fd;
	pfd[2].events = POLLIN;
	for (;;) {
		if (poll(pfd, d->control_fd >= 0 ? 3 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents != 0)
			break;
		if (pfd[0].revents & POLLIN)
			accept_one(d);
		if (d->control_fd >= 0 && (pfd[2].revents & POLLIN))
			control_serve(d);
	}
	if (d->control_fd >= 0) {
		close(d->control_fd);
		d->control_fd = -1;
		unlink(d->cfg->control_socket);
	}
	close(d->listen_fd);
	d->listen_fd = -1;
	unlink(d->cfg->socket);
	/* Wake every client thread out of its read, then wait for all of them. */
	p11mux_lock(&d->lock);
	for (c = d->clients; c != NULL; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	p11mux_unlock(&d->lock);
	while ((c = d->clients) != NULL) {
		d->clients = c->next;
		pthread_join(c->thread, NULL);
		client_free(c);
	}
	d->nclients = 0;
}
