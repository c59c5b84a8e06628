/*
 * The control directory: one file per token label that says what is wrong with the device
 * ("removed", "hang", "error RATE", "slow FACTOR", "pin-locked", "crash [RATE]", "crash-on HEX";
 * empty or absent: healthy),
 * and one file per token with its PIN retry counter. A shell script or a test changes them
 * while the module runs; the module looks at them with a stat() at most every SIM_POLL_MS.
 */
#include "p11sim.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTL_MAX 4096

static int
same_file(const struct sim_file_id *id, const struct stat *st)
{
	return id->exists && id->dev == st->st_dev && id->ino == st->st_ino &&
	       id->size == st->st_size && id->mtime.tv_sec == st->st_mtim.tv_sec &&
	       id->mtime.tv_nsec == st->st_mtim.tv_nsec && id->ctime.tv_sec == st->st_ctim.tv_sec &&
	       id->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* "crash-on HEX": the input prefix whose operations crash. 0, or -1 when HEX is not an even
 * number of hex digits that fits. */
static int
parse_hex(const char *hex, unsigned char *out, size_t max, size_t *len)
{
	size_t n = hex != NULL ? strlen(hex) : 0, i;
	unsigned v;

	if (n == 0 || n % 2 != 0 || n / 2 > max)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(hex + 2 * i, "%2x", &v) != 1 || !isxdigit((unsigned char)hex[2 * i]) ||
		    !isxdigit((unsigned char)hex[2 * i + 1]))
			return -1;
		out[i] = (unsigned char)v;
	}
	*len = n / 2;
	return 0;
}

/* Parses the words of a control file into *f; unknown ones are reported and ignored. */
static void
fault_parse(const char *path, char *text, struct sim_fault *f)
{
	char *line, *save = NULL, *word, *arg, *end, *wsave;
	double d;

	memset(f, 0, sizeof(*f));
	f->slow = 1;
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if ((word = strtok_r(line, " \t\r", &wsave)) == NULL || word[0] == '#')
			continue;
		arg = strtok_r(NULL, " \t\r", &wsave);
		d = -1;
		if (arg != NULL) {
			errno = 0;
			d = strtod(arg, &end);
			if (errno != 0 || end == arg || !isfinite(d))
				d = -1;
			else if (*end == '%')
				d /= 100;
			else if (*end != '\0')
				d = -1;
		}
		if (strcmp(word, "removed") == 0)
			f->removed = 1;
		else if (strcmp(word, "hang") == 0)
			f->hang = 1;
		else if (strcmp(word, "pin-locked") == 0)
			f->pin_locked = 1;
		else if (strcmp(word, "healthy") == 0 || strcmp(word, "ok") == 0)
			continue;
		else if (strcmp(word, "error") == 0 && d >= 0 && d <= 1)
			f->error_rate = d;
		else if (strcmp(word, "slow") == 0 && d > 0)
			f->slow = d;
		else if (strcmp(word, "crash") == 0 && (arg == NULL || (d >= 0 && d <= 1)))
			f->crash_rate = arg == NULL ? 1 : d;
		else if (strcmp(word, "crash-on") == 0 &&
		         parse_hex(arg, f->crash_on, sizeof(f->crash_on), &f->crash_on_len) == 0)
			f->crash_rate = 1;
		else if (strcmp(word, "reject-on") == 0 &&
		         parse_hex(arg, f->reject_on, sizeof(f->reject_on), &f->reject_on_len) == 0)
			continue;
		else
			sim_log("%s: '%s%s%s' is not a fault (removed, hang, error RATE, slow "
			        "FACTOR, pin-locked, crash [RATE], crash-on HEX, reject-on HEX), "
			        "ignored",
			        path, word, arg != NULL ? " " : "", arg != NULL ? arg : "");
	}
}

int
fault_refresh(const char *path, struct sim_file_id *id, struct sim_fault *f)
{
	char buf[CTL_MAX + 1];
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd;

	if (stat(path, &st) != 0) {
		if (!id->exists)
			return 0;
		memset(id, 0, sizeof(*id));
		memset(f, 0, sizeof(*f));
		f->slow = 1;
		return 1;
	}
	if (same_file(id, &st))
		return 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0; /* it changes under us: next look */
	while (len < CTL_MAX && (n = read(fd, buf + len, CTL_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	id->exists = 1;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtime = st.st_mtim;
	id->ctime = st.st_ctim;
	fault_parse(path, buf, f);
	return 1;
}

unsigned
retries_read(const char *path, unsigned full)
{
	char buf[32];
	unsigned long v;
	char *end;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return full;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return full;
	buf[n] = '\0';
	errno = 0;
	v = strtoul(buf, &end, 10);
	if (errno != 0 || end == buf || (*end != '\0' && *end != '\n'))
		return full;
	return v > full ? full : (unsigned)v;
}

int
retries_write(const char *path, unsigned n)
{
	char tmp[4096], text[32];
	int fd, len, saved;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%lx", path, (long)getpid(),
	             (unsigned long)pthread_self()) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	len = snprintf(text, sizeof(text), "%u\n", n);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return -1;
	/* A reader must never see an empty counter (that would read as "full"): write a
	 * temporary file, then rename it over the old one. */
	if (write(fd, text, (size_t)len) != len) {
		saved = errno;
		close(fd);
		goto fail;
	}
	if (close(fd) != 0) {
		saved = errno;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		saved = errno;
		goto fail;
	}
	return 0;
fail:
	unlink(tmp);
	errno = saved;
	return -1;
}
