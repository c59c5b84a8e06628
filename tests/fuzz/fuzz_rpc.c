/*
 * fuzz_rpc: the daemon's request handling (daemon/rpc.c), frame after frame on one connection
 * as server.c's client loop drives it, against a daemon without devices (stubd.c). What would
 * reach a member, member_run() (linked with --wrap), answers what the input says, so that
 * dispatch.c's failover, second opinions and quarantine run too. Input format: fuzz_rpc.h
 * (raw frames, and requests built from a few choice bytes by rpc_build.c).
 *
 * Checked after every frame (abort when broken), against a model of the connection kept here
 * from the replies alone:
 *   - a malformed request, a request before the handshake and a HELLO without the magic close
 *     the connection; any other request gets a reply;
 *   - every reply decodes as the shim reads it: p11mux_msg_read_reply() and the call's reply
 *     signature, nothing left over, no field after an error, never P11MUX_RV_RETRY;
 *   - no private object is in a FIND or GET_OBJECT answer, and no private object or private
 *     key reaches a member, unless a LOGIN to its pool succeeded on this connection with no
 *     LOGOUT since; the connection's logged_in and hello agree with the model;
 *   - GET_SLOTS lists every pool;
 *   - session objects: a handle CREATE, GENERATE or GENERATE_PAIR returns is a new session
 *     object of the connection's application (sobj_get), no pool object's, not CKA_TOKEN
 *     true, and not private for a connection that is not logged in; a template with a
 *     CKA_TOKEN that is not false never makes one; a token object is never destroyed; after a
 *     DESTROY or DROP what it named is gone (sobj_get, and GET_OBJECT answers
 *     CKR_OBJECT_HANDLE_INVALID) and the application's other objects on members that are up
 *     are not; a session object's job is pinned to a helper generation; the quota (apps
 *     counts within stubd's limits, and equal to the objects listed) holds after every frame.
 *
 * Environment: P11MUX_FUZZ_REPORT=1 prints at exit what each call's handler answered (with
 * -runs=0 DIR: the corpus run once); P11MUX_FUZZ_WRITE_SEEDS=DIR and
 * P11MUX_FUZZ_WRITE_DICT=FILE write the seed corpus and the dictionary, then exit.
 */
#include "check.h"
#include "fuzz_rpc.h"
#include "log.h"
#include "proto.h"
#include "sigcodec.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __wrap_member_run(struct member *m, struct job *j);

static struct stubd sd;

/* The connection, and what its replies said: whether the handshake is done, and to which
 * pools it is logged in. */
static struct {
	struct client c;
	int hello;
	int logged_in[STUBD_NPOOLS];
} conn;

static struct p11mux_buf *in, *out, *copy, *built, *probe_in, *probe_out;

/* The session objects the replies of this input made: whose (the application the connection
 * was bound to), where, in which shim session, private or not, and whether a DESTROY or DROP
 * ended it. */
#define MADE_MAX 256
static struct {
	CK_OBJECT_HANDLE h;
	const struct app *app;
	size_t pool, member;
	CK_SESSION_HANDLE session;
	int private, gone;
} made_objs[MADE_MAX];
static size_t nmade;
/* Their handles, for the built requests. */
static CK_OBJECT_HANDLE made_handles[MADE_MAX];

/* The stub members' answers (into the input), and the last ticket a LOGIN got. */
static struct {
	const uint8_t *p;
	size_t n, off;
} answers;
static uint8_t ticket[GUARD_TICKET_LEN];
static size_t ticketlen;

/* For the report: by call code, and the replies by CK_RV. */
#define RV_KINDS 24
static struct {
	uint64_t requests, replies, closed, member_calls;
	struct {
		CK_RV rv;
		uint64_t n;
	} rv[RV_KINDS];
	size_t nrv;
	uint64_t rv_other;
} stats[P11MUX_CALL_COUNT];

