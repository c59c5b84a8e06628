/*
 * Internal interface of the shim (p11mux-pkcs11.so). The shim keeps sessions, pending
 * operations, multi-part data, find results and a cache of the pool's (read-only) objects
 * itself, and sends the daemon self-contained operations, so that NSS's
 * OpenSession/SignInit/Sign/CloseSession costs one round trip.
 *
 * Locking: module.lock protects every field of struct shim and what hangs off it, except
 * a connection's socket and buffers, which belong to the one thread that took the
 * connection out of the pool. No lock is held across a round trip.
 */
#ifndef P11MUX_MODULE_H
#define P11MUX_MODULE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "buffer.h"
#include "hmap.h"
#include "proto.h"

#define SHIM_MAX_SLOTS            16
#define SHIM_MAX_IDLE             8
#define SHIM_MAX_PIN              256
#define SHIM_TICKET_LEN           36
#define SHIM_DEFAULT_SOCKET       "/run/p11mux/p11mux.sock"
#define SHIM_DEFAULT_RECONNECT_MS 2000
#define SHIM_PARAMS_MAX           4096 /* C_Initialize's parameter string, its NUL included */

/* One connection to the daemon. */
struct conn {
	struct conn *next;     /* in the idle list, or in the all list (see all_next) */
	struct conn *all_next; /* every connection, idle or busy, for fork clean-up */
	int fd;
	struct p11mux_buf *buf; /* request, then reply */
	uint64_t auth_gen;      /* shim.auth_gen this connection's logins reflect */
	uint8_t logged_in[SHIM_MAX_SLOTS];
};

/* A pending cryptographic operation of a session. */
struct op {
	int active;
	CK_MECHANISM mech; /* pParameter points at param */
	uint8_t *param;
	CK_OBJECT_HANDLE key;
	uint8_t *data; /* multi-part data gathered so far */
	size_t len, cap;
	int multipart;
	uint8_t *result; /* computed result kept for a size query */
	size_t rlen;
	int have_result;
};

enum op_kind { OP_SIGN, OP_VERIFY, OP_ENCRYPT, OP_DECRYPT, OP_DIGEST, OP_COUNT };

struct session {
	CK_SESSION_HANDLE handle;
	CK_SLOT_ID slot;
	CK_FLAGS flags;
	struct op ops[OP_COUNT];
	int finding;
	CK_OBJECT_HANDLE *found;
	size_t nfound, foundpos;
	int made_objects; /* session objects were made in it: the daemon drops them at close */
};

/* A pool object as the daemon described it; token objects of the pool never change, and
 * handles are derived from the object's identity, so the copy stays true. */
struct object {
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session; /* a session object's: the session that made it (else 0) */
	CK_ATTRIBUTE *attrs;       /* values are copies */
	CK_RV *status;
	size_t n;
};

struct slot {
	struct p11mux_slot info; /* mechs/infos owned */
	int logged_in;
	uint8_t ticket[SHIM_TICKET_LEN]; /* the daemon's, while logged in: logs in new connections
	                                  */
	size_t nsessions;
	int made_objects; /* session objects were made on it: dropped at C_Finalize */
	/* The pool's view version at the last search (FIND's reply): another one means keys
	 * came or went, and the cached token objects of the slot are dropped. */
	uint64_t view_version;
	int have_view_version;
};

struct shim {
	pthread_mutex_t lock;
	_Atomic int initialized;
	_Atomic pid_t pid; /* process that called C_Initialize */
	char *socket_path;
	unsigned reconnect_ms; /* how long to wait for a daemon that is (re)starting */
	int reached;           /* this process (or its parent) has talked to the daemon */
	struct conn *idle;
	size_t nidle;
	struct conn *all;
	struct p11mux_hmap *sessions;
	CK_SESSION_HANDLE next_session;
	struct slot slots[SHIM_MAX_SLOTS];
	size_t nslots;
	int have_slots;
	uint64_t auth_gen;
	struct p11mux_hmap *objects;
	/* The last ticket of each slot this process (or its parent) logged in to: kept across
	 * C_Finalize and fork, so that a child logging in with the same PIN is let in while
	 * the pool's PIN is locked by a guesser. Dropped by C_Logout. */
	struct {
		CK_SLOT_ID id;
		uint8_t ticket[SHIM_TICKET_LEN];
	} kept[SHIM_MAX_SLOTS];
	size_t nkept;
	uint64_t calls[P11MUX_CALL_COUNT]; /* round trips made, by call */
	/* This process as an application of the daemon (its session objects): an id drawn at
	 * C_Initialize, sent with CLIENT on every connection, and the daemon's instance that
	 * answered; another instance means a restart, which took the session objects along. */
	uint64_t client_id;
	uint64_t instance;
	int have_instance;
	int quiet; /* quiet=1 among the module's parameters: no stderr lines of its own */
};

extern struct shim shim;

void shim_lock(void);
void shim_unlock(void);

/* Debug log to stderr when P11MUX_DEBUG is set. */
void shim_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Tells the application's log that a call was refused (once per function). */
void shim_refused(const char *func, CK_RV rv, const char *why);
/* Tells the application's log that the daemon cannot be reached at path (once per process). */
void shim_unreachable(const char *path, const char *why);

/* --- C_Initialize's parameter string (params.c) --- */

/* Copies the string an application passed in pReserved without trusting the pointer: read
 * with a call that cannot fault, at most SHIM_PARAMS_MAX bytes with its NUL, and accepted
 * only as key=value text. CKR_OK with *out a copy the caller frees; CKR_ARGUMENTS_BAD for an
 * unreadable pointer, a missing NUL or other text; CKR_HOST_MEMORY. */
