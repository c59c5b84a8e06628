/* Running an operation on the member that will finish it soonest, and elsewhere when that
 * member fails. */
#include "log.h"
#include "pool.h"
#include "thread.h"

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A snapshot of the members for the scheduler. Members whose service time is not known yet
 * are taken to be as fast as the average of the others. */
static int
pick_member(struct pool *p, const struct pobject *key, const uint8_t *tried)
{
	struct sched_candidate c[P11MUX_POOL_MAX_MEMBERS];
	double sum = 0;
	size_t i, n = pool_nmembers(p);
	unsigned known = 0;

	for (i = 0; i < n; i++) {
		struct member *m = &p->members[i];

		/* Held for a few instructions only: no member lock is ever held across a
		 * device call or a write to a helper. */
		p11mux_lock(&m->lock);
		c[i].eligible =
		        m->state == MEMBER_UP && !tried[i] &&
		        (key == NULL ||
		         __atomic_load_n(&key->backend[i], __ATOMIC_ACQUIRE) != CK_INVALID_HANDLE);
		c[i].load = m->queued + m->running;
		c[i].workers = m->nworkers;
		/* What this kind of operation costs on this member. */
		c[i].service_ms = member_service_locked(m, key);
		p11mux_unlock(&m->lock);
		if (c[i].service_ms > 0) {
			sum += c[i].service_ms;
			known++;
		}
	}
	for (i = 0; i < n; i++)
		if (c[i].service_ms <= 0)
			c[i].service_ms = known > 0 ? sum / known : 1.0;
	return sched_pick(pool_policy(p), c, n, atomic_fetch_add(&p->rr, 1));
}

/* What identifies an operation for the quarantine: SHA-256 of the call, the mechanism (type
 * and parameter), the key and the data. */
static void
op_digest(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key, const uint8_t *in,
          size_t inlen, const uint8_t *sig, size_t siglen, uint8_t digest[32])
{
	CK_OBJECT_HANDLE h = key != NULL ? key->handle : 0;
	CK_MECHANISM_TYPE t = mech != NULL ? mech->mechanism : 0;
	uint64_t len = inlen;
	EVP_MD_CTX *c;

	memset(digest, 0, 32);
	if ((c = EVP_MD_CTX_new()) == NULL)
		return;
	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	EVP_DigestUpdate(c, &call, sizeof(call));
	EVP_DigestUpdate(c, &t, sizeof(t));
	if (mech != NULL && mech->pParameter != NULL)
		EVP_DigestUpdate(c, mech->pParameter, mech->ulParameterLen);
	EVP_DigestUpdate(c, &h, sizeof(h));
	EVP_DigestUpdate(c, &len, sizeof(len));
	if (in != NULL)
		EVP_DigestUpdate(c, in, inlen);
	if (sig != NULL)
		EVP_DigestUpdate(c, sig, siglen);
	EVP_DigestFinal_ex(c, digest, NULL);
	EVP_MD_CTX_free(c);
}

/* Whether the operation with this digest is in quarantine. */
static int
quarantined(struct quarantine *q, const uint8_t digest[32])
{
	uint64_t now = p11mux_now_ns();
	size_t i;
	int found = 0;

	p11mux_lock(&q->lock);
	for (i = 0; i < QUARANTINE_SIZE && !found; i++)
		found = q->e[i].until_ns > now && memcmp(q->e[i].digest, digest, 32) == 0;
	p11mux_unlock(&q->lock);
	return found;
}

static void
quarantine_add(struct quarantine *q, const uint8_t digest[32])
{
	p11mux_lock(&q->lock);
	memcpy(q->e[q->next].digest, digest, 32);
	q->e[q->next].until_ns = p11mux_now_ns() + QUARANTINE_S * 1000000000ull;
	q->next = (q->next + 1) % QUARANTINE_SIZE;
	p11mux_unlock(&q->lock);
	atomic_fetch_add(&q->count, 1);
}

/* The call's name and the key's, for the log line of a poison input. */
static void
describe_op(uint32_t call, const CK_MECHANISM *mech, const struct pobject *key, char *dst, size_t n)
{
	snprintf(dst, n, "%s with mechanism 0x%lx on %s", p11mux_calls[call].name,
	         mech != NULL ? mech->mechanism : 0UL, key != NULL ? key->desc : "no key");
}