static void
count_rv(uint32_t call, CK_RV rv)
{
	size_t i;

	stats[call].replies++;
	for (i = 0; i < stats[call].nrv && stats[call].rv[i].rv != rv; i++)
		;
	if (i == stats[call].nrv && i == RV_KINDS) {
		stats[call].rv_other++;
		return;
	}
	stats[call].rv[i].rv = rv;
	stats[call].rv[i].n++;
	if (i == stats[call].nrv)
		stats[call].nrv++;
}

static void
report(void)
{
	uint32_t c;
	size_t i;

	printf("fuzz_rpc: what each call's handler answered\n");
	printf("%-11s %10s %10s %8s %10s  %s\n", "call", "requests", "replies", "closed",
	       "to member", "replies by CK_RV");
	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		printf("%-11s %10llu %10llu %8llu %10llu ", p11mux_calls[c].name,
		       (unsigned long long)stats[c].requests, (unsigned long long)stats[c].replies,
		       (unsigned long long)stats[c].closed,
		       (unsigned long long)stats[c].member_calls);
		for (i = 0; i < stats[c].nrv; i++)
			printf(" %s %llu", p11mux_rv_name(stats[c].rv[i].rv),
			       (unsigned long long)stats[c].rv[i].n);
		if (stats[c].rv_other > 0)
			printf(" (others %llu)", (unsigned long long)stats[c].rv_other);
		printf("\n");
	}
	fflush(stdout);
}

/* Whether the connection may see or use the object: private ones, and private keys for an
 * operation, only after a login to the pool. */
static int
may_see(const struct pool *p, const struct pobject *o)
{
	return !o->private || conn.logged_in[p->index];
}

/* (A pool's private key needs a login whatever it says; a session object's, what its
 * CKA_PRIVATE says: its application made it so, docs/protocol.md.) */
static int
may_use(const struct pool *p, const struct pobject *o)
{
	return may_see(p, o) && (o->cls != CKO_PRIVATE_KEY || (o->handle & P11MUX_SESSION_OBJECT) ||
	                         conn.logged_in[p->index]);
}

static void
connect_as(uid_t uid)
{
	stubd_client_free(&conn.c);
	stubd_client_init(&sd, &conn.c, uid, 4242);
	conn.hello = 0;
	memset(conn.logged_in, 0, sizeof(conn.logged_in));
}

/* --- the stub members --- */

static uint8_t
next_answer(void)
{
	return answers.off < answers.n ? answers.p[answers.off++] : RPC_ANS_OK | 0x30;
}

static size_t
out_len(uint8_t a, const struct job *j)
{
	static const size_t lens[8] = {0, 1, 20, 32, 64, 256, 512, 4096};

	if (j->call == P11MUX_CALL_RANDOM)
		return j->inlen + (a >> 4 == 15);
	return lens[(a >> 4) & 7];
}

/* Whether template t has an attribute of type, and its CK_ULONG value in *v. */
static int
tmpl_ulong(const struct p11mux_attrs *t, CK_ATTRIBUTE_TYPE type, CK_ULONG *v)
{
	size_t k;

	for (k = 0; k < t->n; k++)
		if (t->attrs[k].type == type && t->attrs[k].pValue != NULL &&
		    t->attrs[k].ulValueLen == sizeof(*v)) {
			memcpy(v, t->attrs[k].pValue, sizeof(*v));
			return 1;
		}
	return 0;
}

static int
tmpl_has(const struct p11mux_attrs *t, CK_ATTRIBUTE_TYPE type)
{
	size_t k;

	for (k = 0; k < t->n; k++)
		if (t->attrs[k].type == type)
			return 1;
	return 0;
}

/* What a member makes of a CREATE, GENERATE or GENERATE_PAIR job, as get_make() leaves it:
 * the templates' attributes, and what a device adds (a = the answer, RPC_MADE_*): the class and
 * key type (a generated key's from its mechanism) and CKA_PRIVATE. */