CK_RV params_copy(const void *reserved, char **out);
/* The value of key in a string params_copy() accepted, quotes and escapes removed: a copy
 * the caller frees, or NULL when the key is absent (or memory ran out). */
char *params_get(const char *params, const char *key);

/* --- the daemon's identity (peer.c) --- */

/* Checks, before anything is sent on c, that the process listening on the socket at path
 * (SO_PEERCRED) is root or the socket file's owner, and that neither the socket file nor its
 * directory is writable by others. CKR_OK; otherwise closes c->fd, says why (debug log; the
 * application's log once per process) and returns CKR_DEVICE_ERROR. */
CK_RV peer_check(struct conn *c, const char *path);

/* --- connections (conn.c) --- */

/* Puts a request's fields (after the call code). Errors are sticky in m: no check needed. */
typedef void (*shim_put_fn)(struct p11mux_msg *m, void *arg);
/* Reads a successful reply's fields from m, copying what it keeps (the message is cleared
 * after it returns); c is the connection the call went over. Returns CKR_OK, or the CK_RV
 * the call should fail with (CKR_DEVICE_ERROR for a reply that does not decode). */
typedef CK_RV (*shim_get_fn)(struct p11mux_msg *m, struct conn *c, void *arg);

/*
 * One call to the daemon: takes a connection from the pool (or opens one: handshake, logins
 * replayed), begins the request, lets put() add its fields (NULL: none), sends it, once more
 * on a fresh connection when a pooled one turns out dead before any reply byte (every call
 * is safe to repeat), and on CKR_OK lets get() read the reply (NULL: no fields). Returns the
 * daemon's CK_RV or get()'s; CKR_DEVICE_ERROR when the daemon cannot be reached or its reply
 * does not decode; CKR_HOST_MEMORY, CKR_DATA_LEN_RANGE or CKR_GENERAL_ERROR when the request
 * could not be encoded.
 */
CK_RV shim_call(uint32_t call, shim_put_fn put, shim_get_fn get, void *arg);
/* Takes an idle connection or opens one (handshake, logins replayed). NULL with *rv set. */
struct conn *conn_get(CK_RV *rv);
/* Returns a healthy connection to the idle pool; NULL is fine. */
void conn_put(struct conn *c);
/* Closes a connection after an error. */
void conn_drop(struct conn *c);
/* Closes every idle connection (e.g. after C_Logout). Lock held. */
void conn_close_idle_locked(void);
/* Frees every connection of this process; with inherited set (after fork) only closes
 * the descriptors and leaks what another thread of the parent may have been using. */
void conn_close_all_locked(int inherited);

/* --- slots and objects (cache.c) --- */

/* Fetches the slot list from the daemon and merges it (slots are never removed). */
CK_RV cache_refresh_slots(void);
/* Makes sure the slot list was fetched once. */
CK_RV cache_need_slots(void);
/* Index of a slot ID in shim.slots, or -1. Lock held. */
int cache_slot_index_locked(CK_SLOT_ID id);
/* The object for handle, fetched from the daemon if it is not cached. On success *out is
 * a copy the caller frees with object_free(). */
CK_RV cache_get_object(CK_SLOT_ID slot, CK_OBJECT_HANDLE h, struct object **out);
/* Runs fn on the cached object for handle (fetched first if needed), with the lock held:
 * fn must not call back into the shim. Returns fn's result, or why the object is not there. */
CK_RV cache_with_object(CK_SLOT_ID slot, CK_OBJECT_HANDLE h,
                        CK_RV (*fn)(const struct object *o, void *arg), void *arg);
/* Drops every cached object (after logout, finalize). Lock held. */
void cache_clear_objects_locked(void);
/* Drops one cached object (a session object destroyed or gone). Lock held. */
void cache_forget_locked(CK_OBJECT_HANDLE h);
/* Drops the cached session objects of slot made in session (0: all; P11MUX_DROP_PRIVATE: the
 * private ones). Lock held. */
void cache_forget_session_locked(CK_SLOT_ID slot, CK_SESSION_HANDLE session);
/* Drops the cached token objects of a slot (the pool's keys changed). Lock held. */
void cache_forget_token_objects_locked(CK_SLOT_ID slot);
/* Finds attribute type in an object: its index or -1. */
int object_find(const struct object *o, CK_ATTRIBUTE_TYPE type);
/* A CK_BBOOL attribute of the object; dflt when absent. */
int object_bool(const struct object *o, CK_ATTRIBUTE_TYPE type, int dflt);
/* A CK_ULONG attribute; dflt when absent. */
CK_ULONG object_ulong(const struct object *o, CK_ATTRIBUTE_TYPE type, CK_ULONG dflt);
struct object *object_dup(const struct object *o);
/* An object of slot from n attributes, deep-copied; NULL when out of memory. */
struct object *object_make(CK_SLOT_ID slot, const CK_ATTRIBUTE *a, const CK_RV *st, size_t n);
void object_free(struct object *o);

/* --- sessions and operations (session.c) --- */

/* Session for handle, or NULL. Lock held. */
struct session *session_get_locked(CK_SESSION_HANDLE h);
/* Ends an operation and frees its buffers. */
void op_reset(struct op *op);
/* Copies mechanism into op (deep, parameter included). CKR_HOST_MEMORY on failure. */
CK_RV op_set_mech(struct op *op, const CK_MECHANISM *mech);
/* Appends multi-part data; CKR_DATA_LEN_RANGE past P11MUX_DATA_MAX. */
CK_RV op_append(struct op *op, const void *p, size_t len);
void session_free(struct session *s);

#endif
