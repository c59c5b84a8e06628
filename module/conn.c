/* Connections to the daemon: a small pool, the handshake, and logins replayed on every new
 * connection so that a daemon restart goes unnoticed by the application. */
#include "module.h"
#include "err.h"
#include "log.h"
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static CK_RV roundtrip(struct conn *c, struct p11mux_msg *m, int *broken);

static void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	p11mux_buf_free(c->buf);
	free(c);
}

/* Unlinks c from the list of all connections. Lock held. */
static void
unlink_all_locked(struct conn *c)
{
	struct conn **pc;

	for (pc = &shim.all; *pc != NULL; pc = &(*pc)->all_next)
		if (*pc == c) {
			*pc = c->all_next;
			return;
		}
}

#define BROKEN        1 /* the connection is unusable */
#define BROKEN_RESEND 2 /* ... and the request is still in the buffer, no reply byte came */

/* The CK_RV for a request that could not be encoded. */
static CK_RV
encode_rv(int r)
{
	switch (r) {
	case P11MUX_ERR_NOMEM:
		return CKR_HOST_MEMORY;
	case P11MUX_ERR_TOO_BIG:
		return CKR_DATA_LEN_RANGE;
	default:
		return CKR_GENERAL_ERROR;
	}
}

/* One request and its reply on c, without retry. *broken is 0, BROKEN or BROKEN_RESEND. */
static CK_RV
roundtrip(struct conn *c, struct p11mux_msg *m, int *broken)
{
	/* Kept: a reply that does not decode leaves m->call NULL (or another call's). */
	const char *name = m->call->name;
	uint32_t call = m->call->code;
	CK_RV rv;
	int r;

	*broken = 0;
	/* Every field was put without a check: a message that lost one is never sent. */
	if ((r = p11mux_msg_end(m)) != 0) {
		shim_debug("encoding %s failed: %s", name, p11mux_strerror(r));
		return encode_rv(r);
	}
	if ((r = p11mux_frame_send(c->fd, c->buf)) != 0 ||
	    (r = p11mux_frame_recv(c->fd, c->buf, P11MUX_FRAME_MAX)) != 0) {
		shim_debug("%s: %s (%s)", name, p11mux_strerror(r), strerror(errno));
		*broken = (r == P11MUX_ERR_IO || r == P11MUX_ERR_CLOSED) ? BROKEN_RESEND : BROKEN;
		return CKR_DEVICE_ERROR;
	}
	shim_lock();
	shim.calls[call]++;
	shim_unlock();
	if ((r = p11mux_msg_read_reply(m, c->buf, call, &rv)) != 0) {
		shim_debug("bad reply to %s: %s", name, p11mux_strerror(r));
		*broken = 1;
		return CKR_DEVICE_ERROR;
	}
	return rv;
}

/* Reads the reply's fields with get (when the call succeeded) and checks that the reply was
 * whole; a reply the shim cannot read is the daemon's fault: CKR_DEVICE_ERROR. */
static CK_RV
read_reply(struct p11mux_msg *m, CK_RV rv, struct conn *c, shim_get_fn get, void *arg)
{
	/* A reply carries its whole result, so the daemon's CKR_BUFFER_TOO_SMALL (a backend's,
	 * passed on) is about no buffer of the application's; handed on, it would tell the
	 * application that its operation is still active and its length set (PKCS#11 5.2). */
	if (rv == CKR_BUFFER_TOO_SMALL) {
		shim_debug("%s: CKR_BUFFER_TOO_SMALL from the daemon", m->call->name);
		rv = CKR_DEVICE_ERROR;
	}
	if (rv == CKR_OK && get != NULL)
		rv = get(m, c, arg);
	if (rv == CKR_OK && p11mux_msg_end(m) != 0) {
		shim_debug("malformed reply to %s", m->call->name);
		rv = CKR_DEVICE_ERROR;
	}
	return rv;
}

/* One call on connection c, without retry (the handshake and the login replay). */
static CK_RV
conn_call(struct conn *c, uint32_t call, shim_put_fn put, shim_get_fn get, void *arg, int *broken)
{
	struct p11mux_msg m = {0};
	CK_RV rv;

	p11mux_msg_begin_request(&m, c->buf, call);
	if (put != NULL)
		put(&m, arg);
	rv = roundtrip(c, &m, broken);
	if (!*broken)
		rv = read_reply(&m, rv, c, get, arg);
	p11mux_msg_clear(&m);
	return rv;
}

