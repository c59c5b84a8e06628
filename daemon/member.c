/* Members in the daemon: a queue, a thread that drives the member's helper, failure, and
 * probing back into service with a fresh helper. */
#include "member.h"
#include "config.h"
#include "hproto.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "thread.h"
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const double lat_bounds_ms[LAT_NBUCKETS - 1] = {0.5, 1,   2.5,  5,    10,   25,    50,   100,
                                                250, 500, 1000, 2500, 5000, 10000, 30000};

/* A member that goes down again within this time of joining was not well: the next probe
 * waits twice as long as the last (up to probe_max_ms) instead of starting over. */
#define STABLE_NS (30ull * 1000000000u)

/* --- state, names, latency --- */

const char *
member_state_name(enum member_state s)
{
	switch (s) {
	case MEMBER_UP:
		return "up";
	case MEMBER_DRAINING:
		return "draining";
	case MEMBER_DOWN:
		return "down";
	case MEMBER_PROBING:
		return "probing";
	case MEMBER_EXCLUDED:
		return "excluded";
	}
	return "?";
}

int
member_device_failure(CK_RV rv)
{
	switch (rv) {
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_SESSION_COUNT:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return 1;
	default:
		return 0;
	}
}

int
member_ambiguous(CK_RV rv)
{
	return rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED || rv == CKR_DEVICE_ERROR ||
	       rv == CKR_DEVICE_MEMORY;
}

/* Counts a finished operation in the latency histograms. Lock held. */
static void
record_latency_locked(struct member *m, uint64_t lat_ns)
{
	uint64_t sec = p11mux_now_ns() / 1000000000u;
	double ms = (double)lat_ns / 1e6;
	unsigned b = 0;

	while (b < LAT_NBUCKETS - 1 && ms > lat_bounds_ms[b])
		b++;
	lat_record(&m->window, sec, ms);
	m->lat_total[b]++;
	m->lat_sum_s += ms / 1000;
}

/* Counts a finished operation's service time, by key: RSA-2048 and EC P-256 differ
 * threefold on a Nitrokey HSM, so one average would mislead. The array grows with the
 * view (a rescan adds keys); out of memory, the key keeps no figure of its own. Lock held. */
static void
record_service_locked(struct member *m, const struct pobject *key, double ms)
{
	size_t k = key != NULL ? key->index : POBJECT_NO_INDEX, n;
	double *grown;

	if (k == POBJECT_NO_INDEX) {
		m->svc_nokey = sched_ewma(m->svc_nokey, ms);
		return;
	}
	if (k >= m->nsvc) {
		n = k + 16;
		if ((grown = realloc(m->svc, n * sizeof(*grown))) == NULL)
			return;
		memset(grown + m->nsvc, 0, (n - m->nsvc) * sizeof(*grown));
		m->svc = grown;
		m->nsvc = n;
	}
	m->svc[k] = sched_ewma(m->svc[k], ms);
}

double
member_service_locked(const struct member *m, const struct pobject *key)
{
	if (key == NULL || key->index == POBJECT_NO_INDEX)
		return m->svc_nokey;
	return key->index < m->nsvc ? m->svc[key->index] : 0;
}

double
member_latency_locked(const struct member *m, double q, unsigned seconds, uint64_t *count)
{
	return lat_quantile(&m->window, p11mux_now_ns() / 1000000000u, q, seconds, count);
}

int
member_is(struct member *m, const char *name)
{
	char label[33], serial[17];

	member_names(m, label, serial);
	return strcmp(label, name) == 0 || (serial[0] != '\0' && strcmp(serial, name) == 0);
}

void
member_names(struct member *m, char *label, char *serial)
{
	p11mux_lock(&m->lock);
	memcpy(label, m->label, sizeof(m->label));
	memcpy(serial, m->serial, sizeof(m->serial));
	p11mux_unlock(&m->lock);
}

/* --- jobs --- */

struct job *
job_new(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key, const uint8_t *in,
        size_t inlen, const uint8_t *sig, size_t siglen)
{
	struct job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	j->call = call;
	j->key = key;
	if (mech != NULL) {
		/* Carried to the helper as the codec encodes it: the parameter's bytes (with
		 * OAEP's label pointer) stay valid as long as the job. */
		j->mech = *mech;
		j->mech.pParameter = NULL;
		if (mech->pParameter != NULL && mech->ulParameterLen > 0) {
			if ((j->param = malloc(mech->ulParameterLen)) == NULL)
				goto fail;
			memcpy(j->param, mech->pParameter, mech->ulParameterLen);
			j->mech.pParameter = j->param;
		}
	}
	if (inlen > 0 && in != NULL) {
		if ((j->in = malloc(inlen)) == NULL)
			goto fail;
		memcpy(j->in, in, inlen);
	}
	j->inlen = inlen;
	if (siglen > 0) {
		if ((j->sig = malloc(siglen)) == NULL)
			goto fail;
		memcpy(j->sig, sig, siglen);
	}
	j->siglen = siglen;
	return j;
fail:
	free(j->param);
	free(j->in);
	free(j);
	return NULL;
}