/* What the first of two members answered with an ambiguous error. */
struct suspect {
	int idx; /* -1: none yet */
	uint64_t gen;
	CK_RV rv;
};

/* An operation that cost two helpers: the others are spared, and it is refused for a while. */
static CK_RV
poison(struct pool *p, uint32_t call, CK_MECHANISM *mech, const struct pobject *key,
       const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen)
{
	uint8_t digest[32];
	char what[160];

	describe_op(call, mech, key, what, sizeof(what));
	log_error("pool \"%s\": %s cost the helpers of two members; not tried on another: the "
	          "client gets CKR_DEVICE_ERROR, and so does the same operation for %d s",
	          p->label, what, QUARANTINE_S);
	op_digest(call, mech, key, in, inlen, sig, siglen, digest);
	quarantine_add(&p->quarantine, digest);
	return CKR_DEVICE_ERROR;
}

CK_RV
pool_crypto(struct pool *p, uint32_t call, CK_MECHANISM *mech, const struct pobject *key,
            const uint8_t *in, size_t inlen, const uint8_t *sig, size_t siglen, uint8_t **out,
            size_t *outlen)
{
	uint8_t tried[P11MUX_POOL_MAX_MEMBERS] = {0};
	const struct pool_config *cfg = pool_cfg(p);
	struct suspect first = {-1, 0, CKR_OK};
	unsigned attempt, costly = 0;
	struct member *m;
	struct job *j;
	uint8_t digest[32];
	CK_RV rv;
	int idx;

	*out = NULL;
	*outlen = 0;
	if (atomic_load(&p->quarantine.count) > 0) {
		op_digest(call, mech, key, in, inlen, sig, siglen, digest);
		if (quarantined(&p->quarantine, digest))
			return CKR_DEVICE_ERROR;
	}
	for (attempt = 0; attempt < cfg->max_attempts; attempt++) {
		if ((idx = pick_member(p, key, tried)) < 0)
			break;
		m = &p->members[idx];
		tried[idx] = 1;
		if ((j = job_new(call, mech, key, in, inlen, sig, siglen)) == NULL)
			return CKR_HOST_MEMORY;
		/* A suspect (it was running when a helper died) runs alone: a second death
		 * is then its own, and no other operation is charged with it. */
		j->alone = costly > 0;
		member_run(m, j);
		rv = j->rv;
		costly += j->cost_helper;
		if (rv == P11MUX_RV_RETRY) {
			job_free(j);
			p11mux_lock(&m->lock);
			m->failovers++;
			p11mux_unlock(&m->lock);
			/* An input that cost two helpers would cost every member its helper. */
			if (costly >= 2)
				return poison(p, call, mech, key, in, inlen, sig, siglen);
			continue;
		}
		/* An error a bad input can provoke as well as a failing device: a second member
		 * decides. The same error there is the input's; the client gets it and no member
		 * changes state. A decryption is never repeated: a padding error must take as long
		 * as any other answer (no timing oracle), and a bad ciphertext must cost no
		 * member anything. */
		if (member_ambiguous(rv) && call != P11MUX_CALL_DECRYPT && first.idx < 0) {
			first = (struct suspect){idx, j->gen, rv};
			job_free(j);
			continue;
		}
		if (rv == CKR_OK && first.idx >= 0)
			member_lone_failure(&p->members[first.idx], first.gen, first.rv);
		*out = j->out;
		*outlen = j->outlen;
		j->out = NULL;
		job_free(j);
		return rv;
	}
	/* No second member could be asked: the first one's answer stands, and nobody is blamed.
	 * No member could do it at all: the application sees a device error, never a hang; or,
	 * for a key that a rescan withdrew meanwhile, that the key is gone. */
	if (first.idx >= 0)
		return first.rv;
	return key != NULL && pobject_withdrawn(key) ? CKR_KEY_HANDLE_INVALID : CKR_DEVICE_ERROR;
}