/* A login (or logout) to replay on a connection: the login with the daemon's ticket, no
 * PIN. */
struct replay {
	CK_SLOT_ID id;
	int want;
	uint8_t ticket[SHIM_TICKET_LEN];
};

static void
put_replay(struct p11mux_msg *m, void *arg)
{
	const struct replay *t = arg;

	p11mux_msg_put_ulong(m, t->id);
	if (t->want) {
		p11mux_msg_put_ulong(m, CKU_USER);
		p11mux_msg_put_bytes(m, "", 0);
		p11mux_msg_put_bytes(m, t->ticket, sizeof(t->ticket));
	}
}

/* A replayed login's reply: the same ticket again, not needed. */
static CK_RV
get_replay(struct p11mux_msg *m, struct conn *c, void *arg)
{
	const struct replay *t = arg;
	const uint8_t *ticket;
	size_t len;

	(void)c;
	if (t->want)
		p11mux_msg_get_bytes(m, &ticket, &len);
	return CKR_OK;
}

/* Logs c in to (or out of) every slot as the application currently is. */
static CK_RV
reconcile(struct conn *c)
{
	struct replay todo[SHIM_MAX_SLOTS];
	size_t i, n = 0;
	uint64_t gen;
	int broken = 0, idx;
	CK_RV rv = CKR_OK;

	shim_lock();
	gen = shim.auth_gen;
	for (i = 0; i < shim.nslots; i++) {
		if (c->logged_in[i] == shim.slots[i].logged_in)
			continue;
		todo[n].id = shim.slots[i].info.id;
		todo[n].want = shim.slots[i].logged_in;
		if (todo[n].want)
			memcpy(todo[n].ticket, shim.slots[i].ticket, SHIM_TICKET_LEN);
		n++;
	}
	shim_unlock();
	for (i = 0; i < n && rv == CKR_OK && !broken; i++) {
		rv = conn_call(c, todo[i].want ? P11MUX_CALL_LOGIN : P11MUX_CALL_LOGOUT, put_replay,
		               get_replay, &todo[i], &broken);
		/* A refused replay (the daemon's PIN or ticket key changed) leaves the
		 * connection logged out; the operation then fails with CKR_USER_NOT_LOGGED_IN. */
		if (!broken && (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN ||
		                rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_PIN_INCORRECT)) {
			shim_lock();
			if ((idx = cache_slot_index_locked(todo[i].id)) >= 0)
				c->logged_in[idx] =
				        (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
				                ? todo[i].want
				                : 0;
			shim_unlock();
			rv = CKR_OK;
		}
	}
	explicit_bzero(todo, sizeof(todo));
	if (rv == CKR_OK && !broken)
		c->auth_gen = gen;
	return broken ? CKR_DEVICE_ERROR : rv;
}

static void
put_hello(struct p11mux_msg *m, void *arg)
{
	(void)arg;
	p11mux_msg_put_ulong(m, P11MUX_PROTO_MAGIC);
	p11mux_msg_put_ulong(m, P11MUX_PROTO_VERSION);
	p11mux_msg_put_ulong(m, P11MUX_PROTO_VERSION);
}

static CK_RV
get_hello(struct p11mux_msg *m, struct conn *c, void *arg)
{
	CK_ULONG version = 0;
	const uint8_t *name;
	size_t namelen;

	(void)c;
	(void)arg;
	p11mux_msg_get_ulong(m, &version);
	p11mux_msg_get_bytes(m, &name, &namelen);
	/* Only the newest: the shim and its daemon come from one package. */
	return p11mux_msg_end(m) == 0 && version == P11MUX_PROTO_VERSION ? CKR_OK
	                                                                 : CKR_DEVICE_ERROR;
}

static void
put_client(struct p11mux_msg *m, void *arg)
{
	(void)arg;
	p11mux_msg_put_ulong(m, shim.client_id);
}

/* The daemon's instance: one that is not the instance this process knew has none of the
 * session objects the process made (the daemon restarted); cached ones are forgotten. */
static CK_RV
get_client(struct p11mux_msg *m, struct conn *c, void *arg)
{
	CK_ULONG instance = 0;

	(void)c;
	(void)arg;
	if (p11mux_msg_get_ulong(m, &instance) != 0 || p11mux_msg_end(m) != 0)
		return CKR_DEVICE_ERROR;
	shim_lock();
	if (shim.have_instance && shim.instance != instance) {
		shim_debug("the daemon restarted: session objects of this process are gone");
		cache_clear_objects_locked();
	}
	shim.instance = instance;
	shim.have_instance = 1;
	shim_unlock();
	return CKR_OK;
}

/* Connects and shakes hands once. CKR_OK; CKR_DEVICE_ERROR with *retry set when the daemon
 * is not there (yet) or went away mid-handshake; another CK_RV when it refused us. */
static CK_RV
open_once(struct conn *c, const char *path, int *retry)
{
	int broken = 0;
	CK_RV rv;

	*retry = 0;
	if ((c->fd = p11mux_unix_connect(path)) < 0) {
		*retry = errno == ENOENT || errno == ECONNREFUSED;
		shim_debug("cannot connect to %s: %s", path, strerror(errno));
		if (!*retry)
			shim_unreachable(path, strerror(errno));
		return CKR_DEVICE_ERROR;
	}
	if ((rv = peer_check(c, path)) != CKR_OK)
		return rv;
	if ((rv = conn_call(c, P11MUX_CALL_HELLO, put_hello, get_hello, NULL, &broken)) != CKR_OK ||
	    (rv = conn_call(c, P11MUX_CALL_CLIENT, put_client, get_client, NULL, &broken)) !=
	            CKR_OK) {
		/* A connection reset during the handshake: a daemon that was dying when we
		 * connected. Its successor may be a moment away. */
		*retry = broken == BROKEN_RESEND;
		shim_debug("handshake failed: %s", p11mux_rv_name(rv));
		close(c->fd);
		c->fd = -1;
		p11mux_buf_reset(c->buf);
		return CKR_DEVICE_ERROR;
	}
	return CKR_OK;
}

/* Opens a connection and shakes hands. A daemon that is being restarted has no socket, or
 * one nobody accepts on, for a moment: wait for it, up to reconnect_ms, rather than fail the
 * application's call. A process that has never reached the daemon does not wait: the module
 * may be registered with p11-kit, and every GnuTLS program on the machine would otherwise
 * stall for reconnect_ms while p11muxd is stopped. */
static struct conn *
conn_open(CK_RV *rv)
{
	struct timespec pause = {0, 50 * 1000 * 1000};
	struct conn *c = NULL;
	unsigned waited, limit;
	char *path;
	int retry;

	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->buf = p11mux_buf_new(P11MUX_FRAME_MAX)) == NULL) {
		*rv = CKR_HOST_MEMORY;
		goto fail;
	}
	c->fd = -1;
	shim_lock();
	path = strdup(shim.socket_path);
	limit = shim.reached ? shim.reconnect_ms : 0;
	shim_unlock();
	if (path == NULL) {
		*rv = CKR_HOST_MEMORY;
		goto fail;
	}
	for (waited = 0;; waited += 50) {
		*rv = open_once(c, path, &retry);
		if (*rv == CKR_OK || !retry || waited >= limit)
			break;
		nanosleep(&pause, NULL);
	}
	if (*rv != CKR_OK) {
		/* (A daemon refused by peer_check() has had its own line.) */
		if (retry)
			shim_unreachable(path, "no daemon listening");
		free(path);
		goto fail;
	}
	free(path);
	shim_lock();
	shim.reached = 1;
	c->all_next = shim.all;
	shim.all = c;
	shim_unlock();
	return c;
