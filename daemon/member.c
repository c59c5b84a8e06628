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
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_MEMORY:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_SESSION_COUNT:
	case CKR_GENERAL_ERROR:
	case CKR_FUNCTION_FAILED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return 1;
	default:
		return 0;
	}
}

/* Counts a finished operation in the latency histograms. Lock held. */
static void
record_latency_locked(struct member *m, uint64_t lat_ns)
{
	uint64_t sec = p11mux_now_ns() / 1000000000u;
	double ms = (double)lat_ns / 1e6;
	unsigned b = 0, slot = (unsigned)(sec % 60);

	while (b < LAT_NBUCKETS - 1 && ms > lat_bounds_ms[b])
		b++;
	if (m->window.second[slot] != sec) {
		memset(m->window.count[slot], 0, sizeof(m->window.count[slot]));
		m->window.second[slot] = sec;
	}
	m->window.count[slot][b]++;
	m->lat_total[b]++;
	m->lat_sum_s += ms / 1000;
}

double
member_latency_locked(const struct member *m, double q, unsigned seconds, uint64_t *count)
{
	uint64_t sec = p11mux_now_ns() / 1000000000u, sum[LAT_NBUCKETS] = {0}, n = 0, recent = 0,
	         acc = 0;
	unsigned i, b;

	for (i = 0; i < 60; i++) {
		uint64_t s = m->window.second[i];

		if (s == 0 || s + 60 <= sec || s > sec)
			continue;
		for (b = 0; b < LAT_NBUCKETS; b++) {
			sum[b] += m->window.count[i][b];
			n += m->window.count[i][b];
			/* The current second is still filling: "the last N seconds" are the N
			 * complete ones before it. */
			if (s < sec && s + seconds >= sec)
				recent += m->window.count[i][b];
		}
	}
	if (count != NULL)
		*count = recent;
	if (n == 0)
		return -1;
	for (b = 0; b < LAT_NBUCKETS; b++) {
		acc += sum[b];
		if ((double)acc >= q * (double)n)
			return b < LAT_NBUCKETS - 1 ? lat_bounds_ms[b]
			                            : lat_bounds_ms[LAT_NBUCKETS - 2];
	}
	return lat_bounds_ms[LAT_NBUCKETS - 2];
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
	p11mux_cond_init(&j->cond);
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
	pthread_cond_destroy(&j->cond);
	free(j->param);
	if (j->in != NULL) {
		explicit_bzero(j->in, j->inlen);
		free(j->in);
	}
	free(j->sig);
	if (j->out != NULL) {
		explicit_bzero(j->out, j->outlen);
		free(j->out);
	}
	free(j);
}

/* Hands a finished job to its requester. Lock held. */
static void
complete_locked(struct job *j, CK_RV rv)
{
	j->rv = rv;
	j->done = 1;
	pthread_cond_signal(&j->cond);
}

void
member_submit(struct member *m, struct job *j)
{
	char c = 1;

	p11mux_lock(&m->lock);
	j->next = NULL;
	j->submitted_ns = p11mux_now_ns();
	if (m->state != MEMBER_UP) {
		/* Went out of service since it was chosen: the requester tries another. */
		complete_locked(j, P11MUX_RV_RETRY);
		p11mux_unlock(&m->lock);
		return;
	}
	if (m->tail != NULL)
		m->tail->next = j;
	else
		m->head = j;
	m->tail = j;
	m->queued++;
	p11mux_unlock(&m->lock);
	if (write(m->wake[1], &c, 1) < 0) {
		/* The pipe is full: the member thread is awake already. */
	}
}

void
member_wait(struct member *m, struct job *j)
{
	p11mux_lock(&m->lock);
	while (!j->done)
		pthread_cond_wait(&j->cond, &m->lock);
	p11mux_unlock(&m->lock);
}

/* Takes the member out of service: every job it holds or has queued goes elsewhere at once;
 * those the helper was running are marked as having cost it when it died (cost). Lock held. */