static void
made(struct job *j, uint8_t ans)
{
	size_t i, k, n = j->call == P11MUX_CALL_GENERATE_PAIR ? 2 : 1;
	CK_BBOOL dflt_private = (ans & RPC_MADE_PUBLIC) ? CK_FALSE : CK_TRUE;

	for (i = 0; i < n; i++) {
		const struct p11mux_attrs *t = i == 0 ? j->tmpl : j->tmpl2;
		CK_ATTRIBUTE *a = calloc(t->n + 3, sizeof(*a));
		CK_RV *st = calloc(t->n + 3, sizeof(*st));
		CK_OBJECT_CLASS cls = CKO_DATA;
		CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
		size_t na = t->n;

		CHECK(a != NULL && st != NULL);
		if (j->call == P11MUX_CALL_GENERATE) {
			cls = CKO_SECRET_KEY;
			kt = j->mech.mechanism == CKM_AES_KEY_GEN ? CKK_AES : CKK_GENERIC_SECRET;
		} else if (j->call == P11MUX_CALL_GENERATE_PAIR) {
			cls = i == 0 ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY;
			kt = j->mech.mechanism == CKM_EC_KEY_PAIR_GEN ? CKK_EC : CKK_RSA;
		}
		tmpl_ulong(t, CKA_CLASS, &cls);
		tmpl_ulong(t, CKA_KEY_TYPE, &kt);
		for (k = 0; k < t->n; k++) {
			a[k].type = t->attrs[k].type;
			a[k].ulValueLen = t->attrs[k].ulValueLen;
			st[k] = t->attrs[k].pValue != NULL ? CKR_OK : CKR_ATTRIBUTE_SENSITIVE;
			if (t->attrs[k].pValue == NULL)
				continue;
			CHECK((a[k].pValue = malloc(a[k].ulValueLen + 1)) != NULL);
			memcpy(a[k].pValue, t->attrs[k].pValue, a[k].ulValueLen);
		}
		if (!(ans & RPC_MADE_BARE)) {
			const struct {
				CK_ATTRIBUTE_TYPE type;
				const void *v;
				size_t len;
			} add[3] = {{CKA_CLASS, &cls, sizeof(cls)},
			            {CKA_KEY_TYPE, &kt, sizeof(kt)},
			            {CKA_PRIVATE, &dflt_private, sizeof(dflt_private)}};

			for (k = 0; k < 3; k++) {
				if (tmpl_has(t, add[k].type) ||
				    (add[k].type == CKA_KEY_TYPE && kt == (CK_KEY_TYPE)-1))
					continue;
				a[na].type = add[k].type;
				a[na].ulValueLen = add[k].len;
				CHECK((a[na].pValue = malloc(add[k].len)) != NULL);
				memcpy(a[na].pValue, add[k].v, add[k].len);
				st[na++] = CKR_OK;
			}
		}
		CHECK((j->made[i] = mobject_new(0, 1000 + i, cls, kt, a, st, na)) != NULL);
	}
}