fail:
	conn_free(c);
	return NULL;
}

/* Says once per process, on stderr, that the daemon cannot be reached and where it was
 * looked for: applications then show the reason, not only CKR_FUNCTION_FAILED (quiet=1 in
 * the module's parameters silences it, as p11-kit's module file does). */
void
shim_unreachable(const char *path, const char *why)
{
	static int said;
	int first;

	shim_lock();
	first = !said && !shim.quiet;
	said = 1;
	shim_unlock();
	if (first)
		fprintf(stderr,
		        "p11mux-pkcs11: cannot reach p11muxd at %s (%s); is it running? "
		        "(systemctl status p11mux; the socket is set by socket= in the module's "
		        "parameters or P11MUX_SOCKET)\n",
		        path, why);
}

struct conn *
conn_get(CK_RV *rv)
{
	struct conn *c;
	int stale;

	shim_lock();
	if ((c = shim.idle) != NULL) {
		shim.idle = c->next;
		shim.nidle--;
	}
	shim_unlock();
	if (c == NULL && (c = conn_open(rv)) == NULL)
		return NULL;
	shim_lock();
	stale = c->auth_gen != shim.auth_gen;
	shim_unlock();
	if (stale) {
		if ((*rv = reconcile(c)) != CKR_OK) {
			conn_drop(c);
			return NULL;
		}
	}
	return c;
}

