/*
 * A member's helper: p11muxd re-executed for one device ("p11muxd: member hsm2" in ps). It
 * loads the backend module, finds its token by serial, logs in when the daemon sends the PIN,
 * reads the token's objects for the daemon, then runs the daemon's operations on it. A device
 * call that hangs, a crash or an exit() inside the vendor module costs this process only: the
 * daemon kills it, or sees it gone, and starts a fresh one (docs/architecture.md).
 *
 * Channels and threads: the main thread serves the control channel (finding the token, the
 * login, the objects); each of the workers_per_member operation channels has a thread of its
 * own, with its own session, that reads a request, runs it and writes the answer, one at a
 * time: no hand-off, no lock on the way of an operation.
 */
#include "backend.h"
#include "err.h"
#include "device.h"
#include "helper.h"
#include "hproto.h"
#include "log.h"
#include "secret.h"
#include "thread.h"
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64

struct helper {
	struct backend *backends; /* the one module, once loaded */
	CK_FUNCTION_LIST *f;
	CK_FUNCTION_LIST *given; /* helper_new()'s module: TOKENS and INIT take it as loaded */
	pthread_mutex_t lock;    /* protects slot and anchor */
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE anchor; /* logged in for the helper's life */
	/* Where the daemon's clients' session objects live: a read-only session (a token
	 * object cannot be made in one), opened on the first, kept for the helper's life. The
	 * operation sessions use the objects: they are the same application's. */
	pthread_mutex_t objlock; /* protects objs, and serialises the calls on it */
	CK_SESSION_HANDLE objs;
	unsigned nop; /* operation channels */
	pthread_t threads[HELPER_MAX_CHANNELS];
	unsigned started;
};

/* What one serving thread owns: its channel, its buffers, its session for operations. */
struct server {
	struct helper *h;
	int fd;
	int op; /* an operation channel (OP, RANDOM), not the control channel */
	struct p11mux_buf *in, *out;
	CK_SESSION_HANDLE s; /* opened on the first operation */
	int malformed;       /* the request being handled did not decode */
};

/* A request that does not decode: the helper stops serving (handle()). Said out of band, not
 * as a CK_RV, so that no module's answer can pass for it. */
static CK_RV
malformed(struct server *sv)
{
	sv->malformed = 1;
	return CKR_GENERAL_ERROR;
}

/* --- loading the module --- */

static CK_RV
load(struct helper *h, const uint8_t *path, size_t len)
{
	struct p11mux_err e = {""};
	struct backend *b;
	char *p;

	if (h->f != NULL)
		return CKR_OK;
	if (h->given != NULL) {
		h->f = h->given;
		return CKR_OK;
	}
	if ((p = strndup((const char *)path, len)) == NULL)
		return CKR_HOST_MEMORY;
	b = backend_get(&h->backends, p, &e);
	free(p);
	if (b == NULL) {
		log_error("%s", e.msg);
		return CKR_GENERAL_ERROR;
	}
	h->f = b->f;
	return CKR_OK;
}

/* Describes the token in slot: slot and token info, mechanisms (in s's arrays, malloc'ed). */
static CK_RV
describe(struct helper *h, CK_SLOT_ID slot, struct p11mux_slot *s)
{
	CK_ULONG n = 0, i;
	CK_RV rv;

	memset(s, 0, sizeof(*s));
	s->id = slot;
	if ((rv = h->f->C_GetSlotInfo(slot, &s->slot)) != CKR_OK ||
	    (rv = h->f->C_GetTokenInfo(slot, &s->token)) != CKR_OK ||
	    (rv = h->f->C_GetMechanismList(slot, NULL, &n)) != CKR_OK)
		return rv;
	s->mechs = calloc(n + 1, sizeof(*s->mechs));
	s->infos = calloc(n + 1, sizeof(*s->infos));
	if (s->mechs == NULL || s->infos == NULL)
		return CKR_HOST_MEMORY;
	if ((rv = h->f->C_GetMechanismList(slot, s->mechs, &n)) != CKR_OK)
		return rv;
	for (i = 0; i < n; i++)
		if (h->f->C_GetMechanismInfo(slot, s->mechs[i], &s->infos[i]) != CKR_OK)
			memset(&s->infos[i], 0, sizeof(s->infos[i]));
	s->nmechs = n;
	return CKR_OK;
}

