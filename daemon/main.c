/* p11muxd: serves a pool of HSMs to PKCS#11 applications through p11mux-pkcs11.so. */
#include "control.h"
#include "daemon.h"
#include "helper.h"
#include "inspect.h"
#include "log.h"
#include "pin.h"
#include "secret.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Written by the signal handler; read by server_run() (stop) and the control thread
 * (reload). */
static int stop_fd = -1;
static int reload_fd = -1;

static void
on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (write(sig == SIGHUP ? reload_fd : stop_fd, &c, 1) < 0) {
		/* Nothing to do: the pipe is full, so a stop is already pending. */
	}
	errno = saved;
}

/* Where the configuration is when -c does not say. */
#define DEFAULT_CONFIG "/etc/p11mux/p11mux.conf"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: p11muxd [-c FILE] [-f] [-d]\n"
	        "       p11muxd [-c FILE] -t\n"
	        "       p11muxd [-c FILE] --list-tokens\n"
	        "       p11muxd --help | --version\n"
	        "  -c, --config FILE  configuration file (libconfig syntax; default " DEFAULT_CONFIG
	        ")\n"
	        "  -f, --foreground   stay in the foreground and log to stderr\n"
	        "  -d, --debug        log debug messages\n"
	        "  -t, --check        check the configuration, its module and pin files, and "
	        "exit;\n"
	        "                     no device is touched\n"
	        "  -l, --list-tokens  list the tokens each pool's module shows (no login), and "
	        "exit\n"
	        "  -h, --help         print this help and exit\n"
	        "  -V, --version      print the version and exit\n"
	        "See p11muxd(8) and p11mux.conf(5).\n");
}

/* How long a detaching daemon's command waits for it to be ready. */
#define READY_WAIT_S 120

