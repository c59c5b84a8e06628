#include "secret.h"
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Bytes before the ones handed out: the mapping's length (16 keeps malloc's alignment). */
#define HEADER 16

/* Set by the first mlock that fails, so that the warning comes once per process. */
static atomic_int lock_warned;

static size_t
page_size(void)
{
	long n = sysconf(_SC_PAGESIZE);

	return n > 0 ? (size_t)n : 4096;
}

/* mlock and MADV_DONTDUMP on the whole pages base[0..size); base is page-aligned. */
static void
protect_pages(void *base, size_t size)
{
	struct rlimit rl;
	char limit[32] = "unknown";

	/* Left out of core files even where one is written despite PR_SET_DUMPABLE 0
	 * (suid_dumpable 2, a core_pattern pipe). A kernel without MADV_DONTDUMP (before 3.4)
	 * has nothing better to offer. */
	(void)madvise(base, size, MADV_DONTDUMP);
	/* The system call itself: ASan's mlock interceptor does nothing and returns 0, and the
	 * tests run under ASan. */
	if (syscall(SYS_mlock, base, size) == 0 || atomic_exchange(&lock_warned, 1) != 0)
		return;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		snprintf(limit, sizeof(limit), "%llu bytes", (unsigned long long)rl.rlim_cur);
	log_warn("cannot lock the PIN's memory into RAM (mlock: %s; RLIMIT_MEMLOCK is %s): it may "
	         "be written to swap; raise LimitMEMLOCK= or ulimit -l",
	         strerror(errno), limit);
}

void *
p11mux_secret_alloc(size_t len)
{
	size_t page = page_size(), size;
	uint8_t *base;

	if (len == 0 || len > SIZE_MAX - HEADER - page)
		return NULL;
	size = (len + HEADER + page - 1) / page * page;
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return NULL;
	protect_pages(base, size);
	memcpy(base, &size, sizeof(size));
	return base + HEADER;
}

void
p11mux_secret_free(void *p)
{
	uint8_t *base;
	size_t size;

	if (p == NULL)
		return;
	base = (uint8_t *)p - HEADER;
	memcpy(&size, base, sizeof(size));
	explicit_bzero(base, size);
	munmap(base, size); /* unlocks too */
}

void
p11mux_secret_lock(const void *p, size_t len)
{
	uintptr_t page = page_size(), start, end;

	if (p == NULL || len == 0)
		return;
	start = (uintptr_t)p / page * page;
	end = ((uintptr_t)p + len + page - 1) / page * page;
	protect_pages((void *)start, end - start);
}

int
p11mux_secret_protect_process(void)
{
	struct rlimit none = {0, 0};

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &none) != 0)
		return -1;
	return 0;
}