static void
free_slots(struct p11mux_slot *s, size_t n)
{
	size_t i;

	for (i = 0; s != NULL && i < n; i++) {
		free(s[i].mechs);
		free(s[i].infos);
	}
	free(s);
}

/* The slots with a token present; *out is malloc'ed. */
static CK_RV
present_slots(struct helper *h, CK_SLOT_ID **out, CK_ULONG *n)
{
	CK_SLOT_ID *slots;
	CK_RV rv;

	if ((rv = h->f->C_GetSlotList(CK_TRUE, NULL, n)) != CKR_OK)
		return rv;
	if ((slots = calloc(*n + 1, sizeof(*slots))) == NULL)
		return CKR_HOST_MEMORY;
	if ((rv = h->f->C_GetSlotList(CK_TRUE, slots, n)) != CKR_OK) {
		free(slots);
		return rv;
	}
	*out = slots;
	return CKR_OK;
}

/* --- the calls --- */

static CK_RV
run_tokens(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	struct p11mux_slot *s = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i, k = 0;
	const uint8_t *path;
	size_t len;
	CK_RV rv;

	p11mux_msg_get_bytes(req, &path, &len);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	if ((rv = load(h, path, len)) != CKR_OK || (rv = present_slots(h, &slots, &n)) != CKR_OK)
		return rv;
	if ((s = calloc(n + 1, sizeof(*s))) == NULL)
		rv = CKR_HOST_MEMORY;
	for (i = 0; rv == CKR_OK && i < n; i++) {
		/* A token that does not answer is left out of the list, not the list's end. */
		if (describe(h, slots[i], &s[k]) == CKR_OK &&
		    (s[k].token.flags & CKF_TOKEN_INITIALIZED)) {
			k++;
			continue;
		}
		free(s[k].mechs);
		free(s[k].infos);
		memset(&s[k], 0, sizeof(s[k]));
	}
	if (rv == CKR_OK)
		p11mux_msg_put_slots(reply, s, k);
	free_slots(s, k);
	free(slots);
	return rv;
}

/* Whether slot holds the token named id (its serial, or else its label). */
static int
is_token(struct helper *h, CK_SLOT_ID slot, const char *id)
{
	CK_TOKEN_INFO ti;
	char label[33], serial[17];

	if (h->f->C_GetTokenInfo(slot, &ti) != CKR_OK)
		return 0;
	p11mux_field(label, ti.label, sizeof(ti.label));
	p11mux_field(serial, ti.serialNumber, sizeof(ti.serialNumber));
	return strcmp(serial, id) == 0 || strcmp(label, id) == 0;
}

/* Finds the token: in the slot it was in last time first, so that a helper touches only its
 * own slot when nothing moved; else in every slot with a token. */
static CK_RV
find_token(struct helper *h, const char *id, CK_SLOT_ID hint, CK_SLOT_ID *found)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_RV rv;

	if ((rv = present_slots(h, &slots, &n)) != CKR_OK)
		return rv;
	rv = CKR_TOKEN_NOT_PRESENT;
	for (i = 0; i < n && rv != CKR_OK; i++)
		if (slots[i] == hint && is_token(h, hint, id)) {
			*found = hint;
			rv = CKR_OK;
		}
	for (i = 0; i < n && rv != CKR_OK; i++)
		if (slots[i] != hint && is_token(h, slots[i], id)) {
			*found = slots[i];
			rv = CKR_OK;
		}
	free(slots);
	return rv;
}

