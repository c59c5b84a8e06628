/* The fuzz targets' scratch files and directories (scratch.h). */
#include "scratch.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "p11mux-fuzz-"

static char file[256], dir[256];
static int fd = -1;

static const char *
base(void)
{
	return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

/* Removes path, a file or a directory of files. */
static void
remove_entry(const char *path)
{
	char sub[512];
	struct dirent *e;
	DIR *d;

	if (unlink(path) == 0 || errno != EISDIR || (d = opendir(path)) == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			unlink(sub);
		}
	closedir(d);
	rmdir(path);
}

/* Removes what targets that are no longer running left (p11mux-fuzz-NAME-PID-XXXXXX). */
static void
sweep(void)
{
	char path[512];
	struct dirent *e;
	const char *p;
	long pid;
	DIR *d;

	if ((d = opendir(base())) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0 ||
		    (p = strrchr(e->d_name, '-')) == NULL)
			continue;
		while (p > e->d_name && p[-1] != '-')
			p--;
		pid = strtol(p, NULL, 10);
		if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
			snprintf(path, sizeof(path), "%s/%s", base(), e->d_name);
			remove_entry(path);
		}
	}
	closedir(d);
}

static void
remove_mine(void)
{
	if (file[0] != '\0')
		remove_entry(file);
	if (dir[0] != '\0')
		remove_entry(dir);
}

static void
name_it(char *path, size_t n, const char *name)
{
	static int swept;

	if (!swept) {
		sweep();
		atexit(remove_mine);
		swept = 1;
	}
	snprintf(path, n, "%s/" PREFIX "%s-%ld-XXXXXX", base(), name, (long)getpid());
}

const char *
scratch_open(const char *name)
{
	if (fd >= 0)
		return file;
	name_it(file, sizeof(file), name);
	/* mkstemp makes it 0600. */
	if ((fd = mkstemp(file)) < 0 || fchmod(fd, 0600) != 0) {
		perror(file);
		abort();
	}
	return file;
}

void
scratch_write(const uint8_t *p, size_t n)
{
	size_t done = 0;
	ssize_t w;

	if (ftruncate(fd, 0) != 0)
		abort();
	while (done < n) {
		if ((w = pwrite(fd, p + done, n - done, (off_t)done)) <= 0)
			abort();
		done += (size_t)w;
	}
}

void
scratch_mkdir(const char *name, char *path, size_t n)
{
	name_it(dir, sizeof(dir), name);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		abort();
	}
	snprintf(path, n, "%s", dir);
}