/* What the member's helper would have answered, as finish_locked() books it. */
static void
answer(struct member *m, struct job *j, uint8_t a)
{
	CK_RV rv;
	int i;

	switch (a & 15) {
	case RPC_ANS_RETRY:
	case RPC_ANS_RETRY_COST:
		j->cost_helper = (a & 15) == RPC_ANS_RETRY_COST;
		j->rv = P11MUX_RV_RETRY;
		break;
	case RPC_ANS_GENERAL_ERROR:
	case RPC_ANS_DEVICE_ERROR:
	case RPC_ANS_FUNCTION_FAILED:
	case RPC_ANS_DEVICE_MEMORY: {
		static const CK_RV amb[] = {CKR_GENERAL_ERROR, CKR_DEVICE_ERROR,
		                            CKR_FUNCTION_FAILED, CKR_DEVICE_MEMORY};
		j->rv = amb[(a & 15) - RPC_ANS_GENERAL_ERROR];
		break;
	}
	case RPC_ANS_SIG_INVALID:
		j->rv = CKR_SIGNATURE_INVALID;
		break;
	case RPC_ANS_DATA_LEN_RANGE:
		j->rv = CKR_DATA_LEN_RANGE;
		break;
	case RPC_ANS_ENC_INVALID:
		j->rv = CKR_ENCRYPTED_DATA_INVALID;
		break;
	case RPC_ANS_RAW:
		for (i = 0, rv = 0; i < 4; i++)
			rv = rv << 8 | next_answer();
		j->rv = member_device_failure(rv) ? P11MUX_RV_RETRY : rv;
		break;
	default:
		j->rv = CKR_OK;
	}
	if (j->rv == CKR_OK && (j->call == P11MUX_CALL_CREATE || j->call == P11MUX_CALL_GENERATE ||
	                        j->call == P11MUX_CALL_GENERATE_PAIR)) {
		made(j, a);
	} else if (j->rv == CKR_OK) {
		/* As get_op() leaves it: always a buffer (VERIFY's is empty). */
		j->outlen = j->call == P11MUX_CALL_VERIFY ? 0 : out_len(a, j);
		CHECK((j->out = malloc(j->outlen + 1)) != NULL);
		memset(j->out, 0xa5, j->outlen);
	}
	if (j->rv == P11MUX_RV_RETRY) {
		/* The member is lost: out of service until the next input. */
		p11mux_lock(&m->lock);
		m->state = MEMBER_DOWN;
		p11mux_unlock(&m->lock);
	}
}

void
__wrap_member_run(struct member *m, struct job *j)
{
	struct pool *p = m->pool;

	p11mux_lock(&m->lock);
	if (m->state != MEMBER_UP || (j->pin_gen != 0 && j->pin_gen != m->generation)) {
		j->rv = P11MUX_RV_RETRY;
		p11mux_unlock(&m->lock);
		return;
	}
	j->gen = m->generation;
	p11mux_unlock(&m->lock);
	/* A session object lives on one member's helper: whatever uses or ends it is pinned. */
	CHECK(j->key == NULL || !(j->key->handle & P11MUX_SESSION_OBJECT) || j->pin_gen != 0);
	CHECK(j->call != P11MUX_CALL_DESTROY || (j->key != NULL && j->pin_gen != 0));
	if (j->key != NULL && j->call != P11MUX_CALL_DESTROY) {
		/* The invariant that matters most: a private key is used for a client only
		 * after its login. (A DESTROY uses nothing: DROP of the private objects follows
		 * a logout.) */
		CHECK(may_use(p, j->key));
		if (__atomic_load_n(&j->key->backend[m->index], __ATOMIC_ACQUIRE) ==
		    CK_INVALID_HANDLE) {
			j->rv = P11MUX_RV_RETRY;
			return;
		}
	}
	CHECK(j->call >= P11MUX_CALL_SIGN && j->call < P11MUX_CALL_COUNT);
	stats[j->call].member_calls++;
	answer(m, j, next_answer());
}

/* --- requests and replies --- */

/* An object a reply named: the pool's, or a session object of this connection's application;
 * visible (used: usable) to the connection as its logins say. */
static void
check_object(struct pool *p, CK_OBJECT_HANDLE h, int used)
{
	const struct pobject *o;
	struct sobj *so = NULL;

	if (h & P11MUX_SESSION_OBJECT) {
		CHECK((so = sobj_get(&sd.d.apps, &conn.c, p, h)) != NULL);
		o = &so->po;
	} else {
		CHECK((o = pool_object(p, h)) != NULL);
	}
	CHECK(used ? may_use(p, o) : may_see(p, o));
	if (so != NULL)
		sobj_put(&sd.d.apps, so);
	/* A handle a DESTROY or DROP ended never comes back. */
	for (size_t i = 0; so != NULL && i < nmade; i++)
		CHECK(made_objs[i].h != h || !made_objs[i].gone);
}