void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	free(j->param);
	p11mux_free_secret(j->in, j->inlen);
	free(j->sig);
	p11mux_free_secret(j->out, j->outlen);
	mobject_free(j->made[0]);
	mobject_free(j->made[1]);
	free(j);
}

/* --- the helper at start-up and in a probe --- */

struct init_call {
	struct member *m;
	const char *module, *ident;
	CK_SLOT_ID hint;
};

static void
put_init(struct p11mux_msg *msg, void *arg)
{
	const struct init_call *ic = arg;

	p11mux_msg_put_bytes(msg, ic->module, strlen(ic->module));
	p11mux_msg_put_bytes(msg, ic->ident, strlen(ic->ident));
	p11mux_msg_put_ulong(msg, ic->hint);
	p11mux_msg_put_ulong(msg, ic->m->nworkers);
}

CK_RV
member_got_token(struct member *m, struct p11mux_msg *msg)
{
	CK_MECHANISM_TYPE *mechs;
	CK_MECHANISM_INFO *infos;
	struct p11mux_slot *s;
	size_t n;

	if (p11mux_msg_get_slots(msg, &s, &n) != 0 || p11mux_msg_end(msg) != 0 || n != 1)
		return LINK_RV_GONE;
	mechs = calloc(s->nmechs + 1, sizeof(*mechs));
	infos = calloc(s->nmechs + 1, sizeof(*infos));
	if (mechs == NULL || infos == NULL) {
		free(mechs);
		free(infos);
		return CKR_HOST_MEMORY;
	}
	memcpy(mechs, s->mechs, s->nmechs * sizeof(*mechs));
	memcpy(infos, s->infos, s->nmechs * sizeof(*infos));
	p11mux_lock(&m->lock);
	m->slot = s->id;
	m->token = s->token;
	p11mux_field(m->label, s->token.label, sizeof(s->token.label));
	p11mux_field(m->serial, s->token.serialNumber, sizeof(s->token.serialNumber));
	free(m->mechs);
	free(m->infos);
	m->mechs = mechs;
	m->infos = infos;
	m->nmechs = s->nmechs;
	p11mux_unlock(&m->lock);
	return CKR_OK;
}

/* The token the helper found. */
static CK_RV
got_init(struct p11mux_msg *msg, void *arg)
{
	return member_got_token(((struct init_call *)arg)->m, msg);
}

CK_RV
member_open(struct member *m, struct p11mux_err *e)
{
	const struct pool_config *pc = pool_cfg(m->pool);
	struct init_call ic = {m, m->cfg->module, NULL, 0};
	struct link_spec spec;
	char name[64], ident[64];
	CK_RV rv;

	p11mux_lock(&m->lock);
	/* Known by serial once seen: identical USB sticks' readers differ by plug order only. */
	snprintf(ident, sizeof(ident), "%s", m->serial[0] != '\0' ? m->serial : m->label);
	if (m->serial[0] != '\0' && strcmp(m->serial, m->label) != 0)
		snprintf(name, sizeof(name), "%s (%s)", m->label, m->serial);
	else
		snprintf(name, sizeof(name), "%s", m->label);
	ic.hint = m->slot;
	p11mux_unlock(&m->lock);
	ic.ident = ident;
	spec.exe = m->pool->exe;
	spec.name = name;
	spec.env = m->cfg->env;
	spec.use_syslog = m->pool->use_syslog;
	spec.channels = m->nworkers;
	spec.send_timeout_ms = pc->op_timeout_ms;
	if (link_spawn(&m->link, &spec, e) != 0)
		return CKR_GENERAL_ERROR;
	p11mux_lock(&m->lock);
	m->helpers++;
	m->helper_pid = m->link.pid;
	p11mux_unlock(&m->lock);
	rv = chan_call(&m->link.ctl, HELPER_INIT, put_init, got_init, &ic, pc->op_timeout_ms, e,
	               NULL);
	if (rv != CKR_OK)
		member_close(m);
	return rv;
}

static void
put_pin(struct p11mux_msg *msg, void *arg)
{
	const struct pool *p = arg;

	p11mux_msg_put_bytes(msg, p->pin, p->pinlen);
}

CK_RV
member_login(struct member *m, struct p11mux_err *e)
{
	return chan_call(&m->link.ctl, HELPER_LOGIN, put_pin, NULL, m->pool,
	                 pool_cfg(m->pool)->op_timeout_ms, e, NULL);
}

/* FIND's answer: the handles, copied. */
struct handles {
	CK_ULONG *v;
	size_t n;
};

static CK_RV
got_handles(struct p11mux_msg *msg, void *arg)
{
	struct handles *hs = arg;
	CK_ULONG *v;
	size_t n;

	if (p11mux_msg_get_ulongs(msg, &v, &n) != 0 || p11mux_msg_end(msg) != 0)
		return LINK_RV_GONE;
	if ((hs->v = calloc(n + 1, sizeof(*v))) == NULL)
		return CKR_HOST_MEMORY;
	memcpy(hs->v, v, n * sizeof(*v));
	hs->n = n;
	return CKR_OK;
}

