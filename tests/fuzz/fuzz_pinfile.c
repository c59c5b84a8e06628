/*
 * fuzz_pinfile: the PIN file (daemon/pin.c, mod_nss's format). The first input byte picks the
 * token labels looked for (a bit each, from labels[] below, in that order); the rest is the
 * file, written with mode 0600.
 *
 * Checked (abort when broken): a PIN that is found is one line's text, trimmed, not empty,
 * NUL-terminated at pinlen; a file that gives none has one message that names the file, and
 * the out-parameters are untouched.
 */
#include "check.h"
#include "pin.h"
#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A pool's label, a member's, one NSS could not use, a prefix of another, and the empty one
 * (which matches a line that starts with ':'). */
static const char *const labels[] = {"pool-a", "hsm1", "a:b",
                                     "pool",   "",     "SmartCard-HSM (UserPIN)"};

/* What pin.c trims: blanks in front, blanks and line ends behind. */
static int
blank(char c)
{
	return c == ' ' || c == '\t';
}

static int
blank_or_eol(char c)
{
	return blank(c) || c == '\r' || c == '\n';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = scratch_open("pin"), *want[8];
	struct p11mux_err e = {""};
	char *pin = (char *)labels; /* any pointer: it must stay untouched on failure */
	size_t npin = 4242, n = 0, i;

	if (size == 0)
		return 0;
	for (i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
		if (data[0] & (1u << i))
			want[n++] = labels[i];
	scratch_write(data + 1, size - 1);
	if (pin_read(path, want, n, &pin, &npin, &e) != 0) {
		CHECK(pin == (char *)labels && npin == 4242);
		CHECK(strncmp(e.msg, path, strlen(path)) == 0);
		return 0;
	}
	CHECK(pin != NULL && npin > 0 && strlen(pin) == npin);
	CHECK(!blank(pin[0]) && !blank_or_eol(pin[npin - 1]));
	CHECK(strchr(pin, '\n') == NULL);
	CHECK(memmem(data + 1, size - 1, pin, npin) != NULL);
	pin_free(pin); /* locked memory, wiped and unmapped (common/secret.c) */
	return 0;
}
