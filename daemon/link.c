/* The daemon's end of a member's helper: starting it, one call with a deadline, ending it. */
#include "helper.h"
#include "hproto.h"
#include "log.h"
#include "thread.h"
#include "transport.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Whether env entry a sets the same variable as b. */
static int
same_var(const char *a, const char *b)
{
	size_t n = strcspn(a, "=");

	return strncmp(a, b, n) == 0 && b[n] == '=';
}

/* The helper's environment: the daemon's, with the member's entries added or replacing. A
 * NULL-ended array of pointers into environ and spec->env (malloc'ed array only). */
static char **
helper_env(char *const *add)
{
	size_t n = 0, k = 0, i, j;
	char **env;

	while (environ[n] != NULL)
		n++;
	while (add != NULL && add[k] != NULL)
		k++;
	if ((env = calloc(n + k + 1, sizeof(*env))) == NULL)
		return NULL;
	for (i = 0, n = 0; environ[i] != NULL; i++) {
		for (j = 0; j < k && !same_var(add[j], environ[i]); j++)
			;
		if (j == k)
			env[n++] = environ[i];
	}
	for (j = 0; j < k; j++)
		env[n++] = add[j];
	return env;
}

int
link_spawn(struct link *l, const struct link_spec *spec, struct p11mux_err *e)
{
	char title[96], *argv[4], **env;
	struct timeval tv;
	pid_t parent = getpid(), pid;
	int sv[2];

	/* ps shows the title; the helper takes its name from it. */
	snprintf(title, sizeof(title), "%s%s", HELPER_TITLE, spec->name);
	argv[0] = title;
	argv[1] = (char *)"--helper";
	argv[2] = spec->use_syslog ? (char *)"--syslog" : NULL;
	argv[3] = NULL;
	/* Everything the child needs is made before fork: after it, in a threaded process, the
	 * child may only make async-signal-safe calls until exec. */
	if ((env = helper_env(spec->env)) == NULL)
		return p11mux_err_set(e, "out of memory");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		free(env);
		return p11mux_err_set(e, "socketpair: %s", strerror(errno));
	}
	if ((pid = fork()) < 0) {
		close(sv[0]);
		close(sv[1]);
		free(env);
		return p11mux_err_set(e, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		/* dup2 clears close-on-exec on the copy: the helper's end survives exec. */
		if (dup2(sv[1], HELPER_FD) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
		    getppid() != parent)
			_exit(127);
		execve(spec->exe, argv, env);
		_exit(127);
	}
	close(sv[1]);
	free(env);
	tv.tv_sec = spec->send_timeout_ms / 1000;
	tv.tv_usec = (suseconds_t)(spec->send_timeout_ms % 1000) * 1000;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (l->buf == NULL && (l->buf = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) == NULL) {
		close(sv[0]);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return p11mux_err_set(e, "out of memory");
	}
	l->pid = pid;
	l->fd = sv[0];
	return 0;
}

/* Waits until fd is readable or deadline_ns passes. 1, 0 on time-out, -1 on error. */
static int
wait_readable(int fd, uint64_t deadline_ns)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	uint64_t now;
	int r;

	for (;;) {
		now = p11mux_now_ns();
		if (now >= deadline_ns)
			return 0;
		r = poll(&pfd, 1, (int)((deadline_ns - now) / 1000000 + 1));
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

CK_RV
link_call(struct link *l, uint32_t call, link_put_fn put, link_get_fn get, void *arg,
          unsigned timeout_ms, struct p11mux_err *e)
{
	uint64_t deadline = p11mux_now_ns() + (uint64_t)timeout_ms * 1000000u;
	const char *name = helper_calls[call].name;
	struct p11mux_msg m = {0};
	CK_RV rv = LINK_RV_GONE;
	int r;

	p11mux_msg_request(&m, l->buf, &helper_proto, call, 0);
	if (put != NULL)
		put(&m, arg);
	if ((r = p11mux_msg_end(&m)) != 0) {
		p11mux_err_set(e, "%s: %s", name, p11mux_strerror(r));
		goto out;
	}
	if ((r = p11mux_frame_send(l->fd, l->buf)) != 0) {
		p11mux_err_set(e, "%s: the helper is gone (%s)", name, p11mux_strerror(r));
		goto out;
	}
	if ((r = wait_readable(l->fd, deadline)) <= 0) {
		p11mux_err_set(e, "%s: no answer within %u ms", name, timeout_ms);
		goto out;
	}
	if ((r = p11mux_frame_recv(l->fd, l->buf, P11MUX_FRAME_MAX)) != 0 ||
	    (r = p11mux_msg_read_any_reply(&m, l->buf, &helper_proto, &rv)) != 0 ||
	    m.call->code != call) {
		p11mux_err_set(e, "%s: the helper is gone (%s)", name,
		               p11mux_strerror(r != 0 ? r : P11MUX_ERR_INVALID));
		rv = LINK_RV_GONE;
		goto out;
	}
	if (rv == CKR_OK && get != NULL)
		rv = get(&m, arg);
	if (rv == CKR_OK && p11mux_msg_end(&m) != 0) {
		p11mux_err_set(e, "%s: a reply that cannot be read", name);
		rv = LINK_RV_GONE;
	} else if (rv != CKR_OK) {
		p11mux_err_set(e, "%s: %s", name, p11mux_rv_name(rv));
	}
out:
	p11mux_msg_clear(&m);
	return rv;
}

/* Reaps the helper, waiting up to wait_ms before killing it. */
static int
reap(struct link *l, unsigned wait_ms)
{
	uint64_t deadline = p11mux_now_ns() + (uint64_t)wait_ms * 1000000u;
	struct timespec pause = {0, 10 * 1000 * 1000};
	int status = -1;
	pid_t r;

	if (l->pid <= 0)
		return -1;
	while ((r = waitpid(l->pid, &status, WNOHANG)) == 0 && p11mux_now_ns() < deadline)
		nanosleep(&pause, NULL);
	if (r == 0) {
		kill(l->pid, SIGKILL);
		while ((r = waitpid(l->pid, &status, 0)) < 0 && errno == EINTR)
			;
	}
	l->pid = 0;
	return r > 0 ? status : -1;
}

int
link_kill(struct link *l)
{
	if (l->pid > 0)
		kill(l->pid, SIGKILL);
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	return reap(l, 0);
}

int
link_close(struct link *l, unsigned wait_ms)
{
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	return reap(l, wait_ms);
}

void
link_status_text(int status, char *dst, size_t n)
{
	if (status == -1)
		snprintf(dst, n, "gone");
	else if (WIFEXITED(status))
		snprintf(dst, n, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(dst, n, "killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(dst, n, "status 0x%x", status);
}
