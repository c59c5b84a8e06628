/*
 * p11muxctl: see and steer a running p11muxd through its control socket.
 *   p11muxctl [-s SOCKET] status [--json] [--watch SECONDS]
 *   p11muxctl [-s SOCKET] keys [--json]       sorted; exit 1 when the pool is inconsistent
 *   p11muxctl [-s SOCKET] metrics             Prometheus text format
 *   p11muxctl [-s SOCKET] drain MEMBER | resume MEMBER
 *   p11muxctl [-s SOCKET] unlock-pin POOL     reset the pool's PIN counter (root)
 *   p11muxctl [-s SOCKET] rescan [MEMBER]     re-read the members' keys (root)
 *   p11muxctl [-s SOCKET] reload              re-read the configuration (root)
 * The socket is -s, else $P11MUX_CONTROL, else /run/p11mux/control.sock.
 * Exit status: 0 ok, 1 the daemon said no (or keys are inconsistent), 2 usage or no daemon.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONTROL "/run/p11mux/control.sock"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: p11muxctl [-s SOCKET] COMMAND [ARGUMENTS]\n"
	        "       p11muxctl --help | --version\n"
	        "Commands:\n"
	        "  status [--json] [--watch SECONDS]\n"
	        "                    every pool and member: state, load, latency, errors "
	        "(--watch redraws)\n"
	        "  keys [--json]     the key inventory, sorted by label and ID: which members hold "
	        "each key,\n"
	        "                    lack it or hold another; exit 1 when they differ\n"
	        "  metrics           the members' counters in the Prometheus text format\n"
	        "  drain MEMBER      the member (label or serial) finishes its queue and takes no "
	        "new work\n"
	        "  resume MEMBER     a drained member takes work again\n"
	        "  unlock-pin POOL   after pin_max_failures wrong PINs: reset the pool's PIN "
	        "counter (root)\n"
	        "  rescan [MEMBER]   re-read the keys of every member, or of one: new keys "
	        "appear,\n"
	        "                    keys no member holds are withdrawn; new tokens of a pool of "
	        "every\n"
	        "                    token present join, members that are down are probed now "
	        "(root)\n"
	        "  reload            re-read the configuration file, as SIGHUP does: members, "
	        "pools,\n"
	        "                    scheduling and health keys; client connections stay open "
	        "(root)\n"
	        "Options:\n"
	        "  -s SOCKET         the control socket: -s, else $P11MUX_CONTROL, "
	        "else " DEFAULT_CONTROL "\n"
	        "  -h, --help        print this help and exit\n"
	        "  -V, --version     print the version and exit\n"
	        "Exit status: 0 ok, 1 the daemon said no (or keys differ), 2 usage or no daemon.\n"
	        "See p11muxctl(8).\n");
}

/* Sends one command and returns the whole answer (malloc()ed), or NULL after a message. */
static char *
ask(const char *path, const char *cmd)
{
	struct sockaddr_un sa;
	struct passwd *pw;
	char *ans = NULL, *n;
	size_t len = 0, cap = 0;
	ssize_t got;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "p11muxctl: socket path too long: %s\n", path);
		return NULL;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		if (e == EACCES || e == EPERM) {
			pw = getpwuid(getuid());
			fprintf(stderr,
			        "p11muxctl: permission denied on %s for user %s (uid %lu): the "
			        "socket "
			        "is mode 0660; join its group (socket_group) and ask to be listed "
			        "in "
			        "control_allowed_users or control_allowed_groups\n",
			        path, pw != NULL ? pw->pw_name : "?", (unsigned long)getuid());
		} else {
			fprintf(stderr,
			        "p11muxctl: cannot reach p11muxd at %s: %s (is p11muxd running? "
			        "its "
			        "control_socket setting names the path; use -s or "
			        "$P11MUX_CONTROL)\n",
			        path, strerror(e));
		}
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0 || send(fd, "\n", 1, MSG_NOSIGNAL) < 0) {
		fprintf(stderr, "p11muxctl: %s: %s\n", path, strerror(errno));
		close(fd);
		return NULL;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			if ((n = realloc(ans, cap + 65536)) == NULL) {
				free(ans);
				close(fd);
				return NULL;
			}
			ans = n;
			cap += 65536;
		}
		got = read(fd, ans + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	if (ans == NULL || len == 0) {
		fprintf(stderr,
		        "p11muxctl: p11muxd at %s closed the connection without an answer\n", path);
		free(ans);
		return NULL;
	}
	ans[len] = '\0';
	return ans;
}

/* Prints the body of an answer; returns the exit status its first line calls for. */
static int
show(const char *ans)
{
	const char *body = strchr(ans, '\n');

	body = body != NULL ? body + 1 : "";
	if (strncmp(ans, "error: ", 7) == 0) {
		/* The details after it (a rescan's members) go to the standard output. */
		fprintf(stderr, "p11muxctl: %.*s\n", (int)strcspn(ans + 7, "\n"), ans + 7);
		fputs(body, stdout);
		return 1;
	}
	fputs(body, stdout);
	fflush(stdout);
	return strncmp(ans, "ok", 2) == 0 && (ans[2] == '\n' || ans[2] == '\0') ? 0 : 1;
}

int
main(int argc, char **argv)
{
	const char *path = getenv("P11MUX_CONTROL");
	char cmd[300], *ans;
	int i = 1, json = 0, rc;
	long watch = 0;

	if (path == NULL || *path == '\0')
		path = DEFAULT_CONTROL;
	if (i + 1 < argc && strcmp(argv[i], "-s") == 0) {
		path = argv[i + 1];
		i += 2;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
		printf("p11muxctl %s\n", P11MUX_VERSION);
		return 0;
	}
	if (strcmp(argv[i], "status") == 0 || strcmp(argv[i], "keys") == 0) {
		const char *what = argv[i];

		for (i++; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0)
				json = 1;
			else if (strcmp(what, "status") == 0 && strcmp(argv[i], "--watch") == 0 &&
			         i + 1 < argc && (watch = strtol(argv[i + 1], NULL, 10)) > 0)
				i++;
			else {
				usage(stderr);
				return 2;
			}
		}
		snprintf(cmd, sizeof(cmd), "%s%s", what, json ? " json" : "");
	} else if ((strcmp(argv[i], "metrics") == 0 || strcmp(argv[i], "reload") == 0 ||
	            strcmp(argv[i], "rescan") == 0) &&
	           i + 1 == argc) {
		snprintf(cmd, sizeof(cmd), "%s", argv[i]);
	} else if ((strcmp(argv[i], "drain") == 0 || strcmp(argv[i], "resume") == 0 ||
	            strcmp(argv[i], "unlock-pin") == 0 || strcmp(argv[i], "rescan") == 0) &&
	           i + 2 == argc && strlen(argv[i + 1]) < 200 &&
	           strchr(argv[i + 1], '\n') == NULL) {
		snprintf(cmd, sizeof(cmd), "%s %s", argv[i], argv[i + 1]);
	} else {
		usage(stderr);
		return 2;
	}
	for (;;) {
		if ((ans = ask(path, cmd)) == NULL)
			return 2;
		if (watch > 0)
			fputs("\033[H\033[2J", stdout); /* redraw in place */
		rc = show(ans);
		free(ans);
		if (watch <= 0)
			return rc;
		sleep((unsigned)watch);
	}
}
