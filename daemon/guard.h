/*
 * The pool's PIN counter, as a device keeps one (docs/security.md): every wrong PIN from any
 * client counts; checks are serialised pool-wide, with a delay after each failure (0.1 s,
 * doubling, at most 60 s); after pin_max_failures wrong PINs in a row the pool answers
 * CKR_PIN_LOCKED until `p11muxctl unlock-pin`. The count survives a restart, in state_dir.
 *
 * And the tickets: a successful login is answered with a ticket, the client's uid and an HMAC
 * over the pool, that uid and the PIN under a key kept in state_dir. A connection of that uid
 * that presents it is logged in without a PIN (the shim's new connections); a login with the
 * right PIN and a valid ticket of any uid (a child of a logged-in process, which may have
 * become another user) skips the counter and its delay. So a lockout by a guesser never stops
 * an application that was logged in, nor the children it forks.
 */
#ifndef P11MUXD_GUARD_H
#define P11MUXD_GUARD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "err.h"
#include "lograte.h"

#define GUARD_TICKET_LEN 36 /* the uid it was given to (4 bytes), and an HMAC-SHA256 */

struct pin_guard {
	pthread_mutex_t check; /* held through a PIN check and the delay before it */
	pthread_mutex_t lock;  /* protects the fields below (never held while sleeping) */
	const char *label;
	unsigned max;            /* pin_max_failures (0: never locks) */
	unsigned failures;       /* wrong PINs in a row */
	uint64_t next_ns;        /* no check before this monotonic time */
	uint64_t wrong, refused; /* since start: wrong PINs, logins refused while locked */
	struct lograte log_wrong, log_refused; /* a guesser must not flood the log */
	char path[4096];                       /* the counter's file */
	char refused_path[4096];               /* the PIN a member refused (its fingerprint) */
	uint8_t key[32];                       /* the ticket key */
	uint8_t pin_hash[32];
};

/* Opens the counter of the pool label in state_dir (created 0700 when missing) and the
 * ticket key (state_dir/ticket.key, made on first use); pin is the pool's. 0, or -1 with e. */
int guard_open(struct pin_guard *g, const char *state_dir, const char *label, unsigned max,
               const char *pin, size_t pinlen, struct p11mux_err *e);
void guard_close(struct pin_guard *g);

/*
 * The pool's PIN that a member refused at start-up is remembered, as a fingerprint keyed with
 * the ticket key (state_dir/refused.LABEL: "refused" and an HMAC of the PIN), until the PIN file
 * holds another PIN: a daemon restarting in a loop with a wrong PIN file (Restart=on-failure)
 * would otherwise spend one try on a device each time, and lock them all.
 * guard_pin_refused: 1 when the pool's PIN is the one remembered. guard_refuse_pin remembers
 * it (0, or -1 with e). guard_pin_accepted forgets it (a member took the PIN).
 */
int guard_pin_refused(struct pin_guard *g);
int guard_refuse_pin(struct pin_guard *g, struct p11mux_err *e);
void guard_pin_accepted(struct pin_guard *g);

/*
 * A login with pin (may be empty) and ticket (may be empty) from uid/pid. CKR_OK when the PIN
 * is empty and the ticket is uid's, when the PIN is right and the ticket valid, or when the
 * PIN is right after the counter's delay; then ticket_out is uid's ticket. Else
 * CKR_PIN_INCORRECT (counted, unless only a ticket was given) or CKR_PIN_LOCKED.
 */
CK_RV guard_login(struct pin_guard *g, const char *pool_pin, size_t pool_pinlen, const uint8_t *pin,
                  size_t pinlen, const uint8_t *ticket, size_t ticketlen, uid_t uid, pid_t pid,
                  uint8_t ticket_out[GUARD_TICKET_LEN]);

/* The token flags the counter implies: CKF_USER_PIN_COUNT_LOW, _FINAL_TRY, _LOCKED. */
CK_FLAGS guard_flags(struct pin_guard *g);
/* Wrong PINs in a row now; *locked set when the pool is locked. */
unsigned guard_failures(struct pin_guard *g, int *locked);
/* Sums up the log lines held back (lograte_flush); 1 while some are. */
int guard_flush(struct pin_guard *g);
/* Resets the counter (p11muxctl unlock-pin). 0, or -1 with e when it could not be saved. */
int guard_unlock(struct pin_guard *g, struct p11mux_err *e);

#endif