static void *serve(void *arg);

/* Starts a thread for each operation channel. */
static void
start_workers(struct helper *h)
{
	struct server *sv;

	while (h->started < h->nop) {
		if ((sv = calloc(1, sizeof(*sv))) == NULL)
			break;
		sv->h = h;
		sv->fd = HELPER_OP_FD + (int)h->started;
		sv->op = 1;
		sv->s = CK_INVALID_HANDLE;
		if (pthread_create(&h->threads[h->started], NULL, serve, sv) != 0) {
			free(sv);
			break;
		}
		h->started++;
	}
}

static CK_RV
run_init(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	struct p11mux_slot s;
	const uint8_t *path, *id;
	size_t plen, idlen;
	CK_ULONG hint = 0, workers = 1;
	CK_SLOT_ID slot = 0;
	char name[64];
	CK_RV rv;

	p11mux_msg_get_bytes(req, &path, &plen);
	p11mux_msg_get_bytes(req, &id, &idlen);
	p11mux_msg_get_ulong(req, &hint);
	p11mux_msg_get_ulong(req, &workers);
	if (p11mux_msg_end(req) != 0 || idlen >= sizeof(name))
		return malformed(sv);
	memcpy(name, id, idlen);
	name[idlen] = '\0';
	if ((rv = load(h, path, plen)) != CKR_OK ||
	    (rv = find_token(h, name, hint, &slot)) != CKR_OK)
		return rv;
	(void)workers; /* the channels say how many */
	if ((rv = describe(h, slot, &s)) == CKR_OK) {
		p11mux_lock(&h->lock);
		h->slot = slot;
		p11mux_unlock(&h->lock);
		p11mux_msg_put_slots(reply, &s, 1);
		start_workers(h);
	}
	free(s.mechs);
	free(s.infos);
	return rv;
}

static CK_RV
run_login(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	const uint8_t *pin;
	size_t len;
	CK_RV rv = CKR_OK;

	(void)reply;
	p11mux_msg_get_bytes(req, &pin, &len);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	p11mux_lock(&h->lock);
	if (h->anchor == CK_INVALID_HANDLE)
		rv = h->f->C_OpenSession(h->slot, CKF_SERIAL_SESSION, NULL, NULL, &h->anchor);
	if (rv == CKR_OK)
		rv = h->f->C_Login(h->anchor, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	p11mux_unlock(&h->lock);
	return rv;
}

static CK_RV
run_find(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	CK_OBJECT_HANDLE got[64], *all = NULL, *grown;
	CK_BBOOL yes = CK_TRUE;
	/* Token objects only: the session objects this helper made for applications are
	 * visible to its every session, and must never become the pool's (a rescan reads the
	 * objects of a helper that has made some). */
	CK_ATTRIBUTE token = {CKA_TOKEN, &yes, sizeof(yes)};
	CK_ULONG n, total = 0;
	CK_RV rv;

	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	if ((rv = h->f->C_FindObjectsInit(h->anchor, &token, 1)) != CKR_OK)
		return rv;
	do {
		if ((rv = h->f->C_FindObjects(h->anchor, got, 64, &n)) != CKR_OK)
			break;
		if ((grown = realloc(all, (total + n + 1) * sizeof(*all))) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		all = grown;
		memcpy(all + total, got, n * sizeof(*got));
		total += n;
	} while (n > 0);
	h->f->C_FindObjectsFinal(h->anchor);
	if (rv == CKR_OK)
		p11mux_msg_put_ulongs(reply, all, total);
	free(all);
	return rv;
}

static CK_RV
run_read(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	struct device_object o;
	CK_ULONG handle = 0;
	CK_RV rv;

	p11mux_msg_get_ulong(req, &handle);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	if ((rv = device_read_object(h->f, h->anchor, handle, &o)) == CKR_OK) {
		p11mux_msg_put_ulong(reply, o.cls);
		p11mux_msg_put_ulong(reply, o.ktype);
		p11mux_msg_put_attrs(reply, o.attrs, o.status, o.n);
	}
	device_object_free(&o);
	return rv;
}

/* The thread's session for operations, opened when there is none. */
static CK_RV
session(struct server *sv)
{
	struct helper *h = sv->h;
	CK_SLOT_ID slot;
	CK_RV rv;

	if (sv->s != CK_INVALID_HANDLE)
		return CKR_OK;
	p11mux_lock(&h->lock);
	slot = h->slot;
	p11mux_unlock(&h->lock);
	if ((rv = h->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &sv->s)) != CKR_OK)
		sv->s = CK_INVALID_HANDLE;
	return rv;
}

static CK_RV
run_op(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct device_op a = {0};
	uint8_t *out = NULL;
	size_t outlen = 0;
	CK_RV rv;

	p11mux_msg_get_ulong(req, &a.call);
	p11mux_msg_get_mech(req, &a.mech);
	p11mux_msg_get_ulong(req, &a.key);
	p11mux_msg_get_bytes(req, &a.in, &a.inlen);
	p11mux_msg_get_bytes(req, &a.sig, &a.siglen);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	if ((rv = session(sv)) != CKR_OK)
		return rv;
	rv = device_op(sv->h->f, sv->s, &a, &out, &outlen);
	if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL && device_session_lost(rv)) {
		/* The session's state is unknown; the next operation opens a new one. */
		sv->h->f->C_CloseSession(sv->s);
		sv->s = CK_INVALID_HANDLE;
	}
	if (rv == CKR_OK)
		p11mux_msg_put_bytes(reply, out, outlen);
	p11mux_free_secret(out, outlen);
	return rv;
}

