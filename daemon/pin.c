#include "pin.h"
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A pin file holds a few lines: anything bigger is not one (and would be locked into RAM). */
#define PIN_FILE_MAX (64 * 1024)

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* The file that pin_file names: itself, or for "credential:NAME" the copy that systemd's
 * LoadCredential=NAME:FILE put into $CREDENTIALS_DIRECTORY. */
static int
resolve(const char *pin_file, char *path, size_t size, struct p11mux_err *e)
{
	const char *name, *dir;
	int n;

	if (strncmp(pin_file, PIN_CREDENTIAL, strlen(PIN_CREDENTIAL)) != 0) {
		n = snprintf(path, size, "%s", pin_file);
	} else {
		name = pin_file + strlen(PIN_CREDENTIAL);
		if (*name == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
		    strcmp(name, "..") == 0)
			return p11mux_err_set(e,
			                      "%s: not a credential's name (pin_file = "
			                      "\"credential:NAME\" with LoadCredential=NAME:FILE)",
			                      pin_file);
		dir = secure_getenv("CREDENTIALS_DIRECTORY");
		if (dir == NULL || *dir == '\0')
			return p11mux_err_set(
			        e,
			        "%s: $CREDENTIALS_DIRECTORY is not set (systemd sets it "
			        "for a unit with LoadCredential=%s:FILE)",
			        pin_file, name);
		n = snprintf(path, size, "%s/%s", dir, name);
	}
	if (n < 0 || (size_t)n >= size)
		return p11mux_err_set(e, "%.64s...: path too long", pin_file);
	return 0;
}

/* "name (uid N)", or "uid N" for a uid without a name. */
static const char *
user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd pw, *found = NULL;
	char tmp[1024];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &found) == 0 && found != NULL)
		snprintf(buf, size, "%s (uid %lu)", found->pw_name, (unsigned long)uid);
	else
		snprintf(buf, size, "uid %lu", (unsigned long)uid);
	return buf;
}

/* Opens path, a regular file that the daemon's user owns and nobody else may read or write;
 * the checks are made on the file opened, not on its name. The descriptor in *fdp, its size
 * in *sizep. */