CK_RV
pool_make(struct pool *p, struct job *j, size_t *idx)
{
	uint8_t tried[P11MUX_POOL_MAX_MEMBERS] = {0};
	unsigned attempt;
	int i;

	for (attempt = 0; attempt < pool_cfg(p)->max_attempts; attempt++) {
		if ((i = pick_member(p, NULL, tried)) < 0)
			break;
		tried[i] = 1;
		mobject_free(j->made[0]);
		mobject_free(j->made[1]);
		j->made[0] = j->made[1] = NULL;
		member_run(&p->members[i], j);
		if (j->rv != P11MUX_RV_RETRY) {
			*idx = (size_t)i;
			return j->rv;
		}
		/* A request that cost a helper (a key generation that outlived op_timeout_ms, a
		 * template the module choked on) is not tried on another: it would cost that
		 * one's too, and its session objects with it. */
		if (j->cost_helper) {
			log_error("pool \"%s\": %s of a session object cost a member's helper; not "
			          "tried on another",
			          p->label, p11mux_calls[j->call].name);
			return CKR_DEVICE_ERROR;
		}
	}
	return CKR_DEVICE_ERROR;
}

/* Runs j on member idx's helper of generation gen. */
static CK_RV
run_pinned(struct pool *p, size_t idx, uint64_t gen, struct job *j)
{
	if (idx >= pool_nmembers(p))
		return CKR_DEVICE_REMOVED;
	j->pin_gen = gen;
	member_run(&p->members[idx], j);
	return j->rv == P11MUX_RV_RETRY ? CKR_DEVICE_REMOVED : j->rv;
}

CK_RV
pool_pinned_crypto(struct pool *p, size_t idx, uint64_t gen, uint32_t call, CK_MECHANISM *mech,
                   const struct pobject *key, const uint8_t *in, size_t inlen, const uint8_t *sig,
                   size_t siglen, uint8_t **out, size_t *outlen)
{
	uint8_t digest[32];
	struct job *j;
	CK_RV rv;

	*out = NULL;
	*outlen = 0;
	/* The digest only when it is looked up or added: not on every operation's path. */
	if (atomic_load(&p->quarantine.count) > 0) {
		op_digest(call, mech, key, in, inlen, sig, siglen, digest);
		if (quarantined(&p->quarantine, digest))
			return CKR_DEVICE_ERROR;
	}
	if ((j = job_new(call, mech, key, in, inlen, sig, siglen)) == NULL)
		return CKR_HOST_MEMORY;
	rv = run_pinned(p, idx, gen, j);
	if (j->cost_helper) {
		char what[160];

		describe_op(call, mech, key, what, sizeof(what));
		log_error("pool \"%s\": %s cost a member's helper; refused for %d s", p->label,
		          what, QUARANTINE_S);
		op_digest(call, mech, key, in, inlen, sig, siglen, digest);
		quarantine_add(&p->quarantine, digest);
	}
	*out = j->out;
	*outlen = j->outlen;
	j->out = NULL;
	job_free(j);
	return rv;
}

CK_RV
pool_pinned_destroy(struct pool *p, size_t idx, uint64_t gen, const struct pobject *key)
{
	struct job *j;
	CK_RV rv;

	if ((j = job_new(P11MUX_CALL_DESTROY, NULL, key, NULL, 0, NULL, 0)) == NULL)
		return CKR_HOST_MEMORY;
	rv = run_pinned(p, idx, gen, j);
	job_free(j);
	return rv;
}

CK_RV
pool_random(struct pool *p, uint8_t *out, size_t len)
{
	uint8_t *buf = NULL;
	size_t got = 0;
	CK_RV rv;

	if (!p->has_rng)
		return CKR_RANDOM_NO_RNG;
	/* RANDOM jobs carry the wanted length as their input size. */
	rv = pool_crypto(p, P11MUX_CALL_RANDOM, NULL, NULL, NULL, len, NULL, 0, &buf, &got);
	if (rv == CKR_OK && got == len)
		memcpy(out, buf, len);
	else if (rv == CKR_OK)
		rv = CKR_DEVICE_ERROR;
	if (buf != NULL) {
		explicit_bzero(buf, got);
		free(buf);
	}
	return rv;
}
