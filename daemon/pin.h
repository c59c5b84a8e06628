/* The pool's PIN: read from a mod_nss-style pin file, or from a systemd credential, into
 * memory kept out of swap and core files (common/secret.h); compared in constant time. */
#ifndef P11MUXD_PIN_H
#define P11MUXD_PIN_H

#include <stddef.h>

#include "err.h"

/*
 * Names used by pin_file: a path, or "credential:NAME" for the file $CREDENTIALS_DIRECTORY/NAME
 * that systemd provides for a unit with LoadCredential=NAME:FILE (or SetCredential=).
 *
 * Either way the file must be a regular file owned by the daemon's effective user and closed
 * to everybody else (mode 0600 or 0400); otherwise it is refused with a message that names it
 * and says what to run (chmod 600 FILE, chown UID FILE).
 */
#define PIN_CREDENTIAL "credential:"

/* Checks that the pin file can be opened and passes the rules above, without reading it
 * (p11muxd -t, and start-up before any helper runs). 0, or -1 with a message naming the file
 * in e. */
int pin_check_file(const char *pin_file, struct p11mux_err *e);

/*
 * Reads the PIN for the token labels[0..nlabels) from pin_file. A line "LABEL:PIN" matches
 * when it starts with one of the labels followed by ':' (mod_nss's rule; the last match wins,
 * the PIN is trimmed). A file of one line without ':' is a bare PIN. On success *pin is a
 * NUL-terminated copy in locked memory that the caller frees with pin_free(); on failure a
 * message naming the file (and the labels tried) is written to e and -1 returned.
 */
int pin_read(const char *pin_file, const char *const *labels, size_t nlabels, char **pin,
             size_t *pinlen, struct p11mux_err *e);

/* A NUL-terminated copy of p[0..len) in locked memory, freed with pin_free(); NULL when out of
 * memory. */
char *pin_dup(const void *p, size_t len);

/* Wipes and frees a PIN from pin_read() or pin_dup(); NULL is fine. */
void pin_free(char *pin);

/* 1 when a[0..alen) equals b[0..blen); the time taken depends only on alen and blen's
 * maximum, never on where the first difference lies. */
int pin_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
