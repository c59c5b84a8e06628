/* The scratch file of the fuzz targets that read a file (scratch.h). */
#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[128];
static int fd = -1;

static void
remove_scratch(void)
{
	unlink(path);
}

const char *
scratch_open(const char *name)
{
	if (fd >= 0)
		return path;
	snprintf(path, sizeof(path), "%s/p11mux-fuzz-%s-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", name);
	/* mkstemp makes it 0600. */
	if ((fd = mkstemp(path)) < 0 || fchmod(fd, 0600) != 0) {
		perror(path);
		abort();
	}
	atexit(remove_scratch);
	return path;
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
