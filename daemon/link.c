/* The daemon's end of a member's helper: starting it, one call on a channel with a deadline,
 * ending it. */
#include "helper.h"
#include "log.h"
#include "thread.h"
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
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

void
link_init(struct link *l)
{
	unsigned i;

	memset(l, 0, sizeof(*l));
	l->ctl.fd = -1;
	for (i = 0; i < HELPER_MAX_CHANNELS; i++)
		l->op[i].fd = -1;
}

/* Whether env entry a sets the same variable as b. */
static int
same_var(const char *a, const char *b)
{
	size_t n = strcspn(a, "=");

	return strncmp(a, b, n) == 0 && b[n] == '=';
}

/* Whether one of the NULL-ended list's entries sets the same variable as v. */
static int
sets_var(char *const *list, const char *v)
{
	for (; list != NULL && *list != NULL; list++)
		if (same_var(*list, v))
			return 1;
	return 0;
}

/* The helper's environment: the daemon's, with the member's entries (add) and the daemon's
 * own for the helper (extra) added or replacing, extra winning. A NULL-ended array of
 * pointers into environ, add and extra (malloc'ed array only). */
static char **
helper_env(char *const *add, char *const *extra)
{
	size_t n = 0, k = 0, x = 0, i;
	char **env;

	while (environ[n] != NULL)
		n++;
	while (add != NULL && add[k] != NULL)
		k++;
	while (extra[x] != NULL)
		x++;
	if ((env = calloc(n + k + x + 1, sizeof(*env))) == NULL)
		return NULL;
	for (i = 0, n = 0; environ[i] != NULL; i++)
		if (!sets_var(add, environ[i]) && !sets_var(extra, environ[i]))
			env[n++] = environ[i];
	for (i = 0; i < k; i++)
		if (!sets_var(extra, add[i]))
			env[n++] = add[i];
	for (i = 0; i < x; i++)
		env[n++] = extra[i];
	return env;
}

/* Closes both ends of the pairs made so far. */
static void
close_pairs(int (*sv)[2], unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		close(sv[i][0]);
		close(sv[i][1]);
	}
}

/* The child, between fork and exec: only async-signal-safe calls. dup2 clears close-on-exec
 * on the copies, so the helper's ends survive exec; the other ends do not. */
static void
exec_helper(const struct link_spec *spec, int (*sv)[2], unsigned n, pid_t parent, char **argv,
            char **env, const sigset_t *unblocked)
{
	int high[1 + HELPER_MAX_CHANNELS], sig;
	struct sigaction sa;
	unsigned i;

	/* The daemon's handlers must not run here (they write to its stop pipe): signals came
	 * in blocked; handled ones go back to the default before they are unblocked. */
	for (sig = 1; sig < NSIG; sig++)
		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
		    sa.sa_handler != SIG_DFL) {
			sa.sa_handler = SIG_DFL;
			sa.sa_flags = 0;
			sigaction(sig, &sa, NULL);
		}
	sigprocmask(SIG_SETMASK, unblocked, NULL);
	/* First out of the way of the numbers they go to (one of them may be such a number),
	 * then into place. */
	for (i = 0; i < n; i++)
		if ((high[i] = fcntl(sv[i][1], F_DUPFD_CLOEXEC, HELPER_CTL_FD + (int)n)) < 0)
			_exit(127);
	for (i = 0; i < n; i++)
		if (dup2(high[i], HELPER_CTL_FD + (int)i) < 0)
			_exit(127);
	/* The death signal comes when the thread that forked ends, not the process: helpers
	 * are started by the main thread and by member threads, which live as long as their
	 * helpers are wanted. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(127);
	execve(spec->exe, argv, env);
	_exit(127);
}

/* Takes the daemon's ends of the pairs into l, with buffers and the send time-out. */
static int
keep_ends(struct link *l, const struct link_spec *spec, int (*sv)[2], unsigned n)
{
	struct timeval tv = {spec->send_timeout_ms / 1000,
	                     (suseconds_t)(spec->send_timeout_ms % 1000) * 1000};
	struct chan *c;
	unsigned i;
	int r = 0;

	for (i = 0; i < n; i++) {
		c = i == 0 ? &l->ctl : &l->op[i - 1];
		close(sv[i][1]);
		c->fd = sv[i][0];
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (c->buf == NULL && (c->buf = p11mux_buf_new(HELPER_FRAME_MAX)) == NULL)
			r = -1;
	}
	l->nop = n - 1;
	return r;
}