/* Moves *fd to a number above 2 (close-on-exec). */
static int
above_stdio(int *fd)
{
	int nfd;

	if (*fd > 2)
		return 0;
	if ((nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return -1;
	close(*fd);
	*fd = nfd;
	return 0;
}

/* The starting process's end when the daemon failed to start: the daemon's exit status
 * and its last error come down the pipe ('f', the status, the message), printed here so that
 * the command that starts the daemon says why, where there is no system log too. */
static void __attribute__((noreturn)) failed_start(int fd, int told)
{
	char msg[1040];
	ssize_t n = 0, got;
	unsigned char status = 1;

	if (told && read(fd, &status, 1) == 1)
		while (n < (ssize_t)sizeof(msg) - 1 &&
		       ((got = read(fd, msg + n, sizeof(msg) - 1 - (size_t)n)) > 0 ||
		        (got < 0 && errno == EINTR)))
			n += got > 0 ? got : 0;
	msg[n] = '\0';
	if (n > 0)
		fprintf(stderr, "p11muxd: failed to start: %s\n", msg);
	else
		fprintf(stderr, "p11muxd: failed to start; see the system log\n");
	_exit(status != 0 ? status : 1);
}

/* Tells the starting process that the daemon failed to start, with status and the last error
 * logged (the daemon logs to syslog by now). */
static void
announce_failure(int ready_fd, int status)
{
	char msg[1040];
	unsigned char st = (unsigned char)status;

	p11mux_log_last_error(msg, sizeof(msg));
	if (write(ready_fd, "f", 1) != 1 || write(ready_fd, &st, 1) != 1 ||
	    write(ready_fd, msg, strlen(msg)) < 0)
		log_error("cannot tell the starting process why the daemon failed");
	close(ready_fd);
}

/*
 * Detaches. The process that was started stays until the daemon is ready (exit 0) or has
 * failed (exit 1; the reason is in syslog), so "p11muxd -c FILE && start the web server"
 * never starts the web server before the socket accepts; it waits READY_WAIT_S at most.
 * Returns the pipe's write end, which the daemon passes to announce_ready(), or -1.
 */
static int
daemonize(void)
{
	pid_t pid;
	int fd, ready[2];
	ssize_t n;
	char c;

	/* Started with 0, 1 or 2 closed, the pipe could get one of them, and the daemon's
	 * /dev/null would replace it: keep the ends above 2. */
	if (pipe2(ready, O_CLOEXEC) != 0 || above_stdio(&ready[0]) != 0 ||
	    above_stdio(&ready[1]) != 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid > 0) {
		struct pollfd pfd = {.fd = ready[0], .events = POLLIN};

		close(ready[1]);
		/* A member whose module hangs in C_Initialize or C_Login would hold the command
		 * forever: give up waiting after READY_WAIT_S, and say so. */
		do
			n = poll(&pfd, 1, READY_WAIT_S * 1000);
		while (n < 0 && errno == EINTR);
		if (n == 0) {
			fprintf(stderr,
			        "p11muxd: not ready after %d s; still starting in the background "
			        "(see the system log)\n",
			        READY_WAIT_S);
			_exit(1);
		}
		do
			n = read(ready[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1 && c == 'r')
			_exit(0);
		failed_start(ready[0], n == 1 && c == 'f');
	}
	close(ready[0]);
	if (setsid() < 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (chdir("/") != 0)
		return -1;
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return ready[1];
}

/*
 * Tells whoever waits that the sockets accept: the process that started a detaching daemon
 * (through ready_fd), and systemd with Type=notify (READY=1 to $NOTIFY_SOCKET), so that
 * units ordered After= this one start only then.
 */
static void
announce_ready(int ready_fd)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	static const char msg[] = "READY=1";
	socklen_t len;
	int fd;

	if (ready_fd >= 0) {
		if (write(ready_fd, "r", 1) != 1)
			log_error("cannot tell the starting process that the daemon is ready");
		close(ready_fd);
	}
	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path, path, strlen(path));
	if (path[0] == '@')
		sun.sun_path[0] = '\0'; /* an abstract socket */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return;
	if (sendto(fd, msg, sizeof(msg) - 1, 0, (struct sockaddr *)&sun, len) < 0)
		log_error("cannot notify systemd at %s: %s", path, strerror(errno));
	close(fd);
}

/* What the command line asks for. */
struct opts {
	const char *path;
	int foreground, debug, check, list;
};

/* Parses the command line. -1 to go on, else the exit status. */
static int
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	        {"config", required_argument, NULL, 'c'}, {"foreground", no_argument, NULL, 'f'},
	        {"debug", no_argument, NULL, 'd'},        {"check", no_argument, NULL, 't'},
	        {"list-tokens", no_argument, NULL, 'l'},  {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	int opt;

	memset(o, 0, sizeof(*o));
	o->path = DEFAULT_CONFIG;
	while ((opt = getopt_long(argc, argv, "c:fdtlhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			o->path = optarg;
			break;
		case 'f':
			o->foreground = 1;
			break;
		case 'd':
			o->debug = 1;
			break;
		case 't':
			o->check = 1;
			break;
		case 'l':
			o->list = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("p11muxd %s\n", P11MUX_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (o->check && o->list)) {
		usage(stderr);
		return 2;
	}
	return -1;
}

/* SIGTERM and SIGINT stop the daemon through its stop pipe; SIGHUP reloads the
 * configuration through the reload pipe (live.h); SIGPIPE is ignored. */
static int
catch_signals(struct daemon *d)
{
	struct sigaction sa;

	if (pipe2(d->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    pipe2(d->reload_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		log_error("pipe: %s", strerror(errno));
		return -1;
	}
	stop_fd = d->stop_pipe[1];
	reload_fd = d->reload_pipe[1];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	return 0;
}

/* Opens and starts every pool of the configuration. 0, or -1 after logging why. */
static int
open_pools(struct daemon *d)
{
	struct p11mux_err e = {""};
	size_t i;

	if (d->cfg->npools > P11MUX_MAX_POOLS) {
		log_error("%s: %zu pools; p11muxd serves %d at most", d->cfg->path, d->cfg->npools,
		          P11MUX_MAX_POOLS);
		return -1;
	}
	/* Room for the pools a reload adds: their addresses never change. */
	if ((d->pools = calloc(P11MUX_MAX_POOLS, sizeof(*d->pools))) == NULL) {
		log_error("out of memory");
		return -1;
	}
	for (i = 0; i < d->cfg->npools; i++) {
		d->npools = i + 1;
		if (pool_open(&d->pools[i], i, &d->cfg->pools[i], "/proc/self/exe", d->use_syslog,
		              &e) != 0) {
			log_error("%s", e.msg);
			return -1;
		}
	}
	for (i = 0; i < d->npools; i++)
		if (pool_start(&d->pools[i]) != 0) {
			log_error("pool \"%s\": cannot start its workers", d->pools[i].label);
			return -1;
		}
	return 0;
}

/* Closes the pools (their members' helpers end with them), the sockets and the stop pipe. */
static void
close_daemon(struct daemon *d)
{
	size_t i;

	apps_destroy(&d->apps);
	for (i = 0; i < d->npools; i++)
		pool_close(&d->pools[i]);
	free(d->pools);
	control_end();
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		unlink(d->cfg->socket);
	}
	if (d->control_fd >= 0) {
		close(d->control_fd);
		unlink(d->cfg->control_socket);
	}
	if (d->stop_pipe[0] >= 0) {
		close(d->stop_pipe[0]);
		close(d->stop_pipe[1]);
	}
	if (d->reload_pipe[0] >= 0) {
		close(d->reload_pipe[0]);
		close(d->reload_pipe[1]);
	}
	config_free(d->cfg);
	for (i = 0; i < d->nreloaded; i++)
		config_free(d->reloaded[i]);
	free(d->reloaded);
	pthread_mutex_destroy(&d->lock);
}

/*
 * Checks every pool's pin file (it exists, is a regular file, belongs to the user the daemon
 * runs as and is closed to everybody else), so that a bad one stops the start before any
 * helper runs. 0, or -1 after logging why.
 */
static int
check_pin_files(const struct config *cfg)
{
	struct p11mux_err e = {""};
	size_t i;
	int r = 0;

	for (i = 0; i < cfg->npools; i++) {
		if (pin_check_file(cfg->pools[i].pin_file, &e) == 0)
			continue;
		log_error("%s", e.msg);
		r = -1;
	}
	return r;
}

/* p11muxd -t and --list-tokens: the exit status. */
static int
inspect(const struct opts *o, const struct config *cfg)
{
	if (o->list)
		return inspect_tokens(cfg, "/proc/self/exe") == 0 ? 0 : 1;
	if (inspect_check(cfg) != 0)
		return 2;
	printf("%s: configuration OK (%zu pool%s)\n", o->path, cfg->npools,
	       cfg->npools == 1 ? "" : "s");
	return 0;
}

/* Every member takes workers_per_member + 2 descriptors, every client one: the soft limit
 * (often 1024) goes up to the hard one, so that a probe's socketpair does not fail for want
 * of descriptors while clients are many. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("cannot raise the descriptor limit: %s", strerror(errno));
	}
}

int
main(int argc, char **argv)
{
	struct daemon d;
	struct opts o;
	struct p11mux_err err = {""};
	int status = 1, ready_fd = -1;
	size_t i;

	/* A member's helper: p11muxd re-executed by the daemon (helper.c). */
	if (argc >= 2 && strcmp(argv[1], "--helper") == 0)
		return helper_main(strncmp(argv[0], HELPER_TITLE, strlen(HELPER_TITLE)) == 0
		                           ? argv[0] + strlen(HELPER_TITLE)
		                           : argv[0],
		                   argc > 2 && strcmp(argv[2], "--syslog") == 0);
	/* No core file with the PIN in it, whatever limit was inherited, and no ptrace or
	 * /proc/PID/mem by other processes of the daemon's user. */
	if (p11mux_secret_protect_process() != 0) {
		fprintf(stderr, "p11muxd: cannot turn core dumps off: %s\n", strerror(errno));
		return 1;
	}
	if ((status = parse_args(argc, argv, &o)) >= 0)
		return status;
	status = 1;
	memset(&d, 0, sizeof(d));
	d.listen_fd = -1;
	d.control_fd = -1;
	d.stop_pipe[0] = d.stop_pipe[1] = -1;
	d.reload_pipe[0] = d.reload_pipe[1] = -1;
	d.debug = o.debug;
	pthread_mutex_init(&d.lock, NULL);
	if ((d.cfg = config_load(o.path, &err)) == NULL) {
		fprintf(stderr, "p11muxd: %s\n", err.msg);
		return 2;
	}
	if (o.check || o.list) {
		status = inspect(&o, d.cfg);
		config_free(d.cfg);
		return status;
	}
	p11mux_log_set_level(o.debug ? P11MUX_LOG_DEBUG : d.cfg->log_level);
	/* Before detaching, so that the command that starts the daemon prints the reason. */
	if (check_pin_files(d.cfg) != 0)
		goto out;
	if (!o.foreground) {
		if ((ready_fd = daemonize()) < 0) {
			fprintf(stderr, "p11muxd: cannot detach: %s\n", strerror(errno));
			goto out;
		}
		p11mux_log_syslog("p11muxd");
		d.use_syslog = 1;
	}
	raise_fd_limit();
	if (catch_signals(&d) != 0 ||
	    apps_init(&d.apps, d.cfg->limits.session_objects, d.cfg->limits.session_object_bytes,
	              d.cfg->limits.session_objects_per_uid,
	              d.cfg->limits.session_object_bytes_per_uid,
	              d.cfg->limits.session_objects_total) != 0 ||
	    open_pools(&d) != 0 || server_listen(&d) != 0 || control_listen(&d) != 0) {
		/* A PIN a member refused has its own status: the unit does not restart on it
		 * (RestartPreventExitStatus), a restart would only fail the same way. */
		for (i = 0; i < d.npools; i++)
			if (d.pools[i].pin_refused)
				status = P11MUXD_EXIT_PIN_REFUSED;
		goto out;
	}
	log_info("ready");
	announce_ready(ready_fd);
	ready_fd = -1;
	server_run(&d);
	log_info("stopping");
	for (i = 0; i < d.npools; i++)
		pool_log_stats(&d.pools[i]);
	status = 0;
out:
	if (ready_fd >= 0)
		announce_failure(ready_fd, status); /* never ready: the starting process says why */
	close_daemon(&d);
	return status;
}