/* READ: one object, made into a member object (values copied out of the message). */
struct read_call {
	size_t member;
	CK_ULONG handle;
	struct mobject *o;
};

static void
put_handle(struct p11mux_msg *msg, void *arg)
{
	p11mux_msg_put_ulong(msg, ((struct read_call *)arg)->handle);
}

/* Reads an object's class, key type and attributes from a helper's reply into a member
 * object of member/handle (values copied out of the message). */
static CK_RV
take_object(struct p11mux_msg *msg, size_t member, CK_ULONG handle, struct mobject **out)
{
	struct p11mux_attrs a = {0};
	CK_ATTRIBUTE *attrs;
	CK_ULONG cls = 0, ktype = 0;
	CK_RV *status;
	size_t i;

	p11mux_msg_get_ulong(msg, &cls);
	p11mux_msg_get_ulong(msg, &ktype);
	if (p11mux_msg_get_attrs(msg, &a) != 0)
		return LINK_RV_GONE;
	attrs = calloc(a.n + 1, sizeof(*attrs));
	status = calloc(a.n + 1, sizeof(*status));
	for (i = 0; attrs != NULL && status != NULL && i < a.n; i++) {
		attrs[i].type = a.attrs[i].type;
		attrs[i].ulValueLen = a.attrs[i].ulValueLen;
		status[i] = a.status[i];
		if (a.attrs[i].pValue == NULL)
			continue;
		if ((attrs[i].pValue = malloc(a.attrs[i].ulValueLen + 1)) == NULL)
			break;
		memcpy(attrs[i].pValue, a.attrs[i].pValue, a.attrs[i].ulValueLen);
	}
	if (attrs == NULL || status == NULL || i < a.n) {
		while (attrs != NULL && i-- > 0)
			free(attrs[i].pValue);
		free(attrs);
		free(status);
		return CKR_HOST_MEMORY;
	}
	*out = mobject_new(member, handle, cls, ktype, attrs, status, a.n);
	return *out != NULL ? CKR_OK : CKR_HOST_MEMORY;
}

static CK_RV
got_object(struct p11mux_msg *msg, void *arg)
{
	struct read_call *rc = arg;
	CK_RV rv = take_object(msg, rc->member, rc->handle, &rc->o);

	if (rv == CKR_OK && p11mux_msg_end(msg) != 0) {
		mobject_free(rc->o);
		rc->o = NULL;
		return LINK_RV_GONE;
	}
	return rv;
}

int
member_read_objects(struct member *m, struct mobject ***all, size_t *nall, struct p11mux_err *e)
{
	unsigned timeout = pool_cfg(m->pool)->op_timeout_ms;
	struct handles hs = {NULL, 0};
	struct read_call rc = {m->index, 0, NULL};
	struct mobject **grown;
	size_t i;
	CK_RV rv;
	int r = -1;

	if ((rv = chan_call(&m->link.ctl, HELPER_FIND, NULL, got_handles, &hs, timeout, e, NULL)) !=
	    CKR_OK)
		goto out;
	for (i = 0; i < hs.n; i++) {
		rc.handle = hs.v[i];
		rc.o = NULL;
		if (link_lost(rv = chan_call(&m->link.ctl, HELPER_READ, put_handle, got_object, &rc,
		                             timeout, e, NULL)))
			goto out;
		if (rv != CKR_OK) {
			log_warn("member %s: cannot read object %lu: %s; left out", m->label,
			         hs.v[i], e->msg);
			/* Known by its handle only: a remap keeps what the member held there. */
			if ((rc.o = mobject_new(m->index, hs.v[i], CKO_DATA, (CK_KEY_TYPE)-1, NULL,
			                        NULL, 0)) == NULL) {
				p11mux_err_set(e, "out of memory");
				goto out;
			}
			rc.o->unread = 1;
		}
		if ((grown = realloc(*all, (*nall + 1) * sizeof(*grown))) == NULL) {
			mobject_free(rc.o);
			p11mux_err_set(e, "out of memory");
			goto out;
		}
		*all = grown;
		(*all)[(*nall)++] = rc.o;
	}
	r = 0;
out:
	free(hs.v);
	return r;
}

void
member_close(struct member *m)
{
	/* helper_pid is cleared before the helper is reaped: another thread may signal it only
	 * while it cannot be another process's pid. */
	p11mux_lock(&m->lock);
	m->helper_pid = 0;
	p11mux_unlock(&m->lock);
	link_close(&m->link, 2000);
}

static int usable_locked(const struct member *m);
static void wake(struct member *m);
static void lose_locked(struct member *m, uint64_t gen, enum member_state state, const char *why);

/* Reads the member's objects through its helper's control channel and remaps the pool's
 * view onto them. 0 with *chg (may be NULL), or -1 with e. The member thread's (or a probe's). */
