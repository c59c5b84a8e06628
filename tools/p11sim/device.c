/*
 * One token as one USB device: a ticket queue lets one command in at a time (FIFO), each
 * command takes the profile's service time (the wrapped module's own time included), and
 * the control file can remove the device, hang it, make it fail or slow it down.
 */
#include "p11sim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

/* Not in every pkcs11.h (p11-kit 0.24 lacks it); the value is PKCS#11 3.0's. */
#ifndef CKK_EC_MONTGOMERY
#define CKK_EC_MONTGOMERY 0x41UL
#endif

static void
tok_lock(struct sim_token *t)
{
	p11mux_lock(&t->lock);
}

static void
tok_unlock(struct sim_token *t)
{
	p11mux_unlock(&t->lock);
}

static void
sessions_shared(struct sim_token *t)
{
	if (pthread_rwlock_rdlock(&t->sessions) != 0)
		abort();
}

static void
sessions_exclusive(struct sim_token *t)
{
	if (pthread_rwlock_wrlock(&t->sessions) != 0)
		abort();
}

static void
sessions_release(struct sim_token *t)
{
	if (pthread_rwlock_unlock(&t->sessions) != 0)
		abort();
}

static struct timespec
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

static double
ms_since(const struct timespec *from, const struct timespec *to)
{
	return (double)(to->tv_sec - from->tv_sec) * 1e3 +
	       (double)(to->tv_nsec - from->tv_nsec) / 1e6;
}

static struct timespec
ts_add_ms(struct timespec ts, double ms)
{
	long long ns = (long long)(ms * 1e6);

	ts.tv_sec += (time_t)(ns / 1000000000LL);
	ts.tv_nsec += (long)(ns % 1000000000LL);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static void
sleep_until(const struct timespec *when)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, when, NULL) == EINTR)
		;
}