/* A CK_BBOOL attribute in a list: 1 or 0, or -1 when absent or not a CK_BBOOL. */
static int
attr_bool(const CK_ATTRIBUTE *a, const CK_RV *st, size_t n, CK_ATTRIBUTE_TYPE type)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (a[i].type == type && (st == NULL || st[i] == CKR_OK) && a[i].pValue != NULL &&
		    a[i].ulValueLen == sizeof(CK_BBOOL))
			return *(CK_BBOOL *)a[i].pValue != CK_FALSE;
	return -1;
}

/* Whether a request's template asks for a CKA_TOKEN that is not false (of any length). */
static int
asks_token(const CK_ATTRIBUTE *a, size_t n)
{
	size_t i, k;

	for (i = 0; i < n; i++)
		for (k = 0; a[i].type == CKA_TOKEN && a[i].pValue != NULL && k < a[i].ulValueLen;
		     k++)
			if (((const uint8_t *)a[i].pValue)[k] != 0)
				return 1;
	return 0;
}

/* The object h of pool p that a DESTROY or DROP ended: gone for the connection's application
 * (sobj_get), and GET_OBJECT says so too. */
static void
check_gone(struct pool *p, CK_OBJECT_HANDLE h)
{
	struct p11mux_msg m = {0};
	CK_RV rv = 0;

	CHECK(sobj_get(&sd.d.apps, &conn.c, p, h) == NULL);
	p11mux_buf_reset(probe_in);
	p11mux_msg_begin_request(&m, probe_in, P11MUX_CALL_GET_OBJECT);
	p11mux_msg_put_ulong(&m, p->slot.id);
	p11mux_msg_put_ulong(&m, h);
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
	CHECK(rpc_handle(&sd.d, &conn.c, probe_in, probe_out) == 0);
	CHECK(p11mux_msg_read_reply(&m, probe_out, P11MUX_CALL_GET_OBJECT, &rv) == 0);
	CHECK(rv == CKR_OBJECT_HANDLE_INVALID);
	p11mux_msg_clear(&m);
}

/* What CREATE, GENERATE or GENERATE_PAIR made (checked: a session object of this connection's
 * application, never a token object's handle, never private for a connection not logged in,
 * never with CKA_TOKEN true), into the model. */
static void
check_made(struct pool *p, const struct sc_fields *req, const struct sc_fields *f)
{
	size_t i, k;

	for (i = 0; i + 1 < f->n; i += 2) {
		CK_OBJECT_HANDLE h = f->f[i].ul;
		struct sobj *so;

		CHECK(h & P11MUX_SESSION_OBJECT);
		CHECK(pool_object(p, h) == NULL);
		check_object(p, h, 0);
		CHECK((so = sobj_get(&sd.d.apps, &conn.c, p, h)) != NULL);
		CHECK(so->pool == p && so->session == req->f[1].ul);
		CHECK(attr_bool(f->f[i + 1].attrs, f->f[i + 1].status, f->f[i + 1].nattrs,
		                CKA_TOKEN) != 1);
		if (!conn.logged_in[p->index]) {
			CHECK(!so->po.private);
			CHECK(attr_bool(f->f[i + 1].attrs, f->f[i + 1].status, f->f[i + 1].nattrs,
			                CKA_PRIVATE) == 0);
		}
		for (k = 0; k < nmade; k++)
			CHECK(made_objs[k].h != h);
		if (nmade < MADE_MAX) {
			made_objs[nmade].h = made_handles[nmade] = h;
			made_objs[nmade].app = conn.c.app;
			made_objs[nmade].pool = p->index;
			made_objs[nmade].member = so->member;
			made_objs[nmade].session = so->session;
			made_objs[nmade].private = so->po.private;
			made_objs[nmade].gone = 0;
			nmade++;
		}
		sobj_put(&sd.d.apps, so);
	}
}

/* After a DROP of session s in pool p (0: all; P11MUX_DROP_PRIVATE: the private ones): what
 * it named is gone, the application's other objects whose member is still up are not. */
