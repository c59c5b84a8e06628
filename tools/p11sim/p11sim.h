/*
 * p11sim: a PKCS#11 module that wraps another one (SoftHSM2 by default) and makes each of its
 * tokens behave like one USB HSM (a Nitrokey HSM / SmartCard-HSM): one command at a time, a
 * service time per operation, and faults switched on from outside through a control directory.
 * See docs/simulator.md.
 */
#ifndef P11SIM_H
#define P11SIM_H

#include <p11-kit/pkcs11.h>

#include "thread.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SIM_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* How often a control file is looked at (stat) at most, in ms. */
#define SIM_POLL_MS 50
/* How long a call blocked by a "hang" sleeps between looks, in ms. */
#define SIM_HANG_SLICE_MS 20

/* ---------------------------------------------------------------- config.c */

/* The settings a profile gives and a configuration may override, globally or per token. */
enum sim_param {
	P_RSA1024_MS,
	P_RSA2048_MS,
	P_EC_P256_MS,
	P_LOGIN_MS,
	P_FIND_MS,
	P_GETATTR_MS,
	P_OTHER_MS,
	P_JITTER,
	P_SLOW,
	P_PIN_RETRIES,
	P_NPARAMS
};

enum sim_profile { PROFILE_NITROKEY, PROFILE_NONE };

/* Values set explicitly at one level (global or one token); `set` has bit (1 << param). */
struct sim_overrides {
	double v[P_NPARAMS];
	unsigned set;
	int profile_set;
	enum sim_profile profile;
};

struct sim_token_cfg {
	char *label;
	struct sim_overrides o;
	struct sim_token_cfg *next;
};

struct sim_config {
	char *module;      /* the wrapped module */
	char *control_dir; /* NULL: no faults, PIN counters in memory */
	double scale;      /* multiplies every service time */
	uint64_t seed;     /* of the per-token generators (errors, jitter) */
	int debug;         /* log state changes on stderr */
	int module_lock;   /* -1: as the global profile says (nitrokey: 1, none: 0) */
	struct sim_overrides global;
	struct sim_token_cfg *tokens; /* per-token overrides, by label */
};

/* What one token is configured to be, after profile, global and per-token settings. */
struct sim_params {
	double v[P_NPARAMS];
};

/* Reads the configuration: defaults, then the file named by $P11SIM_CONFIG, then the
 * "key=value;..." string `reserved` (may be NULL), then $P11SIM_MODULE, $P11SIM_SCALE,
 * $P11SIM_PROFILE, $P11SIM_CONTROL_DIR and $P11SIM_DEBUG. Returns 0, or -1 after writing
 * "p11sim: FILE:LINE: ..." to stderr. The caller frees *cfg with config_free() either way. */
int config_load(struct sim_config *cfg, const char *reserved);

/* Frees what config_load() allocated; cfg itself belongs to the caller. Accepts a zeroed cfg. */
void config_free(struct sim_config *cfg);

/* Whether every call holds one module-wide lock for its whole duration, as OpenSC does:
 * `module_lock` when set, else 1 for the nitrokey profile and 0 for none. */
int config_module_lock(const struct sim_config *cfg);

/* Fills *p with the settings of the token labelled `label` with serial number `serial`
 * ("token X ..." lines name either). */
void config_params(const struct sim_config *cfg, const char *label, const char *serial,
                   struct sim_params *p);

/* ---------------------------------------------------------------- fault.c */

/* The state a control file asks for. */
struct sim_fault {
	int removed;
	int hang;
	int pin_locked;
	double error_rate; /* 0..1 */
	double slow;       /* service time factor, 1 when healthy */
	double crash_rate; /* share of private-key operations that abort the process midway */
	/* "crash-on HEX": only operations whose input starts with these bytes crash. */
	unsigned char crash_on[64];
	size_t crash_on_len;
	/* "reject-on HEX": private-key operations whose input starts with these bytes fail
	 * with CKR_GENERAL_ERROR, as a device refuses an input it does not like. */
	unsigned char reject_on[64];
	size_t reject_on_len;
};