int
link_spawn(struct link *l, const struct link_spec *spec, struct p11mux_err *e)
{
	int sv[1 + HELPER_MAX_CHANNELS][2];
	char title[96], channels[64], parent_var[64], *argv[4], **env;
	char *extra[] = {channels, parent_var, NULL};
	unsigned n = 1 + (spec->channels > HELPER_MAX_CHANNELS ? HELPER_MAX_CHANNELS
	                  : spec->channels < 1                 ? 1
	                                                       : spec->channels),
	         i;
	pid_t parent = getpid(), pid;
	sigset_t all, old;
	int saved;

	/* ps shows the title; the helper takes its name from it. */
	snprintf(title, sizeof(title), "%s%s", HELPER_TITLE, spec->name);
	snprintf(channels, sizeof(channels), "P11MUX_HELPER_CHANNELS=%u", n - 1);
	snprintf(parent_var, sizeof(parent_var), "P11MUX_HELPER_PARENT=%ld", (long)parent);
	argv[0] = title;
	argv[1] = (char *)"--helper";
	argv[2] = spec->use_syslog ? (char *)"--syslog" : NULL;
	argv[3] = NULL;
	/* Everything the child needs is made before fork: after it, in a threaded process, the
	 * child may only make async-signal-safe calls until exec. */
	if ((env = helper_env(spec->env, extra)) == NULL)
		return p11mux_err_set(e, "out of memory");
	for (i = 0; i < n; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) != 0) {
			close_pairs(sv, i);
			free(env);
			return p11mux_err_set(e, "socketpair: %s", strerror(errno));
		}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if ((pid = fork()) == 0)
		exec_helper(spec, sv, n, parent, argv, env, &old);
	saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	free(env);
	if (pid < 0) {
		close_pairs(sv, n);
		return p11mux_err_set(e, "fork: %s", strerror(saved));
	}
	l->pid = pid;
	if (keep_ends(l, spec, sv, n) != 0) {
		link_kill(l);
		link_close(l, 0);
		return p11mux_err_set(e, "out of memory");
	}
	return 0;
}

/* Reads the reply to call: the helper's CK_RV, LINK_RV_TIMEOUT when the whole reply did not
 * come by the deadline, LINK_RV_GONE when the helper is gone or the reply does not decode. */
static CK_RV
read_reply(struct chan *c, struct p11mux_msg *m, uint32_t call, link_get_fn get, void *arg,
           uint64_t deadline, unsigned timeout_ms, struct p11mux_err *e)
{
	const char *name = helper_calls[call].name;
	CK_RV rv = LINK_RV_GONE;
	int r;

	/* The whole reply by the deadline: a helper that stops half way is as hung as one that
	 * never starts. */
	if ((r = p11mux_frame_recv_until(c->fd, c->buf, HELPER_FRAME_MAX, deadline)) ==
	    P11MUX_ERR_TIMEOUT) {
		p11mux_err_set(e, "%s: no answer within %u ms", name, timeout_ms);
		return LINK_RV_TIMEOUT;
	}
	if (r != 0 || (r = p11mux_msg_read_any_reply(m, c->buf, &helper_proto, &rv)) != 0 ||
	    m->call->code != call) {
		p11mux_err_set(e, "%s: the helper is gone (%s)", name,
		               p11mux_strerror(r != 0 ? r : P11MUX_ERR_INVALID));
		return LINK_RV_GONE;
	}
	if (p11muxd_own_rv(rv))
		rv = CKR_FUNCTION_FAILED;
	if (rv == CKR_OK && get != NULL)
		rv = get(m, arg);
	if (rv == CKR_OK && p11mux_msg_end(m) != 0) {
		p11mux_err_set(e, "%s: a reply that cannot be read", name);
		rv = LINK_RV_GONE;
	} else if (rv != CKR_OK && !link_lost(rv)) {
		p11mux_err_set(e, "%s: %s", name, p11mux_rv_name(rv));
	}
	return rv;
}