static void
check_dropped(struct pool *p, CK_SESSION_HANDLE s)
{
	size_t i;

	for (i = 0; i < nmade; i++) {
		struct member *m = &p->members[made_objs[i].member];
		struct sobj *so;
		int up;

		if (made_objs[i].gone || made_objs[i].app != conn.c.app ||
		    made_objs[i].pool != p->index || conn.c.app == NULL)
			continue;
		if (s == 0 ||
		    (s == P11MUX_DROP_PRIVATE ? made_objs[i].private : made_objs[i].session == s)) {
			made_objs[i].gone = 1;
			check_gone(p, made_objs[i].h);
			continue;
		}
		p11mux_lock(&m->lock);
		up = m->state == MEMBER_UP;
		p11mux_unlock(&m->lock);
		so = sobj_get(&sd.d.apps, &conn.c, p, made_objs[i].h);
		CHECK(so != NULL || !up);
		if (so != NULL)
			sobj_put(&sd.d.apps, so);
	}
}

/* The quota (what stubd_open() set): no application or user holds more, and each
 * application's counts are those of its objects. */
static void
check_quota(void)
{
	struct apps *a = &sd.d.apps;
	const struct app *app, *other;
	const struct sobj *o;

	p11mux_lock(&a->lock);
	for (app = a->list; app != NULL; app = app->next) {
		size_t n = 0, bytes = 0, uid_n = 0, uid_bytes = 0;

		for (o = app->objs; o != NULL; o = o->next) {
			CHECK(!o->dead && (o->po.handle & P11MUX_SESSION_OBJECT));
			n++;
			bytes += o->bytes;
		}
		CHECK(n == app->nobjs && bytes == app->bytes);
		CHECK(app->nobjs <= sd.cfg.limits.session_objects);
		CHECK(app->bytes <= sd.cfg.limits.session_object_bytes);
		for (other = a->list; other != NULL; other = other->next)
			if (other->uid == app->uid) {
				uid_n += other->nobjs;
				uid_bytes += other->bytes;
			}
		CHECK(uid_n <= sd.cfg.limits.session_objects_per_uid);
		CHECK(uid_bytes <= sd.cfg.limits.session_object_bytes_per_uid);
	}
	p11mux_unlock(&a->lock);
}

