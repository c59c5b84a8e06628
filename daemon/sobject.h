/*
 * Session objects (docs/architecture.md, "Session objects"): the keys and objects an
 * application creates for itself with CKA_TOKEN false. Each is made on one member, in its
 * helper's objects session, and pinned there: every operation with it runs on that member,
 * and on that helper only (the generation it was made in). They belong to an application (the
 * shim's id for its process, sent with CLIENT on each connection, with the connection's uid and
 * pid) and to the shim session that made them, and end with that session (DROP), with
 * DESTROY, with the helper (a member that fails loses them, as a pulled device does), or when
 * the application's last connection has stayed closed for APP_GRACE_S seconds.
 */
#ifndef P11MUXD_SOBJECT_H
#define P11MUXD_SOBJECT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "view.h"

struct client;
struct daemon;
struct pool;

/* How long an application's objects outlive its last connection. */
#define APP_GRACE_S 10

struct sobj {
	struct sobj *next;
	struct pobject po; /* handle (P11MUX_SESSION_OBJECT set), class, attributes, and in
	                    * backend[] the member's handle, at the pinned member's index only */
	struct pool *pool;
	size_t member;
	uint64_t gen;              /* the member's helper generation it lives in */
	CK_SESSION_HANDLE session; /* the shim's session that made it */
	size_t bytes;              /* what it counts against the application's quota */
	unsigned refs;             /* requests using it */
	int dead;                  /* destroyed or lost: freed with its last reference */
	int destroy; /* dead and still on its member: destroyed there with the last reference
	              * (an operation in flight keeps it, so the member never reuses its handle
	              * under that operation) */
};

/* An application: one process of a client, as the shim's id, uid and pid name it. */
struct app {
	struct app *next;
	uid_t uid;
	pid_t pid;
	uint64_t id;
	unsigned conns;   /* connections bound to it */
	uint64_t idle_ns; /* when the last one closed */
	char comm[17];    /* its program's name (/proc/PID/comm), "?" when unknown */
	/* Cryptographic operations asked since it bound, and in each of the last 10 seconds
	 * (the second, and the count): atomics, counted without the registry's lock on every
	 * operation's path (a bound connection keeps its application alive). */
	atomic_uint_fast64_t ops;
	atomic_uint_fast64_t op_second[10];
	atomic_uint op_count[10];
	struct sobj *objs;
	size_t nobjs, bytes;
};

struct apps {
	pthread_mutex_t lock; /* protects everything here and in the apps and objects */
	struct app *list;
	size_t napps;
	uint64_t instance; /* random at start: shims see that objects of an earlier daemon are gone
	                    */
	CK_OBJECT_HANDLE next;    /* the next session object's number */
	unsigned max_objects;     /* per application */
	size_t max_bytes;         /* per application */
	unsigned max_uid_objects; /* per user: a user's processes together */
	size_t max_uid_bytes;
	unsigned max_total;                      /* everybody's together */
	uint64_t made, destroyed, lost, refused; /* since start */
	struct {
		uid_t uid;
		uint64_t until_ns;
	} struck[16]; /* users whose request cost a helper: no objects made for a while */
	size_t next_strike;
	unsigned reapers;      /* threads destroying a gone application's objects */
	pthread_cond_t reaped; /* signalled when one ends */
	int ready;             /* apps_init() ran */
};

/* Sets up the registry with the quota (per application, and per user: a user can start many
 * processes). 0, or -1 when the randomness for the instance fails. */
int apps_init(struct apps *a, unsigned max_objects, size_t max_bytes, unsigned max_uid_objects,
              size_t max_uid_bytes, unsigned max_total);
/* Waits for the threads that destroy gone applications' objects (before the pools close), then
 * frees every application and object; no device is called (the helpers end with the daemon).
 * Fine on a registry apps_init() never set up. */
void apps_destroy(struct apps *a);
/* CLIENT: binds connection c to the application id of its uid and pid (made when new). */
CK_RV apps_bind(struct apps *a, struct client *c, uint64_t id);
/* The connection ended. */
void apps_unbind(struct apps *a, struct client *c);
/* Reserves room for n objects of bytes in all under c's application: CKR_OK, or
 * CKR_DEVICE_MEMORY past the quota. apps_release() gives back what was not used. */
CK_RV apps_reserve(struct apps *a, struct client *c, size_t n, size_t bytes);
void apps_release(struct apps *a, struct client *c, size_t n, size_t bytes);
/* Registers what member idx (of generation gen) made for c's session: mo's attributes are
 * moved into the new object, whose handle is returned (CK_INVALID_HANDLE when out of memory;
 * mo is freed either way). */
CK_OBJECT_HANDLE sobj_add(struct apps *a, struct client *c, struct pool *p, size_t idx,
                          uint64_t gen, CK_SESSION_HANDLE session, struct mobject *mo,
                          size_t bytes);
/* c's application's object h in pool p, with a reference taken; NULL when there is none. */
struct sobj *sobj_get(struct apps *a, struct client *c, const struct pool *p, CK_OBJECT_HANDLE h);
/* Drops a reference; an object that is dead is freed with its last. */
void sobj_put(struct apps *a, struct sobj *o);
/* Marks o lost (its member failed): later lookups do not find it. */
void sobj_lost(struct apps *a, struct sobj *o);
/* Destroys c's object h of pool p on its member: CKR_OK, or CKR_OBJECT_HANDLE_INVALID. */
CK_RV sobj_destroy(struct apps *a, struct client *c, struct pool *p, CK_OBJECT_HANDLE h);
/* Destroys c's objects of pool p made in session (0: all of them; P11MUX_DROP_PRIVATE: the
 * private ones, as a logout ends them on a device). */
void sobj_drop(struct apps *a, struct client *c, struct pool *p, CK_SESSION_HANDLE session);
/* Ends the applications whose last connection closed APP_GRACE_S ago: their objects are
 * destroyed by a thread of their own (this is the accept loop). 1 while an idle application
 * still has objects (the loop should come back within a second), else 0. */
int apps_sweep(struct apps *a);
/* A request of c's user to make objects cost a member's helper: that user makes no more for
 * QUARANTINE_S seconds (another process of the user would only repeat it). */
void apps_strike(struct apps *a, struct client *c);
int apps_struck(struct apps *a, uid_t uid);
/* Counts a cryptographic operation of c's application (for p11muxctl status). */
void apps_op(struct apps *a, struct client *c);
/* One line of `p11muxctl status`'s clients: an application with a connection. */
struct app_info {
	uid_t uid;
	pid_t pid;
	char comm[17];
	unsigned conns;
	size_t objects;
	uint64_t ops;
	double ops_per_s; /* over the last 10 complete seconds */
};
/* The applications that have a connection now: *out (malloc'ed, *n entries). 0 or -1. */
int apps_list(struct apps *a, struct app_info **out, size_t *n);
/* For p11muxctl and the metrics: applications, objects and bytes held now. */
void apps_count(struct apps *a, size_t *napps, size_t *nobjs, size_t *bytes);
/* The live session objects of pool p on member idx (SIZE_MAX: on any). */
size_t apps_count_pool(struct apps *a, const struct pool *p, size_t idx);

#endif