/* Where a control file was last seen, so that it is re-read only when it changed. */
struct sim_file_id {
	int exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

/* Re-reads the control file `path` into *f if it changed since *id (updated). Returns 1 when
 * *f was re-read, 0 when nothing changed. A missing or empty file is a healthy token; an
 * unknown word is reported on stderr (once per change) and ignored. */
int fault_refresh(const char *path, struct sim_file_id *id, struct sim_fault *f);

/* Reads a PIN retry counter file; a missing or unreadable file gives `full`. */
unsigned retries_read(const char *path, unsigned full);

/* Replaces the retry counter file atomically (rename); returns 0 or -1 (errno). */
int retries_write(const char *path, unsigned n);

/* ---------------------------------------------------------------- device.c */

/* What a key costs on the device, found once per key handle. */
struct sim_keyinfo {
	int priv;         /* a private key: its operations take the profile's time */
	CK_KEY_TYPE type; /* CKK_RSA, CKK_EC, ... */
	unsigned long bits;
};

struct sim_keycache {
	CK_OBJECT_HANDLE handle;
	struct sim_keyinfo ki;
};

#define SIM_KEYCACHE 64

/* One token of the wrapped module, as one device. Never freed before C_Finalize. */
struct sim_token {
	CK_SLOT_ID slot;
	char label[33];     /* trimmed */
	char serial[17];    /* trimmed */
	char name[33];      /* what the control file is named after: label, or serial */
	char *ctl_path;     /* $control_dir/NAME, NULL without a control dir or name */
	char *retries_path; /* $control_dir/NAME.retries, or NULL */
	struct sim_params p;

	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t turn;  /* broadcast when `serving` moves on */
	uint64_t next_ticket; /* the device: tickets served in order, one at a time */
	uint64_t serving;
	struct timespec checked; /* last look at the control file */
	int polled;              /* `checked` is set */
	struct sim_file_id ctl_id;
	struct sim_fault fault;
	int present;    /* not removed, as far as the module's users know */
	int closing;    /* removed, wrapped sessions not yet closed */
	uint64_t epoch; /* counts removals; a session opened in an older epoch is gone */
	uint64_t err_rng, jit_rng, crash_rng;
	unsigned retries; /* PIN tries left when there is no control dir */
	struct sim_keycache keys[SIM_KEYCACHE];
	size_t nkeys;