static int
remap(struct member *m, struct view_change *chg, struct p11mux_err *e)
{
	struct mobject **all = NULL;
	struct view_change ignored;
	size_t nall = 0, i;
	int r = -1;

	if (member_read_objects(m, &all, &nall, e) != 0)
		goto out;
	if (mobjects_fingerprint(all, nall) != 0 ||
	    view_remap(&m->pool->view, m->index, m->label, all, nall,
	               chg != NULL ? chg : &ignored) != 0) {
		p11mux_err_set(e, "out of memory");
		goto out;
	}
	r = 0;
out:
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
	return r;
}

/* Runs the rescan asked for (member_rescan). Lock held; dropped while the helper reads. */
static void
rescan_locked(struct member *m)
{
	uint64_t asked = m->rescan_asked, gen = m->generation;
	struct p11mux_err e = {""};
	struct view_change chg;
	int r;

	p11mux_unlock(&m->lock);
	memset(&chg, 0, sizeof(chg));
	r = remap(m, &chg, &e);
	p11mux_lock(&m->lock);
	m->rescan_chg = chg;
	m->rescan_failed = r != 0;
	m->rescan_done = asked;
	pthread_cond_broadcast(&m->rescanned);
	if (r != 0) {
		log_warn("pool \"%s\": member %s: rescan failed: %s", m->pool->label, m->label,
		         e.msg);
		/* The control channel's state is unknown after a failed call: a fresh helper. */
		lose_locked(m, gen, MEMBER_DOWN, "rescan failed");
	}
}

uint64_t
member_rescan_ask(struct member *m)
{
	uint64_t ticket = 0;

	p11mux_lock(&m->lock);
	if (usable_locked(m) && m->link.pid > 0) {
		ticket = ++m->rescan_asked;
		wake(m);
	} else if (m->state == MEMBER_DOWN && !m->stop) {
		/* Plugged in again, or resumed: no need to wait for the back-off. */
		m->probe_now = 1;
		pthread_cond_signal(&m->work);
	}
	p11mux_unlock(&m->lock);
	return ticket;
}

int
member_rescan_wait(struct member *m, uint64_t ticket, uint64_t deadline_ns, struct view_change *chg,
                   char *why, size_t whylen)
{
	int r = 1;

	p11mux_lock(&m->lock);
	while (m->rescan_done < ticket && usable_locked(m) &&
	       p11mux_cond_wait_until(&m->rescanned, &m->lock, deadline_ns) == 0)
		;
	if (m->rescan_done >= ticket && !m->rescan_failed) {
		*chg = m->rescan_chg;
		r = 0;
	} else if (m->rescan_done >= ticket || usable_locked(m)) {
		snprintf(why, whylen, "%s",
		         m->rescan_done >= ticket ? "reading its objects failed; it is probed again"
		                                  : "no answer in time");
		r = -1;
	}
	p11mux_unlock(&m->lock);
	return r;
}

/* A fresh helper finds the device, logs in and maps the pool's objects onto it. CKR_OK, or
 * why not (with e); a refused or locked PIN makes the member excluded. */
static CK_RV
probe(struct member *m, struct p11mux_err *e)
{
	CK_RV rv;

	if ((rv = member_open(m, e)) != CKR_OK)
		return rv;
	if (m->token.flags & CKF_USER_PIN_LOCKED) {
		p11mux_err_set(e, "user PIN locked");
		rv = CKR_PIN_LOCKED;
	} else if ((rv = member_login(m, e)) == CKR_OK && remap(m, NULL, e) != 0) {
		rv = CKR_DEVICE_ERROR;
	}
	if (rv != CKR_OK)
		member_close(m);
	return rv;
}

/* Waits for the next probe (or stop) and runs it. Lock held; dropped during the probe. */
static void
probe_locked(struct member *m)
{
	uint64_t deadline = p11mux_now_ns() + (uint64_t)m->probe_delay_ms * 1000000u;
	struct p11mux_err e = {""};
	CK_RV rv;

	while (!m->stop && !m->probe_now &&
	       p11mux_cond_wait_until(&m->work, &m->lock, deadline) == 0)
		;
	m->probe_now = 0;
	if (m->stop)
		return;
	m->state = MEMBER_PROBING;
	m->since_ns = p11mux_now_ns();
	p11mux_unlock(&m->lock);
	rv = probe(m, &e);
	p11mux_lock(&m->lock);
	/* Stopped or retired meanwhile (its helper was killed): the state is not the probe's to
	 * set any more. */
	if (m->stop || m->retired) {
		if (rv == CKR_OK) {
			p11mux_unlock(&m->lock);
			member_close(m);
			p11mux_lock(&m->lock);
		}
		return;
	}
	m->since_ns = p11mux_now_ns();
	if (rv == CKR_OK) {
		m->state = MEMBER_UP;
		m->generation++;
		m->up_ns = m->since_ns;
		m->reason[0] = '\0';
		m->helper_pid = m->link.pid;
		m->serving = m->next_ticket;
		m->rescan_done = m->rescan_asked; /* the probe read the objects */
		pthread_cond_broadcast(&m->rescanned);
		log_info("pool \"%s\": member %s (serial %s) back in service", m->pool->label,
		         m->label, m->serial);
		return;
	}
	snprintf(m->reason, sizeof(m->reason), "probe: %s", e.msg);
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_LEN_RANGE) {
		/* Never try a PIN twice on a device that refused it. */
		m->state = MEMBER_EXCLUDED;
		log_error("pool \"%s\": member %s excluded: %s", m->pool->label, m->label, e.msg);
		return;
	}
	m->state = MEMBER_DOWN;
	m->probe_delay_ms = m->probe_delay_ms * 2 > pool_cfg(m->pool)->probe_max_ms
	                            ? pool_cfg(m->pool)->probe_max_ms
	                            : m->probe_delay_ms * 2;
	log_debug("pool \"%s\": member %s still down (%s); next probe in %u ms", m->pool->label,
	          m->label, e.msg, m->probe_delay_ms);
}

