/* Members as serial devices: a queue, workers, failure, and probing back into service. */
#include "member.h"
#include "log.h"
#include "thread.h"
#include "pool.h"
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const double lat_bounds_ms[LAT_NBUCKETS - 1] = {0.5, 1,   2.5,  5,    10,   25,    50,   100,
                                                250, 500, 1000, 2500, 5000, 10000, 30000};

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

struct job *
job_new(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key, const uint8_t *in,
        size_t inlen, const uint8_t *sig, size_t siglen)
{
	CK_RSA_PKCS_OAEP_PARAMS *oaep;
	struct job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	j->call = call;
	j->key = key;
	if (mech != NULL) {
		j->mech = *mech;
		j->mech.pParameter = NULL;
		if (mech->pParameter != NULL && mech->ulParameterLen > 0) {
			if ((j->param = malloc(mech->ulParameterLen)) == NULL)
				goto fail;
			memcpy(j->param, mech->pParameter, mech->ulParameterLen);
			j->mech.pParameter = j->param;
			/* OAEP's label is the one pointer inside a parameter we carry. */
			if (mech->mechanism == CKM_RSA_PKCS_OAEP &&
			    mech->ulParameterLen == sizeof(*oaep)) {
				oaep = (CK_RSA_PKCS_OAEP_PARAMS *)j->param;
				if (oaep->pSourceData != NULL && oaep->ulSourceDataLen > 0) {
					if ((j->sig = malloc(oaep->ulSourceDataLen)) == NULL)
						goto fail;
					memcpy(j->sig, oaep->pSourceData, oaep->ulSourceDataLen);
					oaep->pSourceData = j->sig;
				}
			}
		}
	}
	if (inlen > 0 && in != NULL) {
		if ((j->in = malloc(inlen)) == NULL)
			goto fail;
		memcpy(j->in, in, inlen);
	}
	j->inlen = inlen;
	if (siglen > 0) {
		/* VERIFY carries a signature; no mechanism of it has an OAEP label. */
		free(j->sig);
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
	free(j->sig);
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

/* Hands a finished job to its requester, or frees it when the requester left. Lock held. */
static void
complete_locked(struct job *j, CK_RV rv)
{
	j->rv = rv;
	j->done = 1;
	if (j->abandoned)
		job_free(j);
	else
		pthread_cond_signal(&j->cond);
}

/* Runs one job on session s. The backend handle of the key is looked up now: a probe may
 * have changed it while the member was out. */
static CK_RV
run_job(struct member *m, CK_SESSION_HANDLE s, struct job *j)
{
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	CK_ULONG len;
	size_t cap = j->call == P11MUX_CALL_RANDOM ? j->inlen : j->inlen + 4096;
	uint8_t *buf = NULL, *nb;
	CK_RV rv;
	int tries;

	if (j->key != NULL) {
		key = __atomic_load_n(&j->key->backend[m->index], __ATOMIC_ACQUIRE);
		if (key == CK_INVALID_HANDLE)
			return P11MUX_RV_RETRY;
	}
	switch (j->call) {
	case P11MUX_CALL_SIGN:
		rv = f->C_SignInit(s, &j->mech, key);
		break;
	case P11MUX_CALL_VERIFY:
		rv = f->C_VerifyInit(s, &j->mech, key);
		break;
	case P11MUX_CALL_ENCRYPT:
		rv = f->C_EncryptInit(s, &j->mech, key);
		break;
	case P11MUX_CALL_DECRYPT:
		rv = f->C_DecryptInit(s, &j->mech, key);
		break;
	case P11MUX_CALL_DIGEST:
		rv = f->C_DigestInit(s, &j->mech);
		break;
	case P11MUX_CALL_RANDOM:
		rv = CKR_OK;
		break;
	default:
		return CKR_FUNCTION_NOT_SUPPORTED;
	}
	if (rv != CKR_OK)
		return rv;
	if (j->call == P11MUX_CALL_VERIFY)
		return f->C_Verify(s, j->in, j->inlen, j->sig, j->siglen);
	/* Big enough for any signature or RSA block; a symmetric mechanism that needs more
	 * says how much, and its operation stays active for the second call. */
	for (tries = 0; tries < 2; tries++) {
		if ((nb = realloc(buf, cap ? cap : 1)) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		buf = nb;
		len = cap;
		switch (j->call) {
		case P11MUX_CALL_SIGN:
			rv = f->C_Sign(s, j->in, j->inlen, buf, &len);
			break;
		case P11MUX_CALL_ENCRYPT:
			rv = f->C_Encrypt(s, j->in, j->inlen, buf, &len);
			break;
		case P11MUX_CALL_DECRYPT:
			rv = f->C_Decrypt(s, j->in, j->inlen, buf, &len);
			break;
		case P11MUX_CALL_DIGEST:
			rv = f->C_Digest(s, j->in, j->inlen, buf, &len);
			break;
		default:
			rv = f->C_GenerateRandom(s, buf, cap);
			break;
		}
		if (rv != CKR_BUFFER_TOO_SMALL || len <= cap || len > P11MUX_FRAME_MAX)
			break;
		cap = len;
	}
	if (rv == CKR_BUFFER_TOO_SMALL)
		rv = CKR_DATA_LEN_RANGE; /* the caller closes the session, ending the operation */
	if (rv == CKR_OK) {
		j->out = buf;
		j->outlen = len;
		buf = NULL;
	}
	free(buf);
	return rv;
}

static void *
worker_main(void *arg)
{
	struct member *m = arg;
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	uint64_t sgen = 0, gen, t0;
	CK_SLOT_ID slot;
	struct job *j;
	CK_RV rv;
	int usable;

	p11mux_lock(&m->lock);
	for (;;) {
		while (!m->stop && m->head == NULL)
			pthread_cond_wait(&m->work, &m->lock);
		if (m->stop)
			break;
		j = m->head;
		m->head = j->next;
		if (m->head == NULL)
			m->tail = NULL;
		m->queued--;
		if (j->abandoned) {
			job_free(j);
			continue;
		}
		m->running++;
		j->started_ns = p11mux_now_ns();
		gen = m->generation;
		slot = m->slot;
		usable = m->state == MEMBER_UP || m->state == MEMBER_DRAINING;
		p11mux_unlock(&m->lock);

		t0 = p11mux_now_ns();
		rv = P11MUX_RV_RETRY;
		if (usable) {
			/* Each worker keeps one session; a member that rejoined has new ones. */
			if (s != CK_INVALID_HANDLE && sgen != gen) {
				f->C_CloseSession(s);
				s = CK_INVALID_HANDLE;
			}
			if (s == CK_INVALID_HANDLE) {
				rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
				if (rv != CKR_OK)
					s = CK_INVALID_HANDLE;
				sgen = gen;
			}
			if (s != CK_INVALID_HANDLE)
				rv = run_job(m, s, j);
			if (s != CK_INVALID_HANDLE &&
			    (member_device_failure(rv) || rv == CKR_DATA_LEN_RANGE)) {
				/* The session's state is unknown; a new one will be opened. */
				f->C_CloseSession(s);
				s = CK_INVALID_HANDLE;
			}
		}

		p11mux_lock(&m->lock);
		m->running--;
		if (rv == CKR_OK) {
			m->done++;
			double ms = (double)(p11mux_now_ns() - t0) / 1e6;
			size_t k = j->key != NULL ? j->key->index : m->nsvc - 1;

			m->service_ms = sched_ewma(m->service_ms, ms);
			if (m->svc != NULL && k < m->nsvc)
				m->svc[k] = sched_ewma(m->svc[k], ms);
			record_latency_locked(m, p11mux_now_ns() - j->submitted_ns);
		} else if (member_device_failure(rv)) {
			m->errors++;
			snprintf(m->last_error, sizeof(m->last_error), "%s", p11mux_rv_name(rv));
			m->last_error_ns = p11mux_now_ns();
			if (gen == m->generation &&
			    (m->state == MEMBER_UP || m->state == MEMBER_DRAINING)) {
				p11mux_unlock(&m->lock);
				member_fail(m, rv == CKR_PIN_LOCKED ? MEMBER_EXCLUDED : MEMBER_DOWN,
				            "%s", p11mux_rv_name(rv));
				p11mux_lock(&m->lock);
			}
		}
		complete_locked(j, rv);
	}
	p11mux_unlock(&m->lock);
	if (s != CK_INVALID_HANDLE)
		f->C_CloseSession(s);
	return NULL;
}

void
member_submit(struct member *m, struct job *j)
{
	p11mux_lock(&m->lock);
	j->m = m;
	j->next = NULL;
	j->submitted_ns = p11mux_now_ns();
	if (m->state != MEMBER_UP) {
		/* Went out of service since it was chosen: the requester tries another. */
		j->rv = P11MUX_RV_RETRY;
		j->done = 1;
		p11mux_unlock(&m->lock);
		return;
	}
	if (m->tail != NULL)
		m->tail->next = j;
	else
		m->head = j;
	m->tail = j;
	m->queued++;
	pthread_cond_signal(&m->work);
	p11mux_unlock(&m->lock);
}

static void *probe_main(void *arg);

void
member_fail(struct member *m, enum member_state state, const char *fmt, ...)
{
	struct job *j, *next;
	pthread_attr_t attr;
	pthread_t t;
	va_list ap;
	int start_probe = 0;

	p11mux_lock(&m->lock);
	if (m->state == MEMBER_EXCLUDED || (m->state == MEMBER_DOWN && state == MEMBER_DOWN)) {
		p11mux_unlock(&m->lock);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
	va_end(ap);
	m->state = state;
	m->since_ns = p11mux_now_ns();
	snprintf(m->last_error, sizeof(m->last_error), "%.*s", (int)sizeof(m->last_error) - 1,
	         m->reason);
	m->last_error_ns = m->since_ns;
	/* Jobs still waiting here go elsewhere at once, instead of waiting for a device that
	 * may never answer. */
	for (j = m->head; j != NULL; j = next) {
		next = j->next;
		complete_locked(j, P11MUX_RV_RETRY);
	}
	m->head = m->tail = NULL;
	m->queued = 0;
	if (state == MEMBER_DOWN && !m->prober && !m->stop) {
		m->prober = 1;
		start_probe = 1;
	}
	p11mux_unlock(&m->lock);
	if (state == MEMBER_EXCLUDED)
		log_error("pool \"%s\": member %s excluded: %s", m->pool->label, m->label,
		          m->reason);
	else
		log_warn("pool \"%s\": member %s down: %s; operations go to the other members",
		         m->pool->label, m->label, m->reason);
	if (start_probe) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, probe_main, m) != 0) {
			p11mux_lock(&m->lock);
			m->prober = 0;
			p11mux_unlock(&m->lock);
			log_error("member %s: cannot start a probe thread", m->label);
		}
		pthread_attr_destroy(&attr);
	}
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

CK_RV
member_login(struct member *m)
{
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_MECHANISM_TYPE *mechs = NULL;
	CK_MECHANISM_INFO *infos = NULL;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_ULONG n = 0, i;
	CK_SLOT_ID slot;
	CK_RV rv;

	p11mux_lock(&m->lock);
	slot = m->slot;
	p11mux_unlock(&m->lock);
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		return rv;
	rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)m->pool->pin, m->pool->pinlen);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv == CKR_OK && (rv = f->C_GetMechanismList(slot, NULL, &n)) == CKR_OK) {
		mechs = calloc(n + 1, sizeof(*mechs));
		infos = calloc(n + 1, sizeof(*infos));
		if (mechs == NULL || infos == NULL)
			rv = CKR_HOST_MEMORY;
		else
			rv = f->C_GetMechanismList(slot, mechs, &n);
		for (i = 0; rv == CKR_OK && i < n; i++)
			if (f->C_GetMechanismInfo(slot, mechs[i], &infos[i]) != CKR_OK)
				memset(&infos[i], 0, sizeof(infos[i]));
	}
	if (rv != CKR_OK) {
		f->C_CloseSession(s);
		free(mechs);
		free(infos);
		return rv;
	}
	p11mux_lock(&m->lock);
	m->anchor = s;
	free(m->mechs);
	free(m->infos);
	m->mechs = mechs;
	m->infos = infos;
	m->nmechs = n;
	p11mux_unlock(&m->lock);
	return CKR_OK;
}