/* splitmix64: small, fast, and the same sequence for the same seed everywhere. */
static uint64_t
rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double
rng_uniform(uint64_t *state)
{
	return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

struct sim_token *
token_new(CK_SLOT_ID slot, const char *label, const char *serial, const char *name)
{
	pthread_rwlockattr_t ra;
	struct sim_token *t;
	char file[sizeof(t->label)];
	size_t i;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->slot = slot;
	snprintf(t->label, sizeof(t->label), "%s", label);
	snprintf(t->serial, sizeof(t->serial), "%s", serial);
	snprintf(t->name, sizeof(t->name), "%s", name[0] != '\0' ? name : "(no label)");
	config_params(&sim.cfg, t->label, t->serial, &t->p);
	if (sim.cfg.control_dir != NULL && name[0] != '\0') {
		/* The name becomes a file name: a '/' in it would name another directory. */
		for (i = 0; name[i] != '\0' && i < sizeof(file) - 1; i++)
			file[i] = name[i] == '/' ? '_' : name[i];
		file[i] = '\0';
		if (asprintf(&t->ctl_path, "%s/%s", sim.cfg.control_dir, file) < 0) {
			t->ctl_path = NULL;
			goto fail;
		}
		if (asprintf(&t->retries_path, "%s/%s.retries", sim.cfg.control_dir, file) < 0) {
			t->retries_path = NULL;
			goto fail;
		}
	}
	if (pthread_mutex_init(&t->lock, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&t->turn, NULL) != 0) {
		pthread_mutex_destroy(&t->lock);
		goto fail;
	}
	/* A removal must not wait behind an endless stream of short calls. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (pthread_rwlock_init(&t->sessions, &ra) != 0) {
		pthread_rwlockattr_destroy(&ra);
		pthread_cond_destroy(&t->turn);
		pthread_mutex_destroy(&t->lock);
		goto fail;
	}
	pthread_rwlockattr_destroy(&ra);
	t->present = 1;
	t->fault.slow = 1;
	t->retries = (unsigned)t->p.v[P_PIN_RETRIES];
	/* Each token has its own sequence, the same in every run with the same seed. */
	t->err_rng = sim.cfg.seed ^ fnv1a(t->name);
	t->jit_rng = t->err_rng ^ 0x6a09e667f3bcc909ULL;
	t->crash_rng = t->err_rng ^ 0xbb67ae8584caa73bULL;
	return t;
fail:
	free(t->ctl_path);
	free(t->retries_path);
	free(t);
	return NULL;
}

void
token_free(struct sim_token *t)
{
	if (t == NULL)
		return;
	pthread_rwlock_destroy(&t->sessions);
	pthread_cond_destroy(&t->turn);
	pthread_mutex_destroy(&t->lock);
	free(t->ctl_path);
	free(t->retries_path);
	free(t);
}

static const char *
fault_text(const struct sim_fault *f, char *buf, size_t len)
{
	if (f->removed)
		return "removed";
	snprintf(buf, len, "%s%s%s", f->hang ? "hang " : "", f->pin_locked ? "pin-locked " : "",
	         f->error_rate == 0 && f->slow == 1 && !f->hang && !f->pin_locked ? "healthy" : "");
	if (f->error_rate > 0)
		snprintf(buf + strlen(buf), len - strlen(buf), "error %g ", f->error_rate);
	if (f->slow != 1)
		snprintf(buf + strlen(buf), len - strlen(buf), "slow %g", f->slow);
	return buf;
}

void
token_poll(struct sim_token *t)
{
	struct timespec ts = now();
	char text[128];
	int close = 0;

	tok_lock(t);
	if (t->ctl_path != NULL && (!t->polled || ms_since(&t->checked, &ts) >= SIM_POLL_MS)) {
		t->checked = ts;
		t->polled = 1;
		if (fault_refresh(t->ctl_path, &t->ctl_id, &t->fault))
			sim_debug("%s: %s", t->name, fault_text(&t->fault, text, sizeof(text)));
	}
	if (t->fault.removed && t->present) {
		t->present = 0;
		t->closing = 1;
		close = 1;
	} else if (!t->fault.removed && !t->present && !t->closing) {
		t->present = 1;
		sim_debug("%s: inserted again", t->name);
	}
	tok_unlock(t);
	if (!close)
		return;
	/* As when a device is pulled out: its sessions and its login are gone. Waits for the
	 * calls inside the wrapped module on this token's sessions, then closes them all. */
	sessions_exclusive(t);
	tok_lock(t);
	t->epoch++;
	t->nkeys = 0;
	tok_unlock(t);
	sim.f->C_CloseAllSessions(t->slot);
	tok_lock(t);
	t->closing = 0;
	tok_unlock(t);
	sessions_release(t);
	sim_debug("%s: removed, sessions closed", t->name);
}

int
token_present(struct sim_token *t)
{
	int present;

	tok_lock(t);
	present = t->present;
	tok_unlock(t);
	return present;
}

unsigned
token_retries(struct sim_token *t)
{
	unsigned full = (unsigned)t->p.v[P_PIN_RETRIES], n;

	if (t->retries_path != NULL)
		return retries_read(t->retries_path, full);
	tok_lock(t);
	n = t->retries;
	tok_unlock(t);
	return n;
}

void
token_set_retries(struct sim_token *t, unsigned n)
{
	if (t->retries_path != NULL) {
		if (retries_write(t->retries_path, n) != 0)
			sim_log("%s: cannot write the PIN counter: %s", t->retries_path,
			        strerror(errno));
		return;
	}
	tok_lock(t);
	t->retries = n;
	tok_unlock(t);
}

int
token_pin_locked(struct sim_token *t)
{
	int locked;

	tok_lock(t);
	locked = t->fault.pin_locked;
	tok_unlock(t);
	return locked;
}

CK_FLAGS
token_pin_flags(struct sim_token *t)
{
	unsigned full = (unsigned)t->p.v[P_PIN_RETRIES], n = token_retries(t);
	CK_FLAGS flags = 0;

	if (n == 0 || token_pin_locked(t))
		return CKF_USER_PIN_LOCKED;
	if (n < full)
		flags |= CKF_USER_PIN_COUNT_LOW;
	if (n == 1)
		flags |= CKF_USER_PIN_FINAL_TRY;
	return flags;
}

double
keyinfo_ms(const struct sim_params *p, const struct sim_keyinfo *ki)
{
	double bits = (double)ki->bits;

	if (!ki->priv)
		return p->v[P_OTHER_MS];
	switch (ki->type) {
	case CKK_RSA:
		if (bits == 0)
			bits = 2048;
		if (bits <= 1024)
			return p->v[P_RSA1024_MS];
		if (bits <= 2048)
			return p->v[P_RSA1024_MS] +
			       (p->v[P_RSA2048_MS] - p->v[P_RSA1024_MS]) * (bits - 1024) / 1024;
		/* Beyond the measured sizes, as the cube of the size (modular exponentiation). */
		return p->v[P_RSA2048_MS] * pow(bits / 2048, 3);
	case CKK_EC:
	case CKK_EC_EDWARDS:
	case CKK_EC_MONTGOMERY:
		if (bits <= 256)
			return p->v[P_EC_P256_MS];
		return p->v[P_EC_P256_MS] * pow(bits / 256, 2);
	default:
		return p->v[P_OTHER_MS];
	}
}

/* The size of an EC key from its CKA_EC_PARAMS (a named curve's DER OID). */
static unsigned long
ec_bits(const unsigned char *der, size_t len)
{
	static const struct {
		unsigned long bits;
		size_t len;
		unsigned char oid[12];
	} curves[] = {
	        {256, 10, {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}},
	        {192, 10, {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01}},
	        {224, 7, {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21}},
	        {384, 7, {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}},
	        {521, 7, {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}},
	        {256, 7, {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}},
	        {256, 11, {0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07}},
	        {384, 11, {0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0b}},
	        {512, 11, {0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0d}},
	};
	size_t i;

	for (i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (len == curves[i].len && memcmp(der, curves[i].oid, len) == 0)
			return curves[i].bits;
	return 256;
}

struct sim_keyinfo
call_key(struct sim_call *c, CK_OBJECT_HANDLE key)
{
	struct sim_token *t = c->tok;
	struct sim_keyinfo ki = {0, 0, 0};
	CK_OBJECT_CLASS cls = 0;
	CK_KEY_TYPE type = 0;
	CK_ATTRIBUTE a[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &type, sizeof(type)}};
	CK_ATTRIBUTE m = {CKA_MODULUS, NULL, 0};
	unsigned char params[64];
	CK_ATTRIBUTE e = {CKA_EC_PARAMS, params, sizeof(params)};
	size_t i;

	tok_lock(t);
	for (i = 0; i < t->nkeys; i++)
		if (t->keys[i].handle == key) {
			ki = t->keys[i].ki;
			tok_unlock(t);
			return ki;
		}
	tok_unlock(t);
	/* We hold the device and the token's sessions (shared): ask the wrapped module. */
	if (c->inner == 0 || sim.f->C_GetAttributeValue(c->inner, key, a, 2) != CKR_OK)
		return ki;
	ki.priv = cls == CKO_PRIVATE_KEY;
	ki.type = type;
	if (type == CKK_RSA) {
		if (sim.f->C_GetAttributeValue(c->inner, key, &m, 1) == CKR_OK &&
		    m.ulValueLen != CK_UNAVAILABLE_INFORMATION)
			ki.bits = m.ulValueLen * 8;
	} else if (type == CKK_EC || type == CKK_EC_EDWARDS || type == CKK_EC_MONTGOMERY) {
		if (sim.f->C_GetAttributeValue(c->inner, key, &e, 1) == CKR_OK)
			ki.bits = ec_bits(params, e.ulValueLen);
		else
			ki.bits = 256;
	}
	tok_lock(t);
	if (t->nkeys == SIM_KEYCACHE)
		t->nkeys = 0; /* a handful of keys in practice: start over rather than evict */
	t->keys[t->nkeys].handle = key;
	t->keys[t->nkeys].ki = ki;
	t->nkeys++;
	tok_unlock(t);
	return ki;
}

void
call_charge_key(struct sim_call *c, const struct sim_keyinfo *ki)
{
	c->cost_ms = keyinfo_ms(&c->tok->p, ki);
}

void
call_forget_key(struct sim_call *c, CK_OBJECT_HANDLE key)
{
	struct sim_token *t = c->tok;
	size_t i;

	tok_lock(t);
	for (i = 0; i < t->nkeys; i++)
		if (t->keys[i].handle == key) {
			t->keys[i] = t->keys[--t->nkeys];
			break;
		}
	tok_unlock(t);
}

/* The profile's time for the call, before scale, slow factors and jitter. */
static double
base_ms_locked(const struct sim_call *c)
{
	const struct sim_params *p = &c->tok->p;

	switch (c->cost) {
	case COST_NONE:
		return 0;
	case COST_LOGIN:
		return p->v[P_LOGIN_MS];
	case COST_FIND:
		return p->v[P_FIND_MS];
	case COST_GETATTR:
		return p->v[P_GETATTR_MS];
	case COST_SIGN:
	case COST_DECRYPT:
		return keyinfo_ms(p, &c->op_key);
	case COST_OTHER:
	default:
		return p->v[P_OTHER_MS];
	}
}

/* Whether the call may go on: the session of an older epoch is gone (removed now, or
 * invalid after the re-insertion), a removed token is not there. */
static CK_RV
check_locked(struct sim_call *c)
{
	struct sim_token *t = c->tok;

	if (c->outer != 0 && c->epoch != t->epoch)
		return t->present ? CKR_SESSION_HANDLE_INVALID : CKR_DEVICE_REMOVED;
	if (!t->present)
		return c->outer != 0 ? CKR_DEVICE_REMOVED : CKR_TOKEN_NOT_PRESENT;
	if (c->outer == 0)
		c->epoch = t->epoch;
	return CKR_OK;
}

static void
device_release(struct sim_token *t)
{
	tok_lock(t);
	t->serving++;
	pthread_cond_broadcast(&t->turn);
	tok_unlock(t);
}

/* The common part of call_session_begin() and call_slot_begin(); sim_enter() was done. */
static CK_RV
call_begin(struct sim_call *c)
{
	struct sim_token *t = c->tok;
	struct timespec wake;
	uint64_t ticket;
	int hang, served;
	CK_RV rv;

	c->device = c->cost != COST_NONE;
	if (c->device) {
		tok_lock(t);
		ticket = t->next_ticket++;
		while (t->serving != ticket && !sim_finalizing())
			pthread_cond_wait(&t->turn, &t->lock);
		served = t->serving == ticket;
		tok_unlock(t);
		if (!served) {
			/* C_Finalize: nobody will be served any more. */
			sim_leave();
			return CKR_CRYPTOKI_NOT_INITIALIZED;
		}
	}
	for (;;) {
		token_poll(t);
		sessions_shared(t);
		tok_lock(t);
		rv = check_locked(c);
		hang = c->device && t->fault.hang;
		tok_unlock(t);
		if (rv != CKR_OK || !hang)
			break;
		/* A hung device answers nothing, not even later commands: they queue behind. */
		sessions_release(t);
		if (sim_finalizing()) {
			rv = CKR_CRYPTOKI_NOT_INITIALIZED;
			goto out;
		}
		wake = ts_add_ms(now(), SIM_HANG_SLICE_MS);
		sleep_until(&wake);
	}
	if (rv != CKR_OK) {
		sessions_release(t);
		goto out;
	}
	tok_lock(t);
	if (c->device && c->err != ERR_NEVER && t->fault.error_rate > 0 &&
	    rng_uniform(&t->err_rng) < t->fault.error_rate) {
		if (c->err == ERR_BEFORE)
			rv = CKR_DEVICE_ERROR;
		else
			c->inject = 1;
	}
	c->cost_ms = base_ms_locked(c);
	tok_unlock(t);
	if (rv != CKR_OK) {
		sessions_release(t);
		goto out;
	}
	c->rdlock = 1;
	c->start = now();
	return CKR_OK;
out:
	if (c->device)
		device_release(t);
	sim_leave();
	return rv;
}

CK_RV
call_session_begin(struct sim_call *c, CK_SESSION_HANDLE h, enum sim_cost cost,
                   enum sim_errpoint err)
{
	struct sim_keyinfo sign, decrypt;
	CK_RV rv;

	memset(c, 0, sizeof(*c));
	c->cost = cost;
	c->err = err;
	c->outer = h;
	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	sim_lock();
	rv = session_get_locked(h, &c->tok, &c->inner, &c->epoch, &sign, &decrypt);
	sim_unlock();
	if (rv != CKR_OK) {
		sim_leave();
		return rv;
	}
	c->op_key = cost == COST_DECRYPT ? decrypt : sign;
	return call_begin(c);
}

CK_RV
call_slot_begin(struct sim_call *c, CK_SLOT_ID slot, enum sim_cost cost, enum sim_errpoint err)
{
	CK_RV rv;

	memset(c, 0, sizeof(*c));
	c->cost = cost;
	c->err = err;
	if ((rv = sim_enter()) != CKR_OK)
		return rv;
	if ((c->tok = sim_token_for_slot(slot)) == NULL) {
		sim_leave();
		return CKR_SLOT_ID_INVALID;
	}
	return call_begin(c);
}

void
call_crash_point(struct sim_call *c, const void *in, size_t inlen)
{
	struct sim_token *t = c->tok;
	struct timespec when;
	double ms;
	int crash;

	if (c->cost != COST_SIGN && c->cost != COST_DECRYPT)
		return; /* length queries are answered by the driver */
	tok_lock(t);
	crash = t->fault.crash_rate > 0 &&
	        (t->fault.crash_on_len == 0 ||
	         (in != NULL && inlen >= t->fault.crash_on_len &&
	          memcmp(in, t->fault.crash_on, t->fault.crash_on_len) == 0)) &&
	        (t->fault.crash_rate >= 1 || rng_uniform(&t->crash_rng) < t->fault.crash_rate);
	ms = c->cost_ms * t->p.v[P_SLOW] * t->fault.slow * sim.cfg.scale / 2;
	tok_unlock(t);
	if (!crash)
		return;
	sim_log("%s: crash fault: aborting the process in the middle of a private-key operation",
	        t->name);
	when = ts_add_ms(now(), ms);
	sleep_until(&when);
	/* No core file: a test provokes this on purpose, many times. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	abort();
}

int
call_rejects(struct sim_call *c, const void *in, size_t inlen)
{
	struct sim_token *t = c->tok;
	int r;

	tok_lock(t);
	r = t->fault.reject_on_len > 0 && in != NULL && inlen >= t->fault.reject_on_len &&
	    memcmp(in, t->fault.reject_on, t->fault.reject_on_len) == 0;
	tok_unlock(t);
	return r;
}

CK_RV
call_end(struct sim_call *c, CK_RV rv)
{
	struct sim_token *t = c->tok;
	struct timespec deadline, wake, ts;
	double factor;
	int gone;

	if (c->rdlock)
		sessions_release(t);
	if (c->inject && rv != CKR_BUFFER_TOO_SMALL)
		rv = CKR_DEVICE_ERROR;
	if (c->device) {
		/* A buffer too small is answered by the driver, without the device. */
		if (rv == CKR_BUFFER_TOO_SMALL)
			c->cost_ms = t->p.v[P_OTHER_MS];
		tok_lock(t);
		factor = t->p.v[P_SLOW] * t->fault.slow * sim.cfg.scale *
		         (1 + t->p.v[P_JITTER] * (2 * rng_uniform(&t->jit_rng) - 1));
		tok_unlock(t);
		/* The wrapped module's own time is part of the service time. */
		deadline = ts_add_ms(c->start, c->cost_ms * factor);
		for (;;) {
			ts = now();
			if (ms_since(&ts, &deadline) <= 0)
				break;
			wake = ts_add_ms(ts, SIM_HANG_SLICE_MS);
			if (ms_since(&wake, &deadline) < 0)
				wake = deadline;
			sleep_until(&wake);
			/* Pulled out in the middle of a command: its result is lost. */
			token_poll(t);
			tok_lock(t);
			gone = !t->present || c->epoch != t->epoch;
			tok_unlock(t);
			if (gone) {
				rv = c->outer != 0 ? CKR_DEVICE_REMOVED : CKR_TOKEN_NOT_PRESENT;
				break;
			}
			if (sim_finalizing())
				break;
		}
		device_release(t);
	}
	if (rv != CKR_OK && c->new_session != 0)
		session_drop(c->new_session);
	sim_leave();
	return rv;
}