/* --- running operations --- */

/* Whether request threads may use the member's channels. Lock held. */
static int
usable_locked(const struct member *m)
{
	return (m->state == MEMBER_UP || m->state == MEMBER_DRAINING) && !m->lost && !m->stop;
}

static void
wake(struct member *m)
{
	char c = 1;

	if (write(m->wake[1], &c, 1) < 0) {
		/* The pipe is full: the member thread is awake already. */
	}
}

/* Takes the member out because its helper of generation gen is lost (it hung, died, or the
 * device failed): the helper is killed at once, so that the calls on its other channels
 * end, request threads waiting for a channel go elsewhere, and the member thread reaps it.
 * why is the reason, or NULL when the reason is how the helper ended. Lock held. */
static void
lose_locked(struct member *m, uint64_t gen, enum member_state state, const char *why)
{
	uint64_t now = p11mux_now_ns();
	const struct pool_config *cfg = pool_cfg(m->pool);

	if (gen != m->generation || m->lost || !usable_locked(m))
		return;
	m->lost = 1;
	if (why != NULL)
		m->killed_gen = gen; /* killed by the daemon, not ended by itself */
	m->lost_status = why == NULL;
	snprintf(m->reason, sizeof(m->reason), "%s", why != NULL ? why : "helper gone");
	snprintf(m->last_error, sizeof(m->last_error), "%.*s", (int)sizeof(m->last_error) - 1,
	         m->reason);
	m->last_error_ns = now;
	m->state = state;
	m->since_ns = now;
	/* A member that fails again soon after joining backs off further. */
	if (m->up_ns == 0 || now - m->up_ns >= STABLE_NS)
		m->probe_delay_ms = cfg->probe_interval_ms;
	else
		m->probe_delay_ms = m->probe_delay_ms * 2 > cfg->probe_max_ms
		                            ? cfg->probe_max_ms
		                            : m->probe_delay_ms * 2;
	link_kill(&m->link);
	pthread_cond_broadcast(&m->free);
	pthread_cond_signal(&m->work);
	wake(m);
}

static void
put_op(struct p11mux_msg *msg, void *arg)
{
	const struct job *j = arg;

	if (j->call == P11MUX_CALL_RANDOM) {
		p11mux_msg_put_ulong(msg, j->inlen);
		return;
	}
	p11mux_msg_put_ulong(msg, j->call);
	p11mux_msg_put_mech(msg, &j->mech);
	p11mux_msg_put_ulong(msg, j->started_key);
	p11mux_msg_put_bytes(msg, j->in, j->inlen);
	p11mux_msg_put_bytes(msg, j->sig, j->siglen);
}

static CK_RV
get_op(struct p11mux_msg *msg, void *arg)
{
	struct job *j = arg;
	const uint8_t *out;
	size_t len;

	if (p11mux_msg_get_bytes(msg, &out, &len) != 0 || p11mux_msg_end(msg) != 0)
		return LINK_RV_GONE;
	if ((j->out = malloc(len ? len : 1)) == NULL)
		return CKR_HOST_MEMORY;
	memcpy(j->out, out, len);
	j->outlen = len;
	return CKR_OK;
}

/* CREATE, GENERATE, GENERATE_PAIR: the mechanism and the templates. */
static void
put_make(struct p11mux_msg *msg, void *arg)
{
	const struct job *j = arg;

	if (j->call != P11MUX_CALL_CREATE)
		p11mux_msg_put_mech(msg, &j->mech);
	p11mux_msg_put_attrs(msg, j->tmpl->attrs, NULL, j->tmpl->n);
	if (j->call == P11MUX_CALL_GENERATE_PAIR)
		p11mux_msg_put_attrs(msg, j->tmpl2->attrs, NULL, j->tmpl2->n);
}

/* What the member made: one object, or two for a key pair. */
static CK_RV
get_make(struct p11mux_msg *msg, void *arg)
{
	struct job *j = arg;
	size_t i, n = j->call == P11MUX_CALL_GENERATE_PAIR ? 2 : 1;
	CK_ULONG h;
	CK_RV rv;

	for (i = 0; i < n; i++) {
		h = CK_INVALID_HANDLE;
		if (p11mux_msg_get_ulong(msg, &h) != 0)
			return LINK_RV_GONE;
		if ((rv = take_object(msg, 0, h, &j->made[i])) != CKR_OK)
			return rv;
	}
	return p11mux_msg_end(msg) == 0 ? CKR_OK : LINK_RV_GONE;
}