/* What the reply says, checked against the model, which it then updates. */
static void
check_reply(uint32_t call, const struct sc_fields *req)
{
	struct p11mux_msg m = {0};
	struct pool *p = NULL;
	struct sc_fields f;
	CK_RV rv = 0;
	size_t i;

	CHECK(p11mux_msg_read_reply(&m, out, call, &rv) == 0);
	CHECK(sc_decode(&m, &f) == 0);
	CHECK(p11mux_msg_end(&m) == 0);
	CHECK(rv == CKR_OK || f.n == 0);
	CHECK(rv != P11MUX_RV_RETRY);
	count_rv(call, rv);
	if (call != P11MUX_CALL_HELLO && call != P11MUX_CALL_GET_SLOTS &&
	    call != P11MUX_CALL_CLIENT) {
		p = daemon_pool(&sd.d, req->f[0].ul);
		CHECK(p != NULL || rv == CKR_SLOT_ID_INVALID);
	}
	if (rv == CKR_OK && call == P11MUX_CALL_HELLO)
		conn.hello = 1;
	if (rv == CKR_OK && call == P11MUX_CALL_GET_SLOTS)
		CHECK(f.f[0].nslots == STUBD_NPOOLS);
	if (rv == CKR_OK && call == P11MUX_CALL_LOGIN) {
		conn.logged_in[p->index] = 1;
		CHECK(f.f[0].len == sizeof(ticket));
		memcpy(ticket, f.f[0].bytes, sizeof(ticket));
		ticketlen = sizeof(ticket);
	}
	if (call == P11MUX_CALL_LOGOUT && p != NULL)
		conn.logged_in[p->index] = 0;
	if (rv == CKR_OK && (call == P11MUX_CALL_FIND || call == P11MUX_CALL_FIND_VERSIONED))
		for (i = 0; i < f.f[0].n; i++)
			check_object(p, f.f[0].ulongs[i], 0);
	/* The stub's view never changes: its version stays the first one. */
	if (rv == CKR_OK && call == P11MUX_CALL_FIND_VERSIONED)
		CHECK(f.f[1].ul == view_version(&p->view));
	if (rv == CKR_OK && call == P11MUX_CALL_GET_OBJECT)
		check_object(p, req->f[1].ul, 0);
	if (rv == CKR_OK && call >= P11MUX_CALL_SIGN && call <= P11MUX_CALL_DECRYPT)
		check_object(p, req->f[2].ul, 1);
	if (call == P11MUX_CALL_CREATE || call == P11MUX_CALL_GENERATE ||
	    call == P11MUX_CALL_GENERATE_PAIR) {
		const struct sc_field *t1 = &req->f[call == P11MUX_CALL_CREATE ? 2 : 3];

		/* Token objects are the operator's: never made for a client. */
		if (asks_token(t1->attrs, t1->nattrs) ||
		    (call == P11MUX_CALL_GENERATE_PAIR &&
		     asks_token(req->f[4].attrs, req->f[4].nattrs)))
			CHECK(rv != CKR_OK);
		if (rv == CKR_OK)
			check_made(p, req, &f);
	}
	if (call == P11MUX_CALL_DESTROY && p != NULL) {
		CK_OBJECT_HANDLE h = req->f[1].ul;

		/* A token object is never destroyed; a session object once. */
		CHECK(rv != CKR_OK || (h & P11MUX_SESSION_OBJECT));
		for (i = 0; i < nmade; i++)
			if (made_objs[i].h == h && made_objs[i].gone)
				CHECK(rv == CKR_OBJECT_HANDLE_INVALID);
		if (rv == CKR_OK)
			for (i = 0; i < nmade; i++)
				if (made_objs[i].h == h) {
					CHECK(made_objs[i].app == conn.c.app &&
					      made_objs[i].pool == p->index);
					made_objs[i].gone = 1;
				}
	}
	if (call == P11MUX_CALL_DROP && p != NULL)
		CHECK(rv == CKR_OK);
	CHECK(conn.c.hello == conn.hello);
	for (i = 0; i < STUBD_NPOOLS; i++)
		CHECK(!conn.c.logged_in[i] == !conn.logged_in[i]);
	p11mux_msg_clear(&m);
	/* (After the reply is read: these run requests of their own.) */
	if (call == P11MUX_CALL_DESTROY && rv == CKR_OK)
		check_gone(p, req->f[1].ul);
	if (call == P11MUX_CALL_DROP && p != NULL)
		check_dropped(p, req->f[1].ul);
	check_quota();
}

static void
load(struct p11mux_buf *b, const uint8_t *p, size_t n)
{
	p11mux_buf_reset(b);
	if (n > 0)
		CHECK(p11mux_buf_put(b, p, n) == 0);
}

/* One request frame, as the client loop hands it to rpc_handle(). */
static void
request(const uint8_t *p, size_t n)
{
	struct p11mux_msg m = {0};
	struct sc_fields req;
	uint32_t call = 0;
	int well_formed, closes, r;

	/* The request as the codec reads it, from a copy (rpc_handle reads `in`). */
	load(copy, p, n);
	well_formed = p11mux_msg_read_request(&m, copy) == 0 && sc_decode(&m, &req) == 0 &&
	              p11mux_msg_end(&m) == 0;
	load(in, p, n);
	r = rpc_handle(&sd.d, &conn.c, in, out);
	p11mux_buf_reset(in);
	if (well_formed) {
		call = m.call->code;
		stats[call].requests++;
		closes = (!conn.hello && call != P11MUX_CALL_HELLO) ||
		         (call == P11MUX_CALL_HELLO && req.f[0].ul != P11MUX_PROTO_MAGIC);
		CHECK((r != 0) == closes);
	} else {
		CHECK(r != 0);
	}
	if (r == 0)
		check_reply(call, &req);
	else if (well_formed)
		stats[call].closed++;
	p11mux_msg_clear(&m);
	if (r != 0)
		connect_as(conn.c.uid);
	/* A wrong PIN delays the next check by 0.1 s or more: not in a fuzzing loop. */
	stubd_no_delay(&sd);
}

