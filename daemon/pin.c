#include "pin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int
pin_read(const char *path, const char *const *labels, size_t nlabels, char **pin, size_t *pinlen,
         struct p11mux_err *e)
{
	char *line = NULL, *found = NULL, *bare = NULL, *t;
	size_t i, nlines = 0, len, cap = 0;
	FILE *f;
	int r = -1;

	if ((f = fopen(path, "re")) == NULL) {
		return p11mux_err_set(e, "%s: cannot read the pin file: %s", path, strerror(errno));
	}
	/* getline: a line is a line, however long (a long comment must not split into two). */
	while (getline(&line, &cap, f) != -1) {
		t = trim(line);
		if (*t == '\0' || *t == '#')
			continue;
		nlines++;
		for (i = 0; i < nlabels; i++) {
			len = strlen(labels[i]);
			if (strncmp(t, labels[i], len) == 0 && t[len] == ':') {
				if (found != NULL) {
					explicit_bzero(found, strlen(found));
					free(found);
				}
				found = strdup(trim(t + len + 1));
				break;
			}
		}
		if (nlines == 1 && strchr(t, ':') == NULL)
			bare = strdup(t);
	}
	fclose(f);
	if (found == NULL && nlines == 1 && bare != NULL) {
		found = bare;
		bare = NULL;
	}
	if (found == NULL) {
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
	*pinlen = strlen(found);
	*pin = found;
	found = NULL;
	r = 0;
out:
	if (found != NULL) {
		explicit_bzero(found, strlen(found));
		free(found);
	}
	if (bare != NULL) {
		explicit_bzero(bare, strlen(bare));
		free(bare);
	}
	if (line != NULL) {
		explicit_bzero(line, cap);
		free(line);
	}
	return r;
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