static void
put_destroy(struct p11mux_msg *msg, void *arg)
{
	p11mux_msg_put_ulong(msg, ((const struct job *)arg)->started_key);
}

static CK_RV
get_none(struct p11mux_msg *msg, void *arg)
{
	(void)arg;
	return p11mux_msg_end(msg) == 0 ? CKR_OK : LINK_RV_GONE;
}

/* The helper call, and its encoder and decoder, for a job's call. */
static uint32_t
job_helper_call(const struct job *j, link_put_fn *put, link_get_fn *get)
{
	*put = put_op;
	*get = get_op;
	switch (j->call) {
	case P11MUX_CALL_RANDOM:
		return HELPER_RANDOM;
	case P11MUX_CALL_CREATE:
	case P11MUX_CALL_GENERATE:
	case P11MUX_CALL_GENERATE_PAIR:
		*put = put_make;
		*get = get_make;
		return j->call == P11MUX_CALL_CREATE     ? HELPER_CREATE
		       : j->call == P11MUX_CALL_GENERATE ? HELPER_GENERATE
		                                         : HELPER_GENERATE_PAIR;
	case P11MUX_CALL_DESTROY:
		*put = put_destroy;
		*get = get_none;
		return HELPER_DESTROY;
	default:
		return HELPER_OP;
	}
}

/* Waits for a free channel, in arrival order; its index, or -1 when the member went out of
 * service meanwhile (even if it is back by the time this thread runs again: its ticket is
 * then of the old helper's). An operation that runs alone waits until no other runs, and no
 * other starts until it ends. Lock held. */
static int
take_channel_locked(struct member *m, int alone)
{
	uint64_t ticket = m->next_ticket++, gen = m->generation;
	unsigned c;

	m->queued++;
	while (usable_locked(m) && m->generation == gen &&
	       (m->serving != ticket || m->exclusive || m->running >= (alone ? 1 : m->link.nop)))
		pthread_cond_wait(&m->free, &m->lock);
	m->queued--;
	if (!usable_locked(m) || m->generation != gen)
		return -1;
	m->serving++;
	for (c = 0; m->busy[c]; c++)
		;
	m->busy[c] = 1;
	m->running++;
	m->exclusive = alone;
	/* The next in line may take another free channel. */
	pthread_cond_broadcast(&m->free);
	return (int)c;
}

/* Books the outcome of an operation on channel c of helper generation gen. Lock held. */
static void
finish_locked(struct member *m, struct job *j, unsigned c, uint64_t gen, CK_RV rv, int sent)
{
	char why[96];

	uint64_t now = p11mux_now_ns();
	double ms = (double)(now - j->started_ns) / 1e6;

	snprintf(why, sizeof(why), "no answer within %u ms (helper killed)",
	         pool_cfg(m->pool)->op_timeout_ms);
	m->busy[c] = 0;
	m->running--;
	if (j->alone)
		m->exclusive = 0;
	pthread_cond_broadcast(&m->free);
	pthread_cond_signal(&m->work);
	j->rv = rv;
	if (rv == CKR_OK && j->call > P11MUX_CALL_RANDOM) {
		m->done++; /* object calls: no service time, they are not what is scheduled */
	} else if (rv == CKR_OK) {
		m->done++;
		m->lone_failures = 0;
		m->service_ms = sched_ewma(m->service_ms, ms);
		record_service_locked(m, j->key, ms);
		record_latency_locked(m, now - j->submitted_ns);
	} else if (link_lost(rv)) {
		/* Hung, dead, or not answering sense: a helper that had the request cost, unless
		 * the daemon killed it for another operation's sake (a time-out, a device
		 * error). A helper that died by itself charges every operation it had; those
		 * run alone on their next member, so that a second death is the input's own. */
		j->cost_helper = sent && (rv == LINK_RV_TIMEOUT || m->killed_gen != gen);
		j->rv = P11MUX_RV_RETRY;
		lose_locked(m, gen, MEMBER_DOWN, rv == LINK_RV_TIMEOUT ? why : NULL);
	} else if (member_device_failure(rv) &&
	           !(rv == CKR_USER_NOT_LOGGED_IN &&
	             (j->pin_gen != 0 || j->call > P11MUX_CALL_RANDOM))) {
		/* (A session object's own policy, not the member's login, can say
		 * CKR_USER_NOT_LOGGED_IN: that answer goes to its client.) */
		char reason[96];

		m->errors++;
		snprintf(reason, sizeof(reason), "%s (helper ended)", p11mux_rv_name(rv));
		j->rv = P11MUX_RV_RETRY;
		lose_locked(m, gen, rv == CKR_PIN_LOCKED ? MEMBER_EXCLUDED : MEMBER_DOWN, reason);
	}
}