static void fail_locked(struct member *m, enum member_state state, int cost, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void
fail_locked(struct member *m, enum member_state state, int cost, const char *fmt, ...)
{
	uint64_t now = p11mux_now_ns();
	struct job *j, *next;
	va_list ap;

	for (j = m->inflight; j != NULL; j = next) {
		next = j->next;
		j->cost_helper = cost;
		complete_locked(j, P11MUX_RV_RETRY);
	}
	for (j = m->head; j != NULL; j = next) {
		next = j->next;
		complete_locked(j, P11MUX_RV_RETRY);
	}
	m->inflight = m->head = m->tail = NULL;
	m->running = m->queued = 0;
	m->helper_pid = 0;
	if (m->state == MEMBER_EXCLUDED || m->stop)
		return;
	va_start(ap, fmt);
	vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
	va_end(ap);
	snprintf(m->last_error, sizeof(m->last_error), "%.*s", (int)sizeof(m->last_error) - 1,
	         m->reason);
	m->last_error_ns = now;
	m->state = state;
	m->since_ns = now;
	/* A member that fails again soon after joining backs off further. */
	if (m->up_ns == 0 || now - m->up_ns >= STABLE_NS || m->probe_delay_ms == 0)
		m->probe_delay_ms = m->pool->cfg->probe_interval_ms;
	else if (m->probe_delay_ms * 2 <= m->pool->cfg->probe_max_ms)
		m->probe_delay_ms *= 2;
	else
		m->probe_delay_ms = m->pool->cfg->probe_max_ms;
}

/* Ends the helper (killed) and takes the member out: why, or, when why is NULL (the helper
 * stopped by itself), how the helper ended. */
static void
lose_helper(struct member *m, enum member_state state, int cost, const char *why)
{
	char status[96], reason[160];
	int st;

	st = link_kill(&m->link);
	link_status_text(st, status, sizeof(status));
	if (why == NULL)
		snprintf(reason, sizeof(reason), "helper %s", status);
	else
		snprintf(reason, sizeof(reason), "%s", why);
	p11mux_lock(&m->lock);
	fail_locked(m, state, cost, "%s", reason);
	p11mux_unlock(&m->lock);
	if (state == MEMBER_EXCLUDED)
		log_error("pool \"%s\": member %s excluded: %s", m->pool->label, m->label, reason);
	else
		log_warn("pool \"%s\": member %s down: %s; operations go to the other members, "
		         "and a fresh helper will probe it",
		         m->pool->label, m->label, reason);
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

/* The token the helper found: label, serial, token info, mechanisms. */
static CK_RV
got_init(struct p11mux_msg *msg, void *arg)
{
	struct member *m = ((struct init_call *)arg)->m;
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

CK_RV
member_open(struct member *m, struct p11mux_err *e)
{
	const struct pool_config *pc = m->pool->cfg;
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
	spec.send_timeout_ms = pc->op_timeout_ms;
	if (link_spawn(&m->link, &spec, e) != 0)
		return CKR_GENERAL_ERROR;
	p11mux_lock(&m->lock);
	m->helpers++;
	m->helper_pid = m->link.pid;
	p11mux_unlock(&m->lock);
	rv = link_call(&m->link, HELPER_INIT, put_init, got_init, &ic, pc->op_timeout_ms, e);
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
	return link_call(&m->link, HELPER_LOGIN, put_pin, NULL, m->pool,
	                 m->pool->cfg->op_timeout_ms, e);
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

static CK_RV
got_object(struct p11mux_msg *msg, void *arg)
{
	struct read_call *rc = arg;
	struct p11mux_attrs a;
	CK_ATTRIBUTE *attrs;
	CK_ULONG cls = 0, ktype = 0;
	CK_RV *status;
	size_t i;

	p11mux_msg_get_ulong(msg, &cls);
	p11mux_msg_get_ulong(msg, &ktype);
	p11mux_msg_get_attrs(msg, &a);
	if (p11mux_msg_end(msg) != 0)
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
	rc->o = mobject_new(rc->member, rc->handle, cls, ktype, attrs, status, a.n);
	return rc->o != NULL ? CKR_OK : CKR_HOST_MEMORY;
}

int
member_read_objects(struct member *m, struct mobject ***all, size_t *nall, struct p11mux_err *e)
{
	unsigned timeout = m->pool->cfg->op_timeout_ms;
	struct handles hs = {NULL, 0};
	struct read_call rc = {m->index, 0, NULL};
	struct mobject **grown;
	size_t i;
	CK_RV rv;
	int r = -1;

	if ((rv = link_call(&m->link, HELPER_FIND, NULL, got_handles, &hs, timeout, e)) != CKR_OK)
		goto out;
	for (i = 0; i < hs.n; i++) {
		rc.handle = hs.v[i];
		rc.o = NULL;
		if ((rv = link_call(&m->link, HELPER_READ, put_handle, got_object, &rc, timeout,
		                    e)) == LINK_RV_GONE)
			goto out;
		if (rv != CKR_OK) {
			log_warn("member %s: cannot read object %lu: %s; left out", m->label,
			         hs.v[i], e->msg);
			continue;
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
	link_close(&m->link, 2000);
	p11mux_lock(&m->lock);
	m->helper_pid = 0;
	p11mux_unlock(&m->lock);
}

/* A fresh helper finds the device, logs in and maps the pool's objects onto it. CKR_OK, or
 * why not (with e); a refused or locked PIN makes the member excluded. */
static CK_RV
probe(struct member *m, struct p11mux_err *e)
{
	struct mobject **all = NULL;
	size_t nall = 0, i;
	CK_RV rv;

	if ((rv = member_open(m, e)) != CKR_OK)
		return rv;
	if (m->token.flags & CKF_USER_PIN_LOCKED) {
		p11mux_err_set(e, "user PIN locked");
		rv = CKR_PIN_LOCKED;
	} else if ((rv = member_login(m, e)) == CKR_OK &&
	           (member_read_objects(m, &all, &nall, e) != 0 ||
	            mobjects_fingerprint(all, nall) != 0)) {
		rv = CKR_DEVICE_ERROR;
	}
	if (rv == CKR_OK)
		view_remap(&m->pool->view, m->index, m->label, all, nall);
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
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

	while (!m->stop && p11mux_cond_wait_until(&m->work, &m->lock, deadline) == 0)
		;
	if (m->stop)
		return;
	m->state = MEMBER_PROBING;
	m->since_ns = p11mux_now_ns();
	p11mux_unlock(&m->lock);
	rv = probe(m, &e);
	p11mux_lock(&m->lock);
	m->since_ns = p11mux_now_ns();
	if (rv == CKR_OK) {
		m->state = MEMBER_UP;
		m->generation++;
		m->up_ns = m->since_ns;
		m->reason[0] = '\0';
		m->helper_pid = m->link.pid;
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
	m->probe_delay_ms = m->probe_delay_ms * 2 > m->pool->cfg->probe_max_ms
	                            ? m->pool->cfg->probe_max_ms
	                            : m->probe_delay_ms * 2;
	log_debug("pool \"%s\": member %s still down (%s); next probe in %u ms", m->pool->label,
	          m->label, e.msg, m->probe_delay_ms);
}

/* --- serving: jobs to the helper, answers back --- */

/* Writes job j to the helper. 0, or -1 when the helper cannot be written to. */
static int
send_job(struct member *m, struct job *j, CK_OBJECT_HANDLE key)
{
	struct p11mux_msg msg = {0};
	int r;

	if (j->call == P11MUX_CALL_RANDOM) {
		p11mux_msg_request(&msg, m->link.buf, &helper_proto, HELPER_RANDOM, j->tag);
		p11mux_msg_put_ulong(&msg, j->inlen);
	} else {
		p11mux_msg_request(&msg, m->link.buf, &helper_proto, HELPER_OP, j->tag);
		p11mux_msg_put_ulong(&msg, j->call);
		p11mux_msg_put_mech(&msg, &j->mech);
		p11mux_msg_put_ulong(&msg, key);
		p11mux_msg_put_bytes(&msg, j->in, j->inlen);
		p11mux_msg_put_bytes(&msg, j->sig, j->siglen);
	}
	if ((r = p11mux_msg_end(&msg)) == 0)
		r = p11mux_frame_send(m->link.fd, m->link.buf);
	p11mux_msg_clear(&msg);
	return r == 0 ? 0 : -1;
}

/* Moves queued jobs to the helper, at most nworkers in flight, and writes them. The key's
 * handle on this member is looked up now: a probe may have changed it. 0, or -1 when the
 * helper is lost. Lock held; dropped while writing. */
static int
dispatch_locked(struct member *m)
{
	CK_OBJECT_HANDLE key;
	struct job *j;

	while (m->head != NULL && m->running < m->nworkers &&
	       (m->state == MEMBER_UP || m->state == MEMBER_DRAINING)) {
		j = m->head;
		if ((m->head = j->next) == NULL)
			m->tail = NULL;
		m->queued--;
		key = j->key != NULL ? __atomic_load_n(&j->key->backend[m->index], __ATOMIC_ACQUIRE)
		                     : CK_INVALID_HANDLE;
		if (j->key != NULL && key == CK_INVALID_HANDLE) {
			/* It lacks the key now: another member does it. */
			complete_locked(j, P11MUX_RV_RETRY);
			continue;
		}
		j->tag = ++m->next_tag;
		j->started_ns = p11mux_now_ns();
		j->next = m->inflight;
		m->inflight = j;
		m->running++;
		p11mux_unlock(&m->lock);
		if (send_job(m, j, key) != 0) {
			p11mux_lock(&m->lock);
			return -1;
		}
		p11mux_lock(&m->lock);
	}
	return 0;
}

/* The in-flight job with tag, unlinked; NULL when there is none. Lock held. */
static struct job *
take_inflight_locked(struct member *m, uint64_t tag)
{
	struct job **pj, *j;

	for (pj = &m->inflight; (j = *pj) != NULL; pj = &j->next)
		if (j->tag == tag) {
			*pj = j->next;
			m->running--;
			return j;
		}
	return NULL;
}

/* Books a finished job: statistics, and a device failure takes the member down (returned
 * as 1: the helper must go). Lock held. */
static int
finish_locked(struct member *m, struct job *j, CK_RV rv)
{
	uint64_t now = p11mux_now_ns();
	double ms = (double)(now - j->started_ns) / 1e6;
	size_t k;

	if (rv == CKR_OK) {
		m->done++;
		k = j->key != NULL ? j->key->index : m->nsvc - 1;
		m->service_ms = sched_ewma(m->service_ms, ms);
		if (m->svc != NULL && k < m->nsvc)
			m->svc[k] = sched_ewma(m->svc[k], ms);
		record_latency_locked(m, now - j->submitted_ns);
	} else if (member_device_failure(rv)) {
		m->errors++;
		snprintf(m->last_error, sizeof(m->last_error), "%s", p11mux_rv_name(rv));
		m->last_error_ns = now;
		complete_locked(j, P11MUX_RV_RETRY);
		return 1;
	}
	complete_locked(j, rv);
	return 0;
}

/* Reads one answer from the helper and hands it to its job. 0, -1 when the helper is lost,
 * 1 when the answer was a device failure (rv in *failed). */
static int
read_answer(struct member *m, CK_RV *failed)
{
	struct p11mux_msg msg = {0};
	const uint8_t *out = NULL;
	size_t outlen = 0;
	struct job *j;
	CK_RV rv;
	int r;

	if (p11mux_frame_recv(m->link.fd, m->rbuf, P11MUX_FRAME_MAX) != 0 ||
	    p11mux_msg_read_any_reply(&msg, m->rbuf, &helper_proto, &rv) != 0) {
		p11mux_msg_clear(&msg);
		return -1;
	}
	if (rv == CKR_OK)
		p11mux_msg_get_bytes(&msg, &out, &outlen);
	p11mux_lock(&m->lock);
	r = -1;
	if (p11mux_msg_end(&msg) == 0 && (j = take_inflight_locked(m, msg.tag)) != NULL) {
		if (rv == CKR_OK && (j->out = malloc(outlen ? outlen : 1)) == NULL)
			rv = CKR_HOST_MEMORY;
		if (rv == CKR_OK) {
			memcpy(j->out, out, outlen);
			j->outlen = outlen;
		}
		r = finish_locked(m, j, rv);
		*failed = rv;
	}
	p11mux_unlock(&m->lock);
	p11mux_msg_clear(&msg);
	return r;
}

/* When the oldest operation in flight runs out of time; UINT64_MAX when none runs. Lock
 * held. */
static uint64_t
deadline_locked(const struct member *m)
{
	uint64_t d = UINT64_MAX, t;
	const struct job *j;

	for (j = m->inflight; j != NULL; j = j->next) {
		t = j->started_ns + (uint64_t)m->pool->cfg->op_timeout_ms * 1000000u;
		if (t < d)
			d = t;
	}
	return d;
}

/* One turn of an up member: hand out work, wait for an answer, a wake-up or a time-out.
 * Lock held; dropped while writing and waiting. */
static void
serve_locked(struct member *m)
{
	struct pollfd pfd[2] = {{.fd = m->link.fd, .events = POLLIN},
	                        {.fd = m->wake[0], .events = POLLIN}};
	uint64_t deadline, now;
	char why[128], drain[64];
	CK_RV failed = CKR_OK;
	int r, timeout;

	if (dispatch_locked(m) != 0) {
		p11mux_unlock(&m->lock);
		lose_helper(m, MEMBER_DOWN, 1, "the helper takes no requests (killed)");
		p11mux_lock(&m->lock);
		return;
	}
	deadline = deadline_locked(m);
	p11mux_unlock(&m->lock);
	now = p11mux_now_ns();
	timeout = deadline == UINT64_MAX ? -1
	          : deadline <= now      ? 0
	                                 : (int)((deadline - now) / 1000000 + 1);
	r = poll(pfd, 2, timeout);
	if (r > 0 && (pfd[1].revents & POLLIN))
		while (read(m->wake[0], drain, sizeof(drain)) > 0)
			;
	r = r > 0 && pfd[0].revents != 0 ? read_answer(m, &failed) : 0;
	if (r < 0) {
		lose_helper(m, MEMBER_DOWN, 1, NULL);
	} else if (r > 0) {
		snprintf(why, sizeof(why), "%s (helper ended)", p11mux_rv_name(failed));
		lose_helper(m, failed == CKR_PIN_LOCKED ? MEMBER_EXCLUDED : MEMBER_DOWN, 0, why);
	} else if (deadline != UINT64_MAX && p11mux_now_ns() >= deadline) {
		/* The device call that hangs dies with its helper. */
		snprintf(why, sizeof(why), "no answer within %u ms (helper killed)",
		         m->pool->cfg->op_timeout_ms);
		lose_helper(m, MEMBER_DOWN, 1, why);
	}
	p11mux_lock(&m->lock);
}

static void *
member_main(void *arg)
{
	struct member *m = arg;

	p11mux_lock(&m->lock);
	while (!m->stop) {
		if (m->link.fd >= 0)
			serve_locked(m);
		else if (m->state == MEMBER_EXCLUDED)
			pthread_cond_wait(&m->work, &m->lock);
		else
			probe_locked(m);
	}
	fail_locked(m, MEMBER_DOWN, 0, "stopping");
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
	m->link.fd = -1;
	m->wake[0] = m->wake[1] = -1;
	snprintf(m->label, sizeof(m->label), "%s", name);
	m->state = MEMBER_DOWN;
	m->since_ns = p11mux_now_ns();
	m->probe_delay_ms = p->cfg->probe_interval_ms;
	pthread_mutex_init(&m->lock, NULL);
	p11mux_cond_init(&m->work);
	if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) != 0)
		return p11mux_err_set(e, "pipe: %s", strerror(errno));
	if ((m->rbuf = p11mux_buf_new(P11MUX_FRAME_MAX + 64)) == NULL)
		return p11mux_err_set(e, "out of memory");
	return 0;
}

int
member_start(struct member *m)
{
	/* Service times by key (the last slot: operations without a key). */
	m->nsvc = m->pool->view.nobjects + 1;
	if ((m->svc = calloc(m->nsvc, sizeof(*m->svc))) == NULL)
		return -1;
	if (m->state == MEMBER_UP)
		m->up_ns = p11mux_now_ns();
	if (pthread_create(&m->thread, NULL, member_main, m) != 0)
		return -1;
	m->started = 1;
	return 0;
}

void
member_stop(struct member *m)
{
	char c = 1;

	p11mux_lock(&m->lock);
	m->stop = 1;
	pthread_cond_broadcast(&m->work);
	p11mux_unlock(&m->lock);
	if (m->wake[1] >= 0 && write(m->wake[1], &c, 1) < 0) {
		/* Full: the thread is awake already. */
	}
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
	p11mux_buf_free(m->link.buf);
	p11mux_buf_free(m->rbuf);
	m->link.buf = m->rbuf = NULL;
	free(m->svc);
	free(m->mechs);
	free(m->infos);
	m->svc = NULL;
	m->mechs = NULL;
	m->infos = NULL;
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->work);
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
		r = 0;
	}
	p11mux_unlock(&m->lock);
	if (r == 0)
		log_info("pool \"%s\": member %s draining", m->pool->label, m->label);
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
		r = 0;
	}
	p11mux_unlock(&m->lock);
	if (r == 0)
		log_info("pool \"%s\": member %s resumed", m->pool->label, m->label);
	return r;
}