/* Finds the member's token again (its slot may have changed), logs in and maps the pool's
 * objects onto what the device holds now. */
static CK_RV
reopen(struct member *m, struct p11mux_err *e)
{
	CK_FUNCTION_LIST *f = m->pool->be->f;
	CK_SLOT_ID *slots = NULL, found = 0, old;
	CK_ULONG n = 0, i;
	CK_TOKEN_INFO ti;
	char label[33], serial[17];
	int have = 0;
	CK_RV rv;

	p11mux_lock(&m->lock);
	old = m->slot;
	if (m->anchor != CK_INVALID_HANDLE) {
		/* Closing the old anchor may fail (device gone): its login is gone anyway. */
		f->C_CloseSession(m->anchor);
		m->anchor = CK_INVALID_HANDLE;
	}
	p11mux_unlock(&m->lock);
	(void)old;
	if ((rv = f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK ||
	    (slots = calloc(n + 1, sizeof(*slots))) == NULL ||
	    (rv = f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		p11mux_err_set(e, "C_GetSlotList: %s", p11mux_rv_name(rv));
		free(slots);
		return rv != CKR_OK ? rv : CKR_HOST_MEMORY;
	}
	for (i = 0; i < n && !have; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		backend_field(label, ti.label, sizeof(ti.label));
		backend_field(serial, ti.serialNumber, sizeof(ti.serialNumber));
		/* Known by serial once seen; a member configured but never seen, by its name. */
		if ((m->serial[0] != '\0' && strcmp(serial, m->serial) == 0) ||
		    (m->serial[0] == '\0' &&
		     (strcmp(label, m->label) == 0 || strcmp(serial, m->label) == 0))) {
			found = slots[i];
			have = 1;
		}
	}
	free(slots);
	if (!have) {
		p11mux_err_set(e, "not present");
		return CKR_TOKEN_NOT_PRESENT;
	}
	if (ti.flags & CKF_USER_PIN_LOCKED) {
		p11mux_err_set(e, "user PIN locked");
		return CKR_PIN_LOCKED;
	}
	p11mux_lock(&m->lock);
	m->slot = found;
	m->token = ti;
	memcpy(m->label, label, sizeof(m->label));
	memcpy(m->serial, serial, sizeof(m->serial));
	p11mux_unlock(&m->lock);
	if ((rv = member_login(m)) != CKR_OK) {
		p11mux_err_set(e, "login: %s", p11mux_rv_name(rv));
		return rv;
	}
	if ((rv = pool_remap_member(m->pool, m, e)) != CKR_OK)
		return rv;
	return CKR_OK;
}

static void *
probe_main(void *arg)
{
	struct member *m = arg;
	const struct pool_config *cfg = m->pool->cfg;
	struct timespec until;
	uint64_t deadline;
	struct p11mux_err why;
	unsigned delay;
	CK_RV rv;

	p11mux_lock(&m->lock);
	m->probe_delay_ms = cfg->probe_interval_ms;
	for (;;) {
		delay = m->probe_delay_ms;
		deadline = p11mux_now_ns() + (uint64_t)delay * 1000000u;
		until.tv_sec = (time_t)(deadline / 1000000000u);
		until.tv_nsec = (long)(deadline % 1000000000u);
		/* Wait on the member's condition with a monotonic deadline: stop wakes it. */
		while (!m->stop && p11mux_now_ns() < deadline)
			if (pthread_cond_timedwait(&m->work, &m->lock, &until) == ETIMEDOUT)
				break;
		if (m->stop || m->state == MEMBER_EXCLUDED)
			break;
		if (m->running > 0) {
			/* A worker is still inside a device call (the device hangs): a serial
			 * device would not answer a probe either. */
			m->probe_delay_ms =
			        delay * 2 > cfg->probe_max_ms ? cfg->probe_max_ms : delay * 2;
			continue;
		}
		m->state = MEMBER_PROBING;
		m->since_ns = p11mux_now_ns();
		p11mux_unlock(&m->lock);
		why.msg[0] = '\0';
		rv = reopen(m, &why);
		p11mux_lock(&m->lock);
		if (m->stop)
			break;
		if (rv == CKR_OK) {
			m->state = MEMBER_UP;
			m->since_ns = p11mux_now_ns();
			m->generation++;
			m->reason[0] = '\0';
			m->probe_delay_ms = cfg->probe_interval_ms;
			p11mux_unlock(&m->lock);
			log_info("pool \"%s\": member %s (serial %s) back in service",
			         m->pool->label, m->label, m->serial);
			p11mux_lock(&m->lock);
			break;
		}
		m->since_ns = p11mux_now_ns();
		snprintf(m->reason, sizeof(m->reason), "probe: %s", why.msg);
		if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_LEN_RANGE) {
			/* Never try a PIN twice on a device that refused it. */
			m->state = MEMBER_EXCLUDED;
			p11mux_unlock(&m->lock);
			log_error("pool \"%s\": member %s excluded: %s", m->pool->label, m->label,
			          why.msg);
			p11mux_lock(&m->lock);
			break;
		}
		m->state = MEMBER_DOWN;
		m->probe_delay_ms = delay * 2 > cfg->probe_max_ms ? cfg->probe_max_ms : delay * 2;
		log_debug("pool \"%s\": member %s still down (%s); next probe in %u ms",
		          m->pool->label, m->label, why.msg, m->probe_delay_ms);
	}
	m->prober = 0;
	pthread_cond_broadcast(&m->work);
	p11mux_unlock(&m->lock);
	return NULL;
}

int
member_start(struct member *m)
{
	unsigned i;

	if ((m->workers = calloc(m->nworkers, sizeof(*m->workers))) == NULL)
		return -1;
	for (i = 0; i < m->nworkers; i++)
		if (pthread_create(&m->workers[i], NULL, worker_main, m) != 0) {
			m->nworkers = i;
			return i > 0 ? 0 : -1;
		}
	return 0;
}

void
member_stop(struct member *m)
{
	struct timespec pause = {0, 10 * 1000 * 1000};
	unsigned i;
	int probing;

	p11mux_lock(&m->lock);
	m->stop = 1;
	pthread_cond_broadcast(&m->work);
	p11mux_unlock(&m->lock);
	/* A worker stuck in a device call that hangs is left behind (the process is about to
	 * exit); the others are joined. */
	for (i = 0; m->workers != NULL && i < m->nworkers; i++) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 3;
		if (pthread_timedjoin_np(m->workers[i], NULL, &until) != 0) {
			log_warn(
			        "member %s: a worker is stuck in a device call; not waiting for it",
			        m->label);
			pthread_detach(m->workers[i]);
			m->stuck = 1;
		}
	}
	/* A probe thread is detached; wait until it has let go of the member. */
	for (i = 0; i < 300; i++) {
		p11mux_lock(&m->lock);
		probing = m->prober;
		pthread_cond_broadcast(&m->work);
		p11mux_unlock(&m->lock);
		if (!probing)
			break;
		nanosleep(&pause, NULL);
	}
	if (probing) {
		/* The probe is inside a device call that hangs: its member must stay allocated. */
		log_warn("member %s: a probe is stuck in a device call; not waiting for it",
		         m->label);
		m->stuck = 1;
	}
	if (!m->stuck) {
		free(m->workers);
		m->workers = NULL;
	}
}