void
member_run(struct member *m, struct job *j)
{
	const struct pool_config *cfg = pool_cfg(m->pool);
	struct p11mux_err e = {""};
	uint64_t gen;
	int c, sent = 0;
	CK_RV rv;

	link_put_fn put;
	link_get_fn get;
	uint32_t hcall = job_helper_call(j, &put, &get);

	p11mux_lock(&m->lock);
	j->submitted_ns = p11mux_now_ns();
	/* A session object's job runs on its own helper or nowhere (take_channel_locked()
	 * fails when the helper changes while this waits). */
	if ((j->pin_gen != 0 ? !usable_locked(m) || m->generation != j->pin_gen
	                     : m->state != MEMBER_UP) ||
	    (c = take_channel_locked(m, j->alone)) < 0) {
		/* Out of service, or went out while this waited: another member does it. */
		j->rv = P11MUX_RV_RETRY;
		p11mux_unlock(&m->lock);
		return;
	}
	gen = j->gen = m->generation;
	/* The key's handle on this member now: a probe may have changed it. */
	j->started_key = j->key != NULL
	                         ? __atomic_load_n(&j->key->backend[m->index], __ATOMIC_ACQUIRE)
	                         : CK_INVALID_HANDLE;
	p11mux_unlock(&m->lock);
	j->started_ns = p11mux_now_ns();
	if (j->key != NULL && j->started_key == CK_INVALID_HANDLE)
		rv = P11MUX_RV_RETRY; /* it lacks the key now */
	else
		rv = chan_call(&m->link.op[c], hcall, put, get, j, cfg->op_timeout_ms, &e, &sent);
	p11mux_lock(&m->lock);
	finish_locked(m, j, (unsigned)c, gen, rv, sent);
	p11mux_unlock(&m->lock);
}

void
member_lone_failure(struct member *m, uint64_t gen, CK_RV rv)
{
	char why[128];

	p11mux_lock(&m->lock);
	m->errors++;
	snprintf(m->last_error, sizeof(m->last_error), "%s (other members did not fail)",
	         p11mux_rv_name(rv));
	m->last_error_ns = p11mux_now_ns();
	if (gen == m->generation && ++m->lone_failures >= LONE_FAILURES_MAX) {
		snprintf(why, sizeof(why),
		         "%u errors in a row (%s) that other members did not give",
		         m->lone_failures, p11mux_rv_name(rv));
		m->lone_failures = 0;
		lose_locked(m, gen, MEMBER_DOWN, why);
	}
	p11mux_unlock(&m->lock);
}

/* --- the member thread --- */

/* Waits until the helper is lost, stop, or (idle) the helper ends by itself. Lock held;
 * dropped while waiting. */
static void
watch_locked(struct member *m)
{
	struct pollfd pfd[2] = {{.fd = m->link.ctl.fd, .events = POLLIN},
	                        {.fd = m->wake[0], .events = POLLIN}};
	uint64_t gen = m->generation;
	char drain[64];
	int r;

	p11mux_unlock(&m->lock);
	r = poll(pfd, 2, -1);
	if (r > 0 && (pfd[1].revents & POLLIN))
		while (read(m->wake[0], drain, sizeof(drain)) > 0)
			;
	p11mux_lock(&m->lock);
	/* Nothing comes on the control channel between probes: anything there means the
	 * helper ended. */
	if (r > 0 && pfd[0].revents != 0)
		lose_locked(m, gen, MEMBER_DOWN, NULL);
}

/* Ends a lost helper once no request thread uses its channels, and says why it went. Lock
 * held; dropped while reaping. */
static void
reap_locked(struct member *m)
{
	char status[96], reason[160];
	int st, with_status;

	while (m->running > 0 && !m->stop)
		pthread_cond_wait(&m->work, &m->lock);
	with_status = m->lost_status;
	m->helper_pid = 0;
	p11mux_unlock(&m->lock);
	st = link_close(&m->link, 0);
	link_status_text(st, status, sizeof(status));
	p11mux_lock(&m->lock);
	m->lost = 0;
	if (with_status)
		snprintf(m->reason, sizeof(m->reason), "helper %s", status);
	snprintf(reason, sizeof(reason), "%s", m->reason);
	snprintf(m->last_error, sizeof(m->last_error), "%.*s", (int)sizeof(m->last_error) - 1,
	         reason);
	if (m->state == MEMBER_EXCLUDED)
		log_error("pool \"%s\": member %s excluded: %s", m->pool->label, m->label, reason);
	else
		log_warn("pool \"%s\": member %s down: %s; operations go to the other members, "
		         "and a fresh helper will probe it",
		         m->pool->label, m->label, reason);
}

static void *
member_main(void *arg)
{
	struct member *m = arg;

	p11mux_lock(&m->lock);
	while (!m->stop) {
		if (m->lost)
			reap_locked(m);
		else if (m->link.pid > 0 && m->rescan_asked != m->rescan_done)
			rescan_locked(m);
		else if (m->link.pid > 0)
			watch_locked(m);
		else if (m->state == MEMBER_EXCLUDED)
			pthread_cond_wait(&m->work, &m->lock);
		else
			probe_locked(m);
	}
	p11mux_unlock(&m->lock);
	member_close(m);
	return NULL;
}

/* --- life --- */