CK_RV
chan_call(struct chan *c, uint32_t call, link_put_fn put, link_get_fn get, void *arg,
          unsigned timeout_ms, struct p11mux_err *e, int *sent)
{
	const char *name = helper_calls[call].name;
	struct p11mux_msg m = {0};
	CK_RV rv = LINK_RV_GONE;
	int r;

	if (sent != NULL)
		*sent = 0;
	p11mux_msg_request(&m, c->buf, &helper_proto, call, 0);
	if (put != NULL)
		put(&m, arg);
	if ((r = p11mux_msg_end(&m)) != 0) {
		p11mux_err_set(e, "%s: %s", name, p11mux_strerror(r));
		rv = r == P11MUX_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
	} else if ((r = p11mux_frame_send(c->fd, c->buf)) != 0) {
		p11mux_err_set(e, "%s: the helper is gone (%s)", name, p11mux_strerror(r));
	} else {
		if (sent != NULL)
			*sent = 1;
		rv = read_reply(c, &m, call, get, arg,
		                p11mux_now_ns() + (uint64_t)timeout_ms * 1000000u, timeout_ms, e);
	}
	p11mux_msg_clear(&m);
	/* Nothing stays behind: the request may have held the PIN, the reply plaintext. */
	p11mux_buf_reset(c->buf);
	if (link_lost(rv))
		c->lost = 1;
	return rv;
}

void
link_kill(struct link *l)
{
	if (l->pid > 0)
		kill(l->pid, SIGKILL);
}

/* Helpers that had not ended a while after SIGKILL (a process in uninterruptible sleep, in a
 * device driver, ends only when the driver lets it): reaped later, by any link_close(), so
 * that a member thread never blocks on one. */
#define KILL_WAIT_MS 5000u
#define MAX_STRAYS   32
static pthread_mutex_t strays_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t strays[MAX_STRAYS];

static void
reap_strays(void)
{
	size_t i;

	p11mux_lock(&strays_lock);
	for (i = 0; i < MAX_STRAYS; i++)
		if (strays[i] > 0 && waitpid(strays[i], NULL, WNOHANG) != 0)
			strays[i] = 0;
	p11mux_unlock(&strays_lock);
}

static void
add_stray(pid_t pid)
{
	size_t i;

	p11mux_lock(&strays_lock);
	for (i = 0; i < MAX_STRAYS && strays[i] > 0; i++)
		;
	if (i < MAX_STRAYS)
		strays[i] = pid; /* else it stays a zombie once it ends: 32 stuck already */
	p11mux_unlock(&strays_lock);
}

int
link_close(struct link *l, unsigned wait_ms)
{
	struct timespec pause = {0, 5 * 1000 * 1000};
	uint64_t deadline;
	int status = -1;
	unsigned i;
	pid_t r;

	if (l->ctl.lost)
		wait_ms = 0;
	deadline = p11mux_now_ns() + (uint64_t)wait_ms * 1000000u;
	l->ctl.lost = 0;
	if (l->ctl.fd >= 0)
		close(l->ctl.fd);
	for (i = 0; i < l->nop; i++)
		if (l->op[i].fd >= 0)
			close(l->op[i].fd);
	l->ctl.fd = -1;
	for (i = 0; i < HELPER_MAX_CHANNELS; i++)
		l->op[i].fd = -1;
	l->nop = 0;
	if (l->pid <= 0)
		return -1;
	reap_strays();
	while ((r = waitpid(l->pid, &status, WNOHANG)) == 0 && p11mux_now_ns() < deadline)
		nanosleep(&pause, NULL);
	if (r == 0) {
		kill(l->pid, SIGKILL);
		deadline = p11mux_now_ns() + KILL_WAIT_MS * 1000000ull;
		while ((r = waitpid(l->pid, &status, WNOHANG)) == 0 && p11mux_now_ns() < deadline)
			nanosleep(&pause, NULL);
		if (r == 0) {
			log_error("helper %ld still there %u ms after SIGKILL (stuck in a "
			          "driver?); reaped when it ends",
			          (long)l->pid, KILL_WAIT_MS);
			add_stray(l->pid);
		}
	}
	l->pid = 0;
	return r > 0 ? status : -1;
}

void
link_free(struct link *l)
{
	unsigned i;

	p11mux_buf_free(l->ctl.buf);
	l->ctl.buf = NULL;
	for (i = 0; i < HELPER_MAX_CHANNELS; i++) {
		p11mux_buf_free(l->op[i].buf);
		l->op[i].buf = NULL;
	}
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