static CK_RV
run_random(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	CK_ULONG len = 0;
	uint8_t *out;
	CK_RV rv;

	p11mux_msg_get_ulong(req, &len);
	if (p11mux_msg_end(req) != 0 || len > 65536)
		return malformed(sv);
	if ((rv = session(sv)) != CKR_OK)
		return rv;
	if ((out = malloc(len ? len : 1)) == NULL)
		return CKR_HOST_MEMORY;
	if ((rv = sv->h->f->C_GenerateRandom(sv->s, out, len)) == CKR_OK)
		p11mux_msg_put_bytes(reply, out, len);
	p11mux_free_secret(out, len);
	return rv;
}

/* --- session objects --- */

/* The session that holds the session objects, opened when there is none. objlock held. */
static CK_RV
objects_session(struct helper *h)
{
	CK_SLOT_ID slot;
	CK_RV rv;

	if (h->objs != CK_INVALID_HANDLE)
		return CKR_OK;
	p11mux_lock(&h->lock);
	slot = h->slot;
	p11mux_unlock(&h->lock);
	if ((rv = h->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h->objs)) != CKR_OK)
		h->objs = CK_INVALID_HANDLE;
	return rv;
}

/* Checks a new object and puts it in the reply (handle, class, key type, attributes). One
 * that turned out to be a token object (a module that ignored CKA_TOKEN false) is destroyed
 * at once and refused: the pool never leaves an object on a device. objlock held. */