static int
open_checked(const char *path, int *fdp, size_t *sizep, struct p11mux_err *e)
{
	char owner[96], me[96];
	struct stat st;
	int fd;

	/* O_NONBLOCK: a FIFO in its place must not hang the daemon (it is refused below). */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
		return p11mux_err_set(e, "%s: cannot read the pin file: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0)
		p11mux_err_set(e, "%s: cannot read the pin file: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		p11mux_err_set(e, "%s: the pin file is not a regular file", path);
	else if (st.st_uid != geteuid())
		p11mux_err_set(e,
		               "%s: the pin file belongs to %s, but p11muxd runs as %s: chown %lu "
		               "%s; chmod 600 %s",
		               path, user_name(st.st_uid, owner, sizeof(owner)),
		               user_name(geteuid(), me, sizeof(me)), (unsigned long)geteuid(), path,
		               path);
	else if (st.st_mode & 077)
		p11mux_err_set(e,
		               "%s: the pin file may be read or written by others than its owner "
		               "(mode %04o): chmod 600 %s",
		               path, (unsigned)(st.st_mode & 07777), path);
	else if (st.st_size > PIN_FILE_MAX)
		p11mux_err_set(e, "%s: too large for a pin file (over %d bytes)", path,
		               PIN_FILE_MAX);
	else {
		*fdp = fd;
		*sizep = (size_t)st.st_size;
		return 0;
	}
	close(fd);
	return -1;
}

/* The file's bytes (at most size), NUL-terminated, in secret memory; their count in *len. */
static char *
read_text(int fd, size_t size, size_t *len, const char *path, struct p11mux_err *e)
{
	char *text;
	size_t got = 0;
	ssize_t n;

	if ((text = p11mux_secret_alloc(size + 1)) == NULL) {
		p11mux_err_set(e, "%s: out of memory", path);
		return NULL;
	}
	while (got < size) {
		if ((n = read(fd, text + got, size - got)) < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			p11mux_err_set(e, "%s: cannot read the pin file: %s", path,
			               strerror(errno));
			p11mux_secret_free(text);
			return NULL;
		}
		if (n == 0)
			break; /* it shrank since fstat */
		got += (size_t)n;
	}
	text[got] = '\0';
	*len = got;
	return text;
}

/* The PIN for one of the labels in text[0..len), a pointer into text (whose lines it cuts),
 * or NULL; see pin_read for the rules. */
static char *
find_pin(char *text, size_t len, const char *const *labels, size_t nlabels)
{
	char *line, *next, *t, *found = NULL, *bare = NULL, *end = text + len;
	size_t i, n, nlines = 0;

	/* memchr, not strchr: a NUL byte ends its line only, as it did with getline. */
	for (line = text; line < end; line = next) {
		if ((next = memchr(line, '\n', (size_t)(end - line))) != NULL)
			*next++ = '\0';
		else
			next = end;
		t = trim(line);
		if (*t == '\0' || *t == '#')
			continue;
		nlines++;
		for (i = 0; i < nlabels; i++) {
			n = strlen(labels[i]);
			if (strncmp(t, labels[i], n) == 0 && t[n] == ':') {
				found = trim(t + n + 1);
				break;
			}
		}
		if (nlines == 1 && strchr(t, ':') == NULL)
			bare = t;
	}
	if (found == NULL && nlines == 1)
		found = bare;
	return found;
}

int
pin_check_file(const char *pin_file, struct p11mux_err *e)
{
	char path[PATH_MAX];
	size_t size;
	int fd;

	if (resolve(pin_file, path, sizeof(path), e) != 0 || open_checked(path, &fd, &size, e) != 0)
		return -1;
	close(fd);
	return 0;
}

int
pin_read(const char *pin_file, const char *const *labels, size_t nlabels, char **pin,
         size_t *pinlen, struct p11mux_err *e)
{
	char path[PATH_MAX], *text = NULL, *found, *copy;
	size_t size = 0, len = 0;
	int fd, r = -1;

	if (resolve(pin_file, path, sizeof(path), e) != 0 || open_checked(path, &fd, &size, e) != 0)
		return -1;
	text = read_text(fd, size, &len, path, e);
	close(fd);
	if (text == NULL)
		return -1;
	if ((found = find_pin(text, len, labels, nlabels)) == NULL) {
		p11mux_err_set(
		        e,
		        "%s: no PIN for token \"%s\" (expected a line \"%s:PIN\" or a single line "
		        "holding the PIN)",
		        path, nlabels > 0 ? labels[0] : "?", nlabels > 0 ? labels[0] : "LABEL");
		goto out;
	}
	if (*found == '\0') {
		p11mux_err_set(e, "%s: the PIN for token \"%s\" is empty", path,
		               nlabels > 0 ? labels[0] : "?");
		goto out;
	}
	if ((copy = pin_dup(found, strlen(found))) == NULL) {
		p11mux_err_set(e, "%s: out of memory", path);
		goto out;
	}
	*pinlen = strlen(found);
	*pin = copy;
	r = 0;
out:
	p11mux_secret_free(text);
	return r;
}

char *
pin_dup(const void *p, size_t len)
{
	char *copy;

	if ((copy = p11mux_secret_alloc(len + 1)) != NULL && len > 0)
		memcpy(copy, p, len);
	return copy;
}

void
pin_free(char *pin)
{
	p11mux_secret_free(pin);
}

int
pin_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	volatile unsigned char diff = (unsigned char)(alen != blen);
	size_t i, n = alen > blen ? alen : blen;

	for (i = 0; i < n; i++) {
		unsigned char x = i < alen ? (unsigned char)a[i] : 0;
		unsigned char y = i < blen ? (unsigned char)b[i] : 0;

		diff |= x ^ y;
	}
	return diff == 0;
}
