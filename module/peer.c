/*
 * Who the shim talks to. The shim sends PINs to whoever listens on the socket: before it
 * sends anything, the listener must be the socket file's owner (or root), and nobody else
 * may have been able to put a socket of their own at that path, i.e. neither the socket
 * file nor its directory is writable by others.
 */
#include "module.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Fills why (len bytes) and returns -1 when the daemon on fd at path is not to be trusted;
 * 0 when it is. */
static int
peer_untrusted(int fd, const char *path, char *why, size_t len)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct stat sock, dir;
	char *real = NULL, *dirpath;
	int r = -1;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0)
		snprintf(why, len, "SO_PEERCRED on %s: %s", path, strerror(errno));
	else if ((real = realpath(path, NULL)) == NULL || stat(real, &sock) != 0)
		snprintf(why, len, "cannot stat %s: %s", path, strerror(errno));
	else if (cred.uid != 0 && cred.uid != sock.st_uid)
		snprintf(why, len,
		         "%s belongs to uid %u, but the process listening on it (pid %ld) "
		         "runs as uid %u",
		         real, (unsigned)sock.st_uid, (long)cred.pid, (unsigned)cred.uid);
	else if (sock.st_mode & S_IWOTH)
		snprintf(why, len, "%s is writable by others", real);
	else if (stat((dirpath = dirname(real)), &dir) != 0)
		snprintf(why, len, "cannot stat %s: %s", dirpath, strerror(errno));
	else if (dir.st_mode & S_IWOTH)
		snprintf(why, len, "the directory of the socket, %s, is writable by others",
		         dirpath);
	else
		r = 0;
	free(real);
	return r;
}

CK_RV
peer_check(struct conn *c, const char *path)
{
	char why[PATH_MAX + 128];

	if (peer_untrusted(c->fd, path, why, sizeof(why)) == 0)
		return CKR_OK;
	shim_debug("not talking to the daemon: %s", why);
	shim_refused("connecting to p11muxd", CKR_DEVICE_ERROR, why);
	close(c->fd);
	c->fd = -1;
	return CKR_DEVICE_ERROR;
}