static CK_RV
put_new_object(struct helper *h, CK_OBJECT_HANDLE o, struct p11mux_msg *reply)
{
	CK_BBOOL token = CK_TRUE;
	CK_ATTRIBUTE t = {CKA_TOKEN, &token, sizeof(token)};
	struct device_object d;
	CK_RV rv;

	if ((rv = h->f->C_GetAttributeValue(h->objs, o, &t, 1)) != CKR_OK || token != CK_FALSE) {
		if ((rv = h->f->C_DestroyObject(h->objs, o)) == CKR_OK)
			log_error("a new session object was a token object (or did not say so): "
			          "destroyed");
		else
			log_error("a new session object is a token object (or did not say so), and "
			          "could not be destroyed (%s): remove object %lu from the device",
			          p11mux_rv_name(rv), o);
		return CKR_TOKEN_WRITE_PROTECTED;
	}
	if ((rv = device_read_object(h->f, h->objs, o, &d)) == CKR_OK) {
		p11mux_msg_put_ulong(reply, o);
		p11mux_msg_put_ulong(reply, d.cls);
		p11mux_msg_put_ulong(reply, d.ktype);
		p11mux_msg_put_attrs(reply, d.attrs, d.status, d.n);
	} else {
		h->f->C_DestroyObject(h->objs, o);
	}
	device_object_free(&d);
	return rv;
}

/* CREATE, GENERATE, GENERATE_PAIR: what the call asked for, made in the objects' session. */
static CK_RV
run_make(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	uint32_t call = req->call->code;
	struct helper *h = sv->h;
	struct p11mux_attrs t1 = {0}, t2 = {0};
	CK_MECHANISM *mech = NULL;
	CK_OBJECT_HANDLE o1 = CK_INVALID_HANDLE, o2 = CK_INVALID_HANDLE;
	CK_RV rv;

	if (call != HELPER_CREATE)
		p11mux_msg_get_mech(req, &mech);
	p11mux_msg_get_attrs(req, &t1);
	if (call == HELPER_GENERATE_PAIR)
		p11mux_msg_get_attrs(req, &t2);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	p11mux_lock(&h->objlock);
	if ((rv = objects_session(h)) != CKR_OK)
		goto out;
	if (call == HELPER_CREATE)
		rv = h->f->C_CreateObject(h->objs, t1.attrs, t1.n, &o1);
	else if (call == HELPER_GENERATE)
		rv = h->f->C_GenerateKey(h->objs, mech, t1.attrs, t1.n, &o1);
	else
		rv = h->f->C_GenerateKeyPair(h->objs, mech, t1.attrs, t1.n, t2.attrs, t2.n, &o1,
		                             &o2);
	if (rv != CKR_OK)
		goto out;
	if ((rv = put_new_object(h, o1, reply)) != CKR_OK) {
		if (o2 != CK_INVALID_HANDLE)
			h->f->C_DestroyObject(h->objs, o2);
	} else if (o2 != CK_INVALID_HANDLE && (rv = put_new_object(h, o2, reply)) != CKR_OK) {
		h->f->C_DestroyObject(h->objs, o1);
	}
out:
	p11mux_unlock(&h->objlock);
	return rv;
}

static CK_RV
run_destroy(struct server *sv, struct p11mux_msg *req, struct p11mux_msg *reply)
{
	struct helper *h = sv->h;
	CK_ULONG o = 0;
	CK_RV rv;

	(void)reply;
	p11mux_msg_get_ulong(req, &o);
	if (p11mux_msg_end(req) != 0)
		return malformed(sv);
	p11mux_lock(&h->objlock);
	rv = h->objs != CK_INVALID_HANDLE ? h->f->C_DestroyObject(h->objs, o)
	                                  : CKR_OBJECT_HANDLE_INVALID;
	p11mux_unlock(&h->objlock);
	return rv;
}

/* Indexed by helper call code. */
static CK_RV (*const runs[HELPER_CALL_COUNT])(struct server *, struct p11mux_msg *,
                                              struct p11mux_msg *) = {
        [HELPER_TOKENS] = run_tokens,   [HELPER_INIT] = run_init,
        [HELPER_LOGIN] = run_login,     [HELPER_FIND] = run_find,
        [HELPER_READ] = run_read,       [HELPER_OP] = run_op,
        [HELPER_RANDOM] = run_random,   [HELPER_CREATE] = run_make,
        [HELPER_GENERATE] = run_make,   [HELPER_GENERATE_PAIR] = run_make,
        [HELPER_DESTROY] = run_destroy,
};

