/*
 * Unit tests of common/secret.c: memory for the PIN is on pages of its own, locked into RAM
 * ("lo" in /proc/self/smaps) and left out of core files ("dd"), wiped and unmapped when freed;
 * a failing mlock is warned about once and the memory still works; a protected process is not
 * dumpable and has a core limit of 0 whatever it inherited.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "secret.h"

static uintptr_t
page(void)
{
	return (uintptr_t)sysconf(_SC_PAGESIZE);
}

/* The VmFlags of the mapping that holds p, from /proc/self/smaps ("" when none does). */
static void
vm_flags(const void *p, char *flags, size_t size)
{
	unsigned long lo, hi;
	char line[512];
	int inside = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	assert_non_null(f);
	flags[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, size, "%s", line + 8);
			break;
		}
	}
	fclose(f);
}

/* Whether flags (" rd wr mr ... lo dd") hold the two-letter flag. */
static int
has_flag(const char *flags, const char *flag)
{
	char word[8];

	snprintf(word, sizeof(word), " %s", flag);
	for (const char *s = flags; (s = strstr(s, word)) != NULL; s++)
		if (s[3] == ' ' || s[3] == '\n' || s[3] == '\0')
			return 1;
	return 0;
}

/* Whether this process may lock n more bytes (root, or a high enough RLIMIT_MEMLOCK). */
static int
may_lock(size_t n)
{
	struct rlimit rl;

	return geteuid() == 0 || (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
	                          (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= n + 64 * 1024));
}

static void
secret_alloc_locked(void **state)
{
	size_t sizes[] = {1, 100, 4096, 3 * 4096 + 1};
	char flags[512];
	uint8_t *p;
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p = p11mux_secret_alloc(sizes[i]);
		assert_non_null(p);
		/* Pages of its own: the bytes start just past the header at a page's start. */
		assert_int_equal((uintptr_t)p % page(), 16);
		for (k = 0; k < sizes[i]; k++)
			assert_int_equal(p[k], 0);
		memset(p, 0x5a, sizes[i]);
		vm_flags(p + sizes[i] - 1, flags, sizeof(flags));
		if (!has_flag(flags, "dd"))
			fail_msg("%zu bytes: not MADV_DONTDUMP: VmFlags%s", sizes[i], flags);
		if (may_lock(sizes[i]) && !has_flag(flags, "lo"))
			fail_msg("%zu bytes: not locked: VmFlags%s", sizes[i], flags);
		p11mux_secret_free(p);
	}
	assert_null(p11mux_secret_alloc(0));
	assert_null(p11mux_secret_alloc(SIZE_MAX));
	assert_null(p11mux_secret_alloc(SIZE_MAX - 20));
	p11mux_secret_free(NULL);
}

/* Freed memory is unmapped (and was wiped before: nothing of it can be read any more). */
static void
secret_free_unmaps(void **state)
{
	unsigned char vec;
	uint8_t *p = p11mux_secret_alloc(64);
	void *base;

	(void)state;
	assert_non_null(p);
	base = (void *)((uintptr_t)p / page() * page());
	assert_int_equal(mincore(base, page(), &vec), 0);
	p11mux_secret_free(p);
	assert_int_equal(mincore(base, page(), &vec), -1);
	assert_int_equal(errno, ENOMEM);
}

/* p11mux_secret_lock on memory it did not allocate: the pages that hold it. */
static void
secret_lock_buffer(void **state)
{
	char flags[512];
	uint8_t *buf = malloc(5 * 4096);

	(void)state;
	assert_non_null(buf);
	p11mux_secret_lock(buf + 100, 8192);
	vm_flags(buf + 100, flags, sizeof(flags));
	if (!has_flag(flags, "dd") || (may_lock(3 * 4096) && !has_flag(flags, "lo")))
		fail_msg("not locked and left out of dumps: VmFlags%s", flags);
	vm_flags(buf + 100 + 8191, flags, sizeof(flags));
	if (!has_flag(flags, "dd"))
		fail_msg("the last byte's page is not left out of dumps: VmFlags%s", flags);
	p11mux_secret_lock(NULL, 10);
	p11mux_secret_lock(buf, 0);
	syscall(SYS_munlock, (void *)((uintptr_t)(buf + 100) / page() * page()), 3 * page());
	free(buf);
}

/* In a child without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0: two allocations both work, and
 * one warning says why they are not locked. */
static void
secret_mlock_fails(void **state)
{
	struct rlimit none = {0, 0};
	char out[4096] = "", *s;
	int fds[2], status, n = 0;
	ssize_t got, len = 0;
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	if ((pid = fork()) == 0) {
		uint8_t *a, *b;

		dup2(fds[1], 2);
		if (geteuid() == 0 && setresuid(65534, 65534, 65534) != 0)
			_exit(3);
		if (setrlimit(RLIMIT_MEMLOCK, &none) != 0)
			_exit(4);
		a = p11mux_secret_alloc(32);
		b = p11mux_secret_alloc(32);
		if (a == NULL || b == NULL)
			_exit(5);
		memcpy(a, "1234", 4);
		memcpy(b, a, 4);
		p11mux_secret_free(a);
		p11mux_secret_free(b);
		_exit(0);
	}
	assert_true(pid > 0);
	close(fds[1]);
	while ((got = read(fds[0], out + len, sizeof(out) - 1 - (size_t)len)) > 0)
		len += got;
	close(fds[0]);
	out[len] = '\0';
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	for (s = out; (s = strstr(s, "cannot lock the PIN's memory into RAM")) != NULL; s++)
		n++;
	if (n != 1 || strstr(out, "RLIMIT_MEMLOCK is 0 bytes") == NULL)
		fail_msg("expected one warning naming RLIMIT_MEMLOCK, got: %s", out);
}

/* Started dumpable and with an unlimited core limit, a protected child is neither. */
static void
secret_protect_process(void **state)
{
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	int status;
	pid_t pid;

	(void)state;
	if ((pid = fork()) == 0) {
		if (getrlimit(RLIMIT_CORE, &rl) != 0)
			_exit(2);
		rl.rlim_cur = rl.rlim_max; /* as high as this user may: unlimited for root */
		if (geteuid() == 0)
			rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
		if (setrlimit(RLIMIT_CORE, &rl) != 0 || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
			_exit(3);
		if (p11mux_secret_protect_process() != 0)
			_exit(4);
		if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
			_exit(5);
		if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
			_exit(6);
		/* The hard limit is 0 too: it cannot be raised again. */
		rl.rlim_cur = 1;
		if (geteuid() != 0 && setrlimit(RLIMIT_CORE, &rl) == 0)
			_exit(7);
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(secret_alloc_locked),    cmocka_unit_test(secret_free_unmaps),
	        cmocka_unit_test(secret_lock_buffer),     cmocka_unit_test(secret_mlock_fails),
	        cmocka_unit_test(secret_protect_process),
	};

	return cmocka_run_group_tests_name("secret", tests, NULL, NULL);
}