int
member_init(struct member *m, struct pool *p, size_t index, const char *name,
            const struct member_config *cfg, struct p11mux_err *e)
{
	memset(m, 0, sizeof(*m));
	m->pool = p;
	m->index = index;
	m->cfg = cfg;
	m->nworkers = p->cfg->workers_per_member;
	link_init(&m->link);
	m->killed_gen = UINT64_MAX;
	m->wake[0] = m->wake[1] = -1;
	snprintf(m->label, sizeof(m->label), "%s", name);
	m->state = MEMBER_DOWN;
	m->since_ns = p11mux_now_ns();
	m->probe_delay_ms = p->cfg->probe_interval_ms;
	if (m->nworkers > HELPER_MAX_CHANNELS)
		m->nworkers = HELPER_MAX_CHANNELS;
	pthread_mutex_init(&m->lock, NULL);
	p11mux_cond_init(&m->work);
	p11mux_cond_init(&m->free);
	p11mux_cond_init(&m->rescanned);
	if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) != 0)
		return p11mux_err_set(e, "pipe: %s", strerror(errno));
	return 0;
}

int
member_start(struct member *m)
{
	if (m->state == MEMBER_UP)
		m->up_ns = p11mux_now_ns();
	if (m->state == MEMBER_UP)
		m->generation++;
	if (pthread_create(&m->thread, NULL, member_main, m) != 0)
		return -1;
	m->started = 1;
	return 0;
}

void
member_stop_begin(struct member *m)
{
	char c = 1;

	p11mux_lock(&m->lock);
	m->stop = 1;
	pthread_cond_broadcast(&m->work);
	pthread_cond_broadcast(&m->free);
	/* A probe's calls could take op_timeout_ms each: its fresh helper has nothing to lose. */
	if (m->state == MEMBER_PROBING && m->helper_pid > 0)
		kill(m->helper_pid, SIGKILL);
	p11mux_unlock(&m->lock);
	if (m->wake[1] >= 0 && write(m->wake[1], &c, 1) < 0) {
		/* Full: the thread is awake already. */
	}
}

void
member_stop(struct member *m)
{
	member_stop_begin(m);
	if (m->started)
		pthread_join(m->thread, NULL);
	else
		member_close(m);
	m->started = 0;
	if (m->wake[0] >= 0) {
		close(m->wake[0]);
		close(m->wake[1]);
	}
	m->wake[0] = m->wake[1] = -1;
	link_free(&m->link);
	free(m->svc);
	free(m->mechs);
	free(m->infos);
	m->svc = NULL;
	m->mechs = NULL;
	m->infos = NULL;
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->work);
	pthread_cond_destroy(&m->free);
	pthread_cond_destroy(&m->rescanned);
}

void
member_retire(struct member *m, unsigned wait_ms)
{
	uint64_t deadline = p11mux_now_ns() + (uint64_t)wait_ms * 1000000u;

	p11mux_lock(&m->lock);
	m->retired = 1; /* a probe under way leaves the state alone from now on */
	if (m->state == MEMBER_UP)
		m->state = MEMBER_DRAINING;
	while ((m->running > 0 || m->queued > 0) &&
	       p11mux_cond_wait_until(&m->free, &m->lock, deadline) == 0)
		;
	/* Operations still there past the wait: the helper is killed (they go to other
	 * members), and its channels are closed only once no request thread uses them. */
	if (m->running > 0 || m->queued > 0)
		lose_locked(m, m->generation, MEMBER_EXCLUDED, "removed from the configuration");
	while (m->running > 0)
		pthread_cond_wait(&m->free, &m->lock);
	p11mux_unlock(&m->lock);
	/* Ends the thread; a probe's fresh helper is killed. */
	member_stop_begin(m);
	if (m->started)
		pthread_join(m->thread, NULL);
	m->started = 0;
	p11mux_lock(&m->lock);
	m->state = MEMBER_EXCLUDED;
	m->since_ns = p11mux_now_ns();
	snprintf(m->reason, sizeof(m->reason), "removed from the configuration");
	p11mux_unlock(&m->lock);
	log_info("pool \"%s\": member %s removed", m->pool->label, m->label);
}

int
member_retired(struct member *m)
{
	int r;

	p11mux_lock(&m->lock);
	r = m->retired;
	p11mux_unlock(&m->lock);
	return r;
}

int
member_drain(struct member *m)
{
	int r = -1;

	p11mux_lock(&m->lock);
	if (m->state == MEMBER_UP) {
		m->state = MEMBER_DRAINING;
		m->since_ns = p11mux_now_ns();
		snprintf(m->reason, sizeof(m->reason), "drained by an administrator");
		log_info("pool \"%s\": member %s draining", m->pool->label, m->label);
		r = 0;
	}
	p11mux_unlock(&m->lock);
	return r;
}

int
member_resume(struct member *m)
{
	int r = -1;

	p11mux_lock(&m->lock);
	if (m->state == MEMBER_DRAINING) {
		m->state = MEMBER_UP;
		m->since_ns = p11mux_now_ns();
		m->reason[0] = '\0';
		log_info("pool \"%s\": member %s resumed", m->pool->label, m->label);
		r = 0;
	}
	p11mux_unlock(&m->lock);
	return r;
}