/* Answers the request in sv->in into sv->out. 0, or -1 on a request that does not decode or
 * does not belong on this channel (the daemon is not speaking the protocol: the helper
 * stops). */
static int
handle(struct server *sv)
{
	struct p11mux_msg req = {0}, reply = {0};
	uint32_t call;
	int op, r = -1;
	CK_RV rv;

	if (p11mux_msg_read(&req, sv->in, &helper_proto) != 0)
		goto out;
	call = req.call->code;
	op = call == HELPER_OP || call == HELPER_RANDOM || call == HELPER_CREATE ||
	     call == HELPER_GENERATE || call == HELPER_GENERATE_PAIR || call == HELPER_DESTROY;
	/* Operations on their channels; on the control channel, nothing but TOKENS and INIT
	 * before the module is loaded and the token found. */
	if (op != sv->op || (sv->h->f == NULL && call != HELPER_TOKENS && call != HELPER_INIT))
		goto out;
	p11mux_msg_reply(&reply, sv->out, &helper_proto, call, 0, CKR_OK);
	sv->malformed = 0;
	rv = runs[call](sv, &req, &reply);
	if (sv->malformed)
		goto out;
	if (rv != CKR_OK)
		p11mux_msg_reply(&reply, sv->out, &helper_proto, call, 0, rv);
	r = p11mux_msg_end(&reply) == 0 ? 0 : -1;
out:
	if (r != 0)
		log_error("a request from p11muxd could not be answered; stopping");
	p11mux_msg_clear(&req);
	p11mux_msg_clear(&reply);
	return r;
}

/* Room for any request on the control channel: a module's path, a token's name, a PIN. */
#define CTL_REQUEST_ROOM (2 * PATH_MAX)

/* The control channel's requests, the PIN among them, arrive in locked memory that core files
 * leave out: its buffer gets room for any of them once, so it never moves (a reset keeps the
 * allocation), and those pages are locked. */
static void
lock_requests(struct p11mux_buf *in)
{
	uint8_t *p;

	if (p11mux_buf_reserve(in, CTL_REQUEST_ROOM, &p) == 0)
		p11mux_secret_lock(p, CTL_REQUEST_ROOM);
	p11mux_buf_reset(in);
}

/* Serves one channel until the daemon closes it. */
static void *
serve(void *arg)
{
	struct server *sv = arg;
	int r;

	sv->in = p11mux_buf_new(HELPER_FRAME_MAX);
	sv->out = p11mux_buf_new(HELPER_FRAME_MAX);
	if (!sv->op && sv->in != NULL)
		lock_requests(sv->in);
	while (sv->in != NULL && sv->out != NULL) {
		if ((r = p11mux_frame_recv(sv->fd, sv->in, HELPER_FRAME_MAX)) != 0 ||
		    handle(sv) != 0)
			break;
		p11mux_buf_reset(sv->in); /* wipes a PIN or the data of an operation */
		r = p11mux_frame_send(sv->fd, sv->out);
		p11mux_buf_reset(sv->out); /* and the answer (plaintext) */
		if (r != 0)
			break;
	}
	/* The daemon sees the channel end at once, not when its call times out. */
	shutdown(sv->fd, SHUT_RDWR);
	if (sv->s != CK_INVALID_HANDLE)
		sv->h->f->C_CloseSession(sv->s);
	p11mux_buf_free(sv->in);
	p11mux_buf_free(sv->out);
	free(sv);
	return NULL;
}

struct helper *
helper_new(CK_FUNCTION_LIST *f)
{
	struct helper *h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->given = f;
	h->anchor = CK_INVALID_HANDLE;
	h->objs = CK_INVALID_HANDLE;
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_init(&h->objlock, NULL);
	return h;
}

