/* The pool's PIN: read from a mod_nss-style pin file, compared in constant time. */
#ifndef P11MUXD_PIN_H
#define P11MUXD_PIN_H

#include <stddef.h>

#include "err.h"

/*
 * Reads the PIN for the token labels[0..nlabels) from path. A line "LABEL:PIN" matches when
 * it starts with one of the labels followed by ':' (mod_nss's rule; the last match wins, the
 * PIN is trimmed). A file of one line without ':' is a bare PIN. On success *pin is a
 * malloc()ed, NUL-terminated copy (the caller wipes and frees it); on failure a message
 * naming the file and the labels tried is written to e and -1 returned.
 */
int pin_read(const char *path, const char *const *labels, size_t nlabels, char **pin,
             size_t *pinlen, struct p11mux_err *e);

/* 1 when a[0..alen) equals b[0..blen); the time taken depends only on alen and blen's
 * maximum, never on where the first difference lies. */
int pin_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