	/* Held shared around every call into the wrapped module that uses one of this token's
	 * sessions, exclusively while those sessions are closed at a removal, so that no call
	 * ever reaches a session the wrapped module has closed (or given out again). */
	pthread_rwlock_t sessions;
};

/* How a call uses the device. */
enum sim_cost {
	COST_NONE,  /* bookkeeping in the driver: no device, never blocked by "hang" */
	COST_OTHER, /* a short command */
	COST_LOGIN,
	COST_FIND,    /* per C_FindObjects call */
	COST_GETATTR, /* per C_GetAttributeValue call */
	COST_SIGN,    /* the private-key operation started by C_Sign(Recover)Init */
	COST_DECRYPT  /* ... by C_DecryptInit */
};

/* Error injection: where a "error RATE" fault may fail the call. */
enum sim_errpoint {
	ERR_NEVER,  /* closes, updates, length queries: never failed */
	ERR_BEFORE, /* failed without reaching the wrapped module */
	ERR_AFTER   /* run, then its result replaced (the operation it ends is over) */
};

/* One call on a token, from call_*_begin() to call_end(). */
struct sim_call {
	struct sim_token *tok;
	CK_SESSION_HANDLE outer, inner; /* 0 for a call on a slot */
	uint64_t epoch;
	struct sim_keyinfo op_key; /* the session's key for COST_SIGN / COST_DECRYPT */
	enum sim_cost cost;
	enum sim_errpoint err;
	int device;                    /* holds the device */
	int rdlock;                    /* holds tok->sessions shared */
	int inject;                    /* fail with CKR_DEVICE_ERROR at the end */
	CK_SESSION_HANDLE new_session; /* C_OpenSession: our record, dropped if the call fails */
	double cost_ms;
	struct timespec start;
};

/* Makes a token for `slot` of the wrapped module, configured by its label, its control file
 * named `name` (label or serial; none when empty); NULL when out of memory. */
struct sim_token *token_new(CK_SLOT_ID slot, const char *label, const char *serial,
                            const char *name);

/* Frees a token (NULL is fine); no call may be using it. */
void token_free(struct sim_token *t);

/* Looks at the control file (at most every SIM_POLL_MS), and carries out a removal (closing
 * the wrapped sessions) or a re-insertion. Never called with t->sessions held. */
void token_poll(struct sim_token *t);

/* Whether the token is present now (after token_poll). */
int token_present(struct sim_token *t);

/* The token-info flags the device shows for its PIN (CKF_USER_PIN_*). */
CK_FLAGS token_pin_flags(struct sim_token *t);

/* PIN tries left (from the retries file, or memory). */
unsigned token_retries(struct sim_token *t);

/* Sets the PIN tries left (file or memory). */
void token_set_retries(struct sim_token *t, unsigned n);

/* Whether the control file says pin-locked. */
int token_pin_locked(struct sim_token *t);

/* Starts a call on session `h`: finds it, waits for the device when `cost` needs it, waits
 * while the token hangs, decides an injected error. Returns CKR_OK with *c filled (then
 * call_end() must follow), or the error to return (nothing to undo). */
CK_RV call_session_begin(struct sim_call *c, CK_SESSION_HANDLE h, enum sim_cost cost,
                         enum sim_errpoint err);

/* The same for a call on a slot (C_GetTokenInfo, C_OpenSession, C_InitToken, ...); a removed
 * token gives CKR_TOKEN_NOT_PRESENT. */
CK_RV call_slot_begin(struct sim_call *c, CK_SLOT_ID slot, enum sim_cost cost,
                      enum sim_errpoint err);

/* What the call's token knows of `key` (type, size, private or not): cached per key handle,
 * asked of the wrapped module the first time (in the call's session). */
struct sim_keyinfo call_key(struct sim_call *c, CK_OBJECT_HANDLE key);

/* Sets the call's service time to that of an operation with key `ki`. */
void call_charge_key(struct sim_call *c, const struct sim_keyinfo *ki);

/* Forgets what is cached about `key` on the call's token (C_DestroyObject). */
void call_forget_key(struct sim_call *c, CK_OBJECT_HANDLE key);

/* Ends a call whose wrapped function returned `rv`: lets the service time pass (a removal
 * meanwhile gives CKR_DEVICE_REMOVED), applies an injected error, frees the device. Returns
 * what the application gets. */
CK_RV call_end(struct sim_call *c, CK_RV rv);

/* The "crash" fault: when the token's control file asks for it and the input matches, lets
 * half of the call's service time pass and aborts the whole process, as a vendor module that
 * crashes inside C_Sign does. Called by the private-key operations after call_*_begin(). */
void call_crash_point(struct sim_call *c, const void *in, size_t inlen);
/* Whether the reject-on fault refuses this input (C_Sign, C_Decrypt). */
int call_rejects(struct sim_call *c, const void *in, size_t inlen);

/* Service time in ms, in profile `p`, of an operation with key `ki` (before scale, slow
 * factors and jitter): the profile's time for a private key of its type and size, "other"
 * for any other key. */
double keyinfo_ms(const struct sim_params *p, const struct sim_keyinfo *ki);

/* ---------------------------------------------------------------- session.c */

#define SIM_SESSION_BUCKETS 1024

struct sim_session;

/* Opens our record for wrapped session `inner` of `tok`, opened in `epoch`; returns our
 * handle, or 0 when out of memory. */
CK_SESSION_HANDLE session_add(struct sim_token *tok, CK_SESSION_HANDLE inner, uint64_t epoch);

/* Finds session `h`: CKR_OK with the fields copied out, or CKR_SESSION_HANDLE_INVALID.
 * Called with sim.lock held. */
CK_RV session_get_locked(CK_SESSION_HANDLE h, struct sim_token **tok, CK_SESSION_HANDLE *inner,
                         uint64_t *epoch, struct sim_keyinfo *sign, struct sim_keyinfo *decrypt);

/* Records the key of the signature (or decryption) the session has started. */
void session_set_key(CK_SESSION_HANDLE h, int decrypt, const struct sim_keyinfo *ki);

/* Drops our record of session `h` (no-op when unknown). */
void session_drop(CK_SESSION_HANDLE h);

/* Drops every record of token `tok`. */
void session_drop_token(struct sim_token *tok);

/* Drops every record (C_Finalize). */
void session_drop_all_locked(void);

/* ---------------------------------------------------------------- p11sim-module.c */

/* The module's state: one per process. */
struct sim {
	pthread_mutex_t lock; /* protects everything below and the session table */
	pthread_cond_t idle;  /* broadcast when `active` drops to 0 */
	int initialized;
	int initializing; /* C_Initialize is reading the wrapped module's slots */
	int finalizing;   /* read without the lock by waiting calls (atomic) */
	pid_t pid;
	unsigned active; /* calls in progress, which C_Finalize waits for */
	struct sim_config cfg;
	void *dl;
	CK_FUNCTION_LIST *f; /* the wrapped module */
	int own_init;        /* we initialised the wrapped module, so we finalize it */
	/* With module_lock, held by every call from sim_enter() to sim_leave(), the device's time
	 * included: one call at a time across all tokens, as in OpenSC. */
	pthread_mutex_t module_lock;
	int module_locking;        /* module_lock applies (fixed from C_Initialize to C_Finalize) */
	struct sim_token **tokens; /* grows, never shrinks before C_Finalize */
	size_t ntokens;
	struct sim_session *sessions[SIM_SESSION_BUCKETS]; /* our session handles (session.c) */
	CK_SESSION_HANDLE next_session;
};

extern struct sim sim;

void sim_lock(void);
void sim_unlock(void);

/* "p11sim[PID]: ..." on stderr. */
void sim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The same, only when debugging ($P11SIM_DEBUG or `debug = 1`). */
void sim_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Counts a call in (CKR_OK) or refuses it (not initialised, in a forked child, finalizing). */
CK_RV sim_enter(void);

/* Counts a call out. */
void sim_leave(void);

/* The token of `slot`, looked up in the table (NULL when the wrapped module has no such
 * slot). */
struct sim_token *sim_token_for_slot(CK_SLOT_ID slot);

/* Whether C_Finalize has started (calls waiting for a device give up). */
int sim_finalizing(void);

/* Small helpers for the lock wrappers of device.c and session.c. */
void sim_mutex_lock(pthread_mutex_t *m);
void sim_mutex_unlock(pthread_mutex_t *m);

#endif