int
helper_answer(struct helper *h, int op, CK_SESSION_HANDLE *s, struct p11mux_buf *in,
              struct p11mux_buf *out)
{
	struct server sv = {.h = h, .fd = -1, .op = op, .in = in, .out = out, .s = *s};
	int r;

	r = handle(&sv);
	*s = sv.s;
	return r;
}

void
helper_free(struct helper *h)
{
	if (h == NULL)
		return;
	if (h->objs != CK_INVALID_HANDLE)
		h->f->C_CloseSession(h->objs);
	if (h->anchor != CK_INVALID_HANDLE)
		h->f->C_CloseSession(h->anchor);
	pthread_mutex_destroy(&h->lock);
	pthread_mutex_destroy(&h->objlock);
	free(h);
}

/* Stops the operation threads (their channels are shut down under them) and waits for them;
 * 0 when every one ended, -1 when one is stuck in a device call (then the process must not
 * finalise the module under it). */
static int
stop_workers(struct helper *h)
{
	struct timespec until;
	unsigned i;
	int r = 0;

	for (i = 0; i < h->nop; i++)
		shutdown(HELPER_OP_FD + (int)i, SHUT_RDWR);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	for (i = 0; i < h->started; i++)
		if (pthread_timedjoin_np(h->threads[i], NULL, &until) != 0)
			r = -1;
	return r;
}

int
helper_main(const char *name, int use_syslog)
{
	const char *channels = getenv("P11MUX_HELPER_CHANNELS");
	const char *parent = getenv("P11MUX_HELPER_PARENT");
	unsigned long nop = channels != NULL ? strtoul(channels, NULL, 10) : 0, i;
	struct helper h;
	struct server *sv;
	char ident[64];

	/* None outlives the daemon and keeps a device. The daemon may be PID 1 (a container):
	 * it says who it is. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (nop > HELPER_MAX_CHANNELS)
		nop = HELPER_MAX_CHANNELS;
	if (parent == NULL || getppid() != (pid_t)strtol(parent, NULL, 10))
		return 1;
	/* The channels are the helper's alone: nothing the module starts inherits them (else the
	 * daemon would not see this process end). */
	for (i = 0; i <= nop; i++)
		fcntl(HELPER_CTL_FD + (int)i, F_SETFD, FD_CLOEXEC);
	/* The daemon ends its helpers by closing their channels (or by SIGKILL); a SIGTERM or
	 * Ctrl-C meant for the daemon's process group must not end them first. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	snprintf(ident, sizeof(ident), "p11muxd[%s]", name);
	p11mux_log_set_name(ident);
	if (use_syslog)
		p11mux_log_syslog(ident);
	/* No core file with the PIN or plaintext in it (a vendor module that crashes is an
	 * event this design expects), whatever core limit the daemon was started with, and no
	 * ptrace by other processes of the user. Before the first request: the PIN comes later. */
	if (p11mux_secret_protect_process() != 0) {
		log_error("cannot turn core dumps off: %s", strerror(errno));
		return 1;
	}
	memset(&h, 0, sizeof(h));
	h.anchor = CK_INVALID_HANDLE;
	h.objs = CK_INVALID_HANDLE;
	h.nop = (unsigned)nop;
	pthread_mutex_init(&h.lock, NULL);
	pthread_mutex_init(&h.objlock, NULL);
	if ((sv = calloc(1, sizeof(*sv))) == NULL)
		return 1;
	sv->h = &h;
	sv->fd = HELPER_CTL_FD;
	sv->s = CK_INVALID_HANDLE;
	serve(sv);
	if (stop_workers(&h) != 0) {
		/* A thread is inside the vendor module: leave everything as it is. */
		_exit(0);
	}
	if (h.objs != CK_INVALID_HANDLE)
		h.f->C_CloseSession(h.objs);
	if (h.anchor != CK_INVALID_HANDLE)
		h.f->C_CloseSession(h.anchor);
	backend_free_all(&h.backends);
	close(HELPER_CTL_FD);
	return 0;
}
