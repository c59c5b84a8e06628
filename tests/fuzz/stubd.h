/*
 * A daemon without devices, for the fuzz targets that drive the daemon's own code (fuzz_rpc,
 * fuzz_ctlline): STUBD_NPOOLS pools of STUBD_NMEMBERS members each, built as pool_open()
 * would leave them but without helpers. Each pool's view holds the objects of enum
 * stubd_object (a private RSA key and its public key and certificate, a private EC key that
 * may not sign, a secret key, a private key marked CKA_PRIVATE false, a private data object,
 * and a certificate one member holds another version of). The PIN counters live in a scratch
 * directory (scratch.h). Member threads are never started: whatever would reach a device is
 * the target's business (fuzz_rpc wraps member_run).
 */
#ifndef P11MUX_FUZZ_STUBD_H
#define P11MUX_FUZZ_STUBD_H

#include "daemon.h"

#define STUBD_NPOOLS   2
#define STUBD_NMEMBERS 3

/* What a pool object is, for the seeds and the checks. */
enum stubd_object {
	STUBD_RSA_PRIV,      /* CKO_PRIVATE_KEY, private, may sign and decrypt */
	STUBD_RSA_PUB,       /* CKO_PUBLIC_KEY, may verify and encrypt */
	STUBD_CERT,          /* CKO_CERTIFICATE */
	STUBD_EC_PRIV,       /* private, CKA_SIGN false; member 2 lacks it */
	STUBD_AES,           /* CKO_SECRET_KEY (private by default), encrypt and decrypt */
	STUBD_RSA_PRIV_OPEN, /* CKO_PRIVATE_KEY with CKA_PRIVATE false */
	STUBD_DATA_PRIV,     /* CKO_DATA, private */
	STUBD_CERT_SPLIT,    /* member 2 holds another value under the same name */
	STUBD_NOBJECTS
};

struct stubd {
	struct daemon d;
	struct config cfg;
	struct pool_config pcfg[STUBD_NPOOLS];
	/* The pools' members lists (a rescan lists no module's tokens then). */
	struct member_config mcfg[STUBD_NPOOLS][STUBD_NMEMBERS];
	char mnames[STUBD_NPOOLS][STUBD_NMEMBERS][16];
	struct pool pools[STUBD_NPOOLS];
	char state_dir[256];
};

/* The pools' PINs and labels, by pool index. */
extern const char *const stubd_pins[STUBD_NPOOLS];
extern const char *const stubd_labels[STUBD_NPOOLS];

/* Builds the daemon; aborts on failure (a fuzz target cannot run without it). The state
 * directory is removed at exit. */
void stubd_open(struct stubd *s);
/* Puts the daemon back as stubd_open() left it, between two inputs: PIN counters at 0 with no
 * delay, quarantines empty, every member up. */
void stubd_reset(struct stubd *s);
/* No delay before the next PIN check of any pool (a wrong PIN sets one of 0.1 s or more). */
void stubd_no_delay(struct stubd *s);
/* The pool object `which` of pool i. */
const struct pobject *stubd_object(const struct stubd *s, size_t pool, enum stubd_object which);

/* A client connection as server.c's accept sets one up: uid and pid given, no handshake, not
 * logged in. Aborts when out of memory. */
void stubd_client_init(struct stubd *s, struct client *c, uid_t uid, pid_t pid);
void stubd_client_free(struct client *c);

#endif