/* A LOGIN to pool p[0] with PIN p[1..n) and the last ticket (a bit flipped when flip). */
static void
ticket_login(const uint8_t *p, size_t n, int flip)
{
	uint8_t t[sizeof(ticket)];
	struct p11mux_msg m = {0};

	memcpy(t, ticket, sizeof(t));
	if (flip && ticketlen > 0)
		t[(n > 0 ? p[0] >> 2 : 0) % ticketlen] ^= (uint8_t)(1u << (n > 0 ? p[0] & 7 : 0));
	p11mux_msg_begin_request(&m, built, P11MUX_CALL_LOGIN);
	p11mux_msg_put_ulong(&m, sd.pools[n > 0 ? p[0] % STUBD_NPOOLS : 0].slot.id);
	p11mux_msg_put_ulong(&m, CKU_USER);
	p11mux_msg_put_bytes(&m, n > 1 ? p + 1 : NULL, n > 1 ? n - 1 : 0);
	p11mux_msg_put_bytes(&m, t, ticketlen);
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
	request(p11mux_buf_data(built), p11mux_buf_len(built));
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("P11MUX_FUZZ_WRITE_SEEDS");
	const char *dict = getenv("P11MUX_FUZZ_WRITE_DICT");

	(void)argc;
	(void)argv;
	stubd_open(&sd);
	CHECK((in = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) != NULL);
	CHECK((out = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) != NULL);
	CHECK((copy = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) != NULL);
	CHECK((built = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) != NULL);
	CHECK((probe_in = p11mux_buf_new(256)) != NULL);
	CHECK((probe_out = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) != NULL);
	if (seeds != NULL || dict != NULL)
		exit((seeds != NULL && rpc_write_seeds(&sd, seeds) != 0) ||
		                     (dict != NULL && rpc_write_dict(&sd, dict) != 0)
		             ? 1
		             : 0);
	if (getenv("P11MUX_FUZZ_REPORT") != NULL)
		atexit(report);
	return 0;
}

/* A request built from choice bytes. */
static void
built_request(const uint8_t *p, size_t n)
{
	struct rpc_build x = {&sd, ticket, ticketlen, made_handles, nmade};

	if (rpc_build(&x, built, p, n) == 0)
		request(p11mux_buf_data(built), p11mux_buf_len(built));
}

/* One record: a tag byte and its bytes. */
static void
record(const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	switch ((p[0] & ~RPC_REC_FLIP) % RPC_REC_KINDS) {
	case RPC_REC_FRAME:
		request(p + 1, n - 1);
		break;
	case RPC_REC_ANSWERS:
		answers.p = p + 1;
		answers.n = n - 1;
		answers.off = 0;
		break;
	case RPC_REC_CONNECT:
		connect_as(n >= 5 ? (uid_t)p[1] << 24 | (uid_t)p[2] << 16 | (uid_t)p[3] << 8 | p[4]
		                  : RPC_UID);
		break;
	case RPC_REC_TICKET:
		ticket_login(p + 1, n - 1, (p[0] & RPC_REC_FLIP) != 0);
		break;
	default:
		built_request(p + 1, n - 1);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *end;
	size_t off = 0, n;

	stubd_reset(&sd);
	connect_as(RPC_UID);
	answers.n = answers.off = 0;
	ticketlen = 0;
	nmade = 0;
	while (off <= size) {
		end = memmem(data + off, size - off, RPC_DELIM, RPC_DELIM_LEN);
		n = end != NULL ? (size_t)(end - (data + off)) : size - off;
		record(data + off, n);
		off += n + RPC_DELIM_LEN;
	}
	stubd_client_free(&conn.c);
	return 0;
}