void
conn_put(struct conn *c)
{
	if (c == NULL)
		return;
	shim_lock();
	if (shim.nidle < SHIM_MAX_IDLE) {
		c->next = shim.idle;
		shim.idle = c;
		shim.nidle++;
		c = NULL;
	} else {
		unlink_all_locked(c);
	}
	shim_unlock();
	conn_free(c);
}

void
conn_drop(struct conn *c)
{
	shim_lock();
	unlink_all_locked(c);
	shim_unlock();
	conn_free(c);
}

void
conn_close_idle_locked(void)
{
	struct conn *c;

	while ((c = shim.idle) != NULL) {
		shim.idle = c->next;
		unlink_all_locked(c);
		conn_free(c);
	}
	shim.nidle = 0;
}

void
conn_close_all_locked(int inherited)
{
	struct conn *c, *next;

	if (inherited) {
		/* Another thread of the parent may have been using these at fork time: close
		 * our copies of the descriptors (the parent's stay open) and let the memory go. */
		for (c = shim.all; c != NULL; c = c->all_next)
			close(c->fd);
	} else {
		for (c = shim.all; c != NULL; c = next) {
			next = c->all_next;
			conn_free(c);
		}
	}
	shim.all = NULL;
	shim.idle = NULL;
	shim.nidle = 0;
}

/* Sends the request in m (begun on c->buf) and reads the reply into m. On a broken
 * connection from the pool, retries once on a fresh one (*c may change). Returns the
 * daemon's CK_RV, or CKR_DEVICE_ERROR when the daemon cannot be reached; then the connection
 * is gone and *c is NULL. */
static CK_RV
conn_transact(struct conn **cp, struct p11mux_msg *m)
{
	struct conn *c = *cp, *fresh;
	int broken;
	CK_RV rv;

	rv = roundtrip(c, m, &broken);
	if (broken == 0)
		return rv;
	/* The connection came from the pool and may predate a daemon restart. When the request
	 * is still in the buffer (the failure came before any reply byte), send it once more
	 * on a new connection: every call is safe to repeat. */
	*cp = NULL;
	/* The idle connections came from the same daemon, gone too: close them all, so that
	 * the retry gets a new connection rather than another dead one. */
	shim_lock();
	conn_close_idle_locked();
	shim_unlock();
	if (broken != BROKEN_RESEND || (fresh = conn_get(&rv)) == NULL) {
		conn_drop(c);
		return CKR_DEVICE_ERROR;
	}
	p11mux_buf_reset(fresh->buf);
	if (p11mux_buf_put(fresh->buf, p11mux_buf_data(c->buf), p11mux_buf_len(c->buf)) != 0) {
		conn_drop(c);
		conn_put(fresh);
		return CKR_HOST_MEMORY;
	}
	m->buf = fresh->buf;
	conn_drop(c);
	rv = roundtrip(fresh, m, &broken);
	if (broken) {
		conn_drop(fresh);
		return CKR_DEVICE_ERROR;
	}
	*cp = fresh;
	return rv;
}

CK_RV
shim_call(uint32_t call, shim_put_fn put, shim_get_fn get, void *arg)
{
	struct p11mux_msg m = {0};
	struct conn *c;
	CK_RV rv;

	if ((c = conn_get(&rv)) == NULL)
		return rv;
	p11mux_msg_begin_request(&m, c->buf, call);
	if (put != NULL)
		put(&m, arg);
	rv = conn_transact(&c, &m);
	if (c != NULL)
		rv = read_reply(&m, rv, c, get, arg);
	p11mux_msg_clear(&m);
	conn_put(c);
	return rv;
}
