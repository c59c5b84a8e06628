/*
 * C_Initialize's pReserved. NSS hands the module its LibraryParameters there (the text of
 * `modutil -string`), p11-kit its x-init-reserved; PKCS#11 itself says the field is reserved
 * and must be NULL. An application may therefore pass anything, including a pointer that
 * is not a string or not even mapped: the text is read without dereferencing the pointer,
 * bounded, and accepted only as key=value pairs.
 */
#include "module.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Copies len bytes at src into dst through a pipe: a bad address makes write() fail with
 * EFAULT rather than raise SIGSEGV. For sandboxes whose seccomp filter refuses
 * process_vm_readv with an error (some allow-lists keep it for debuggers). */
static ssize_t
read_via_pipe(void *dst, const void *src, size_t len)
{
	int fds[2];
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	/* len is at most a page, below the pipe's capacity: one write, one read. */
	n = write(fds[1], src, len);
	if (n > 0)
		n = read(fds[0], dst, (size_t)n);
	close(fds[0]);
	close(fds[1]);
	return n;
}

/* Reads up to len bytes of our own memory at src without faulting. Returns how many were
 * read, or -1 (EFAULT for an address that is not readable). */
static ssize_t
read_self(void *dst, uintptr_t src, size_t len)
{
	struct iovec local = {dst, len}, remote = {(void *)src, len};
	ssize_t n;

	n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (n < 0 && (errno == ENOSYS || errno == EPERM))
		n = read_via_pipe(dst, (const void *)src, len);
	return n;
}

/* Copies the NUL-terminated string at p into buf (cap bytes), one page at a time so that a
 * string ending just before an unmapped page is read whole. 0, or -1 when the memory is not
 * readable or holds no NUL within cap bytes. */
static int
read_string(uintptr_t p, char *buf, size_t cap)
{
	long pagesize = sysconf(_SC_PAGESIZE);
	size_t page = pagesize > 0 ? (size_t)pagesize : 4096, got = 0, chunk;
	ssize_t n;

	while (got < cap) {
		if (p + got < p) /* wrapped around the address space */
			return -1;
		chunk = page - (p + got) % page;
		if (chunk > cap - got)
			chunk = cap - got;
		if ((n = read_self(buf + got, p + got, chunk)) <= 0)
			return -1;
		if (memchr(buf + got, '\0', (size_t)n) != NULL)
			return 0;
		got += (size_t)n;
	}
	return -1;
}

static int
is_sep(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';' || c == ',';
}

static int
is_key(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

/* The closing quote for an opening one, as NSS pairs them (NSSUTIL_ArgGetPair); 0 when c
 * opens no quote. */
static char
closing_quote(char c)
{
	switch (c) {
	case '"':
	case '\'':
		return c;
	case '<':
		return '>';
	case '{':
		return '}';
	case '[':
		return ']';
	case '(':
		return ')';
	default:
		return 0;
	}
}

/* One key=value pair; the value is val..end, quotes excluded, backslash escapes kept. */
struct pair {
	const char *key, *val, *end;
	size_t klen;
};

/* Reads the pair at *pp, after any separators. 1 with *pr set and *pp past the pair; 0 at
 * the end of the text; -1 when the text is not a key=value pair there. A value ends at a
 * separator (blank, ';' or ','), or is quoted as NSS quotes; a backslash escapes the next
 * character. */
static int
next_pair(const char **pp, struct pair *pr)
{
	const char *p = *pp;
	char close;

	while (is_sep(*p))
		p++;
	if (*p == '\0')
		return 0;
	for (pr->key = p; is_key(*p); p++)
		;
	pr->klen = (size_t)(p - pr->key);
	if (pr->klen == 0 || *p++ != '=')
		return -1;
	if ((close = closing_quote(*p)) != 0)
		p++;
	for (pr->val = p; *p != '\0'; p++) {
		if (*p == '\\') {
			if (*++p == '\0')
				return -1;
			continue;
		}
		if (close != 0 ? *p == close : is_sep(*p))
			break;
	}
	pr->end = p;
	if (close != 0) {
		if (*p++ != close || (*p != '\0' && !is_sep(*p)))
			return -1; /* unterminated, or text glued to the closing quote */
	}
	*pp = p;
	return 1;
}

/* Whether s is key=value text: printable, every item a pair. */
static int
params_valid(const char *s)
{
	const unsigned char *u;
	struct pair pr;
	int r;

	for (u = (const unsigned char *)s; *u != '\0'; u++)
		if ((*u < 0x20 && *u != '\t' && *u != '\n' && *u != '\r') || *u == 0x7f)
			return 0;
	while ((r = next_pair(&s, &pr)) == 1)
		;
	return r == 0;
}

CK_RV
params_copy(const void *reserved, char **out)
{
	char *buf;

	if ((buf = malloc(SHIM_PARAMS_MAX)) == NULL)
		return CKR_HOST_MEMORY;
	if (read_string((uintptr_t)reserved, buf, SHIM_PARAMS_MAX) != 0) {
		shim_debug("C_Initialize: pReserved is not a readable string of at most %d bytes",
		           SHIM_PARAMS_MAX - 1);
		free(buf);
		return CKR_ARGUMENTS_BAD;
	}
	if (!params_valid(buf)) {
		shim_debug("C_Initialize: pReserved is not key=value text");
		free(buf);
		return CKR_ARGUMENTS_BAD;
	}
	*out = buf;
	return CKR_OK;
}

char *
params_get(const char *params, const char *key)
{
	const char *p = params, *q;
	struct pair pr;
	char *v, *w;

	while (next_pair(&p, &pr) == 1) {
		if (pr.klen != strlen(key) || strncmp(pr.key, key, pr.klen) != 0)
			continue;
		if ((v = w = malloc((size_t)(pr.end - pr.val) + 1)) == NULL)
			return NULL;
		for (q = pr.val; q < pr.end; q++) {
			if (*q == '\\')
				q++;
			*w++ = *q;
		}
		*w = '\0';
		return v;
	}
	return NULL;
}
