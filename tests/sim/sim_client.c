/*
 * The simulator's test client: loads p11sim-pkcs11.so (dlopen) and checks what it promises.
 *   sim_client MODULE timing             service times of the nitrokey profile, and profile none
 *   sim_client MODULE serial             one command at a time per token, tokens in parallel, FIFO
 *   sim_client MODULE removed            a token pulled out and put back
 *   sim_client MODULE hang               a token that stops answering, then answers again
 *   sim_client MODULE error              a token that fails 30% of its commands
 *   sim_client MODULE slow               a token three times slower, then back
 *   sim_client MODULE pinlocked          a token whose PIN is locked from outside
 *   sim_client MODULE retries file|memory  wrong PINs count down and lock the token
 *   sim_client MODULE signtime LABEL N [PARAMS]  prints the median RSA-2048 C_Sign time in ms
 *   sim_client MODULE init [PARAMS]      prints what C_Initialize returns (0x...)
 *   sim_client MODULE modlock            module_lock = yes: one call at a time across tokens, a
 *                                        hung token stops the others; no: tokens in parallel
 *   sim_client MODULE crash              the crash fault aborts a process mid-C_Sign; crash-on
 *                                        only for its input
 * PARAMS is the string passed in C_Initialize's pReserved. The tokens are those of
 * tests/fixtures/mktokens.sh (hsm1..hsm3, PIN 648219); the control directory comes from
 * $P11SIM_CONTROL_DIR, as for the module. Prints "ok: ..." per check, "FAIL: ..." on a
 * failure; exits 0 when every check passed. Timing checks keep generous bounds and take the
 * best of a few tries where noise can only make a run slower.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "testclient.h"

#define PIN "648219"

static CK_FUNCTION_LIST *f;
static const char *ctl_dir;

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define MUST(call)                                                                                 \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != CKR_OK)                                                                 \
			die("%s:%d: %s: 0x%lx", __FILE__, __LINE__, #call, rv_);                   \
	} while (0)

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
sleep_ms(double ms)
{
	struct timespec ts = {(time_t)(ms / 1000),
	                      (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double
least(const double *v, int n)
{
	double m = v[0];
	int i;

	for (i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static int
within(double got, double want, double tolerance)
{
	return got >= want * (1 - tolerance) && got <= want * (1 + tolerance);
}

/* ---------------------------------------------------------------- control files */

/* Writes a control file the way a careful script does (rename), so that the module never
 * reads it half-written. */
static void
ctl_write(const char *label, const char *text)
{
	char path[4096], tmp[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", ctl_dir, label);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", ctl_dir, label);
	if ((fp = fopen(tmp, "w")) == NULL || fputs(text, fp) < 0 || fclose(fp) != 0 ||
	    rename(tmp, path) != 0)
		die("cannot write %s: %s", path, strerror(errno));
}

static void
ctl_clear(const char *label)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", ctl_dir, label);
	if (unlink(path) != 0 && errno != ENOENT)
		die("cannot remove %s: %s", path, strerror(errno));
}

/* The retry counter file: its number, or -1 when there is none. */
static int
retries_file(const char *label)
{
	char path[4096];
	FILE *fp;
	int n = -1;

	snprintf(path, sizeof(path), "%s/%s.retries", ctl_dir, label);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	if (fscanf(fp, "%d", &n) != 1)
		n = -2;
	fclose(fp);
	return n;
}

static void
retries_file_set(const char *label, int n)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s.retries", ctl_dir, label);
	if ((fp = fopen(path, "w")) == NULL || fprintf(fp, "%d\n", n) < 0 || fclose(fp) != 0)
		die("cannot write %s", path);
}

/* ---------------------------------------------------------------- PKCS#11 helpers */

static CK_RV
init(const char *params)
{
	CK_C_INITIALIZE_ARGS args;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	args.pReserved = (void *)params;
	return f->C_Initialize(&args);
}

static CK_SLOT_ID
slot_of(const char *label)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	size_t len = strlen(label);

	MUST(f->C_GetSlotList(CK_FALSE, slots, &n));
	for (i = 0; i < n; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (memcmp(ti.label, label, len) == 0 && (len == 32 || ti.label[len] == ' '))
			return slots[i];
	}
	die("no token %s", label);
}

/* Whether C_GetSlotList(CK_TRUE) lists `slot`. */
static int
listed(CK_SLOT_ID slot)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;

	MUST(f->C_GetSlotList(CK_TRUE, slots, &n));
	for (i = 0; i < n; i++)
		if (slots[i] == slot)
			return 1;
	return 0;
}

static CK_SESSION_HANDLE
open_session(CK_SLOT_ID slot)
{
	CK_SESSION_HANDLE s;

	MUST(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
	return s;
}

static CK_RV
login(CK_SESSION_HANDLE s, const char *pin)
{
	return f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
}

static CK_SESSION_HANDLE
open_login(CK_SLOT_ID slot)
{
	CK_SESSION_HANDLE s = open_session(slot);
	CK_RV rv = login(s, PIN);

	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login: 0x%lx", rv);
	return s;
}

static CK_OBJECT_HANDLE
find_key(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, CK_BYTE id)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, &id, 1}};
	CK_OBJECT_HANDLE h = 0;
	CK_ULONG n = 0;

	MUST(f->C_FindObjectsInit(s, t, 2));
	MUST(f->C_FindObjects(s, &h, 1, &n));
	MUST(f->C_FindObjectsFinal(s));
	if (n != 1)
		die("no key with ID %02x", id);
	return h;
}

/* One signature (ECDSA over a hash, or RSA PKCS#1 v1.5 over a DigestInfo-sized input):
 * C_SignInit + C_Sign. *ms gets the time of C_Sign alone when not NULL. */
static CK_RV
sign(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, int ec, double *ms)
{
	CK_MECHANISM mech = {ec ? CKM_ECDSA : CKM_RSA_PKCS, NULL, 0};
	CK_BYTE in[51], sig[512];
	CK_ULONG siglen = sizeof(sig);
	double t0;
	CK_RV rv;

	memset(in, 0x5a, sizeof(in));
	if ((rv = f->C_SignInit(s, &mech, key)) != CKR_OK)
		return rv;
	t0 = now_ms();
	rv = f->C_Sign(s, in, ec ? 32 : 51, sig, &siglen);
	if (ms != NULL)
		*ms = now_ms() - t0;
	return rv;
}

/* Median time of n C_Sign calls. */
static double
sign_median(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, int ec, int n, double *min, double *max)
{
	double v[64];
	int i;

	for (i = 0; i < n; i++)
		MUST(sign(s, key, ec, &v[i]));
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	if (min != NULL)
		*min = v[0];
	if (max != NULL)
		*max = v[n - 1];
	return median(v, n);
}

static CK_OBJECT_HANDLE
rsa1024_key(CK_SESSION_HANDLE s)
{
	CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
	CK_ULONG bits = 1024;
	CK_BYTE e[] = {1, 0, 1};
	CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
	CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &no, sizeof(no)},
	                      {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	                      {CKA_PUBLIC_EXPONENT, e, sizeof(e)},
	                      {CKA_VERIFY, &yes, sizeof(yes)}};
	CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_PRIVATE, &yes, sizeof(yes)},
	                       {CKA_SENSITIVE, &yes, sizeof(yes)},
	                       {CKA_SIGN, &yes, sizeof(yes)}};
	CK_OBJECT_HANDLE hpub, hpriv;

	MUST(f->C_GenerateKeyPair(s, &mech, pub, 4, priv, 4, &hpub, &hpriv));
	return hpriv;
}

static CK_FLAGS
token_flags(CK_SLOT_ID slot)
{
	CK_TOKEN_INFO ti;

	MUST(f->C_GetTokenInfo(slot, &ti));
	return ti.flags;
}

/* ---------------------------------------------------------------- timing */

static void
report(const char *what, double got, double want, double tolerance)
{
	printf("measure: %-46s %8.2f ms (profile %.2f ms)\n", what, got, want);
	expect(within(got, want, tolerance), "%s: %.2f ms, profile %.2f ms (+-%.0f%%)", what, got,
	       want, tolerance * 100);
}

static int
cmd_timing(void)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE rsa, ec, small, cert;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE a = {CKA_LABEL, NULL, 0};
	CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof(cls)};
	CK_OBJECT_HANDLE found[8];
	CK_ULONG n;
	double v[16], lo, hi, m, t0;
	int i;

	/* Scale 0.05: RSA-2048 37.5 ms, RSA-1024 11.5 ms, EC P-256 12.5 ms. */
	MUST(init("scale=0.05"));
	s = open_login(slot_of("hsm1"));
	rsa = find_key(s, CKO_PRIVATE_KEY, 1);
	ec = find_key(s, CKO_PRIVATE_KEY, 2);
	small = rsa1024_key(s);
	/* The service time is the least a command takes: a busy machine only adds to it (a
	 * thread waits for a core after its sleep), and jitter takes at most 5% off. So the
	 * fastest of several is compared with the profile. */
	m = sign_median(s, rsa, 0, 10, &lo, &hi);
	report("RSA-2048 C_Sign, scale 0.05 (fastest of 10)", lo, 750 * 0.05, 0.2);
	expect(lo >= 750 * 0.05 * 0.94,
	       "no RSA-2048 signature under the jittered profile (min %.2f ms, median %.2f ms, "
	       "max %.2f ms)",
	       lo, m, hi);
	sign_median(s, small, 0, 10, &lo, NULL);
	report("RSA-1024 C_Sign, scale 0.05 (fastest of 10)", lo, 230 * 0.05, 0.2);
	sign_median(s, ec, 1, 10, &lo, NULL);
	report("EC P-256 C_Sign, scale 0.05 (fastest of 10)", lo, 250 * 0.05, 0.2);
	MUST(f->C_Finalize(NULL));

	/* The short commands, at scale 1 where 20% is still more than timer noise. */
	MUST(init("scale=1"));
	s = open_login(slot_of("hsm1"));
	cert = find_key(s, CKO_CERTIFICATE, 1);
	for (i = 0; i < 10; i++) {
		a.pValue = NULL;
		t0 = now_ms();
		MUST(f->C_GetAttributeValue(s, cert, &a, 1));
		v[i] = now_ms() - t0;
	}
	report("C_GetAttributeValue, scale 1 (fastest of 10)", least(v, 10), 5, 0.2);
	for (i = 0; i < 5; i++) {
		MUST(f->C_FindObjectsInit(s, &t, 1));
		t0 = now_ms();
		MUST(f->C_FindObjects(s, found, 8, &n));
		v[i] = now_ms() - t0;
		MUST(f->C_FindObjectsFinal(s));
	}
	report("C_FindObjects, scale 1 (fastest of 5)", least(v, 5), 20, 0.2);
	MUST(f->C_Logout(s));
	for (i = 0; i < 4; i++) {
		t0 = now_ms();
		MUST(login(s, PIN));
		v[i] = now_ms() - t0;
		MUST(f->C_Logout(s));
	}
	report("C_Login, scale 1 (fastest of 4)", least(v, 4), 100, 0.2);
	MUST(f->C_Finalize(NULL));

	/* Profile none: serialisation only, SoftHSM's own time. */
	MUST(init("profile=none"));
	s = open_login(slot_of("hsm1"));
	rsa = find_key(s, CKO_PRIVATE_KEY, 1);
	m = sign_median(s, rsa, 0, 10, NULL, NULL);
	printf("measure: %-34s %8.2f ms (profile none: no delay)\n",
	       "RSA-2048 C_Sign, profile none", m);
	expect(m < 20, "profile none: RSA-2048 C_Sign in %.2f ms (SoftHSM's own time)", m);
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

/* ---------------------------------------------------------------- serial */

struct job {
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	double start_after; /* ms after the barrier */
	pthread_barrier_t *barrier;
	double t0;   /* the barrier's time */
	double done; /* ms after the barrier */
	CK_RV rv;
	int order;
	int getattr; /* a C_GetAttributeValue instead of a signature */
};

static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static int order_next;

/* A signature job starts its operation before the barrier, so that it is one command (C_Sign)
 * after it: the device serves commands in order, not whole operations. */
static void *
job_run(void *arg)
{
	struct job *j = arg;
	CK_ATTRIBUTE a = {CKA_MODULUS, NULL, 0};
	CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};
	CK_BYTE in[51], sig[512];
	CK_ULONG siglen = sizeof(sig);

	memset(in, 0x5a, sizeof(in));
	j->rv = j->getattr ? CKR_OK : f->C_SignInit(j->s, &mech, j->key);
	pthread_barrier_wait(j->barrier);
	if (j->rv != CKR_OK)
		return NULL;
	if (j->start_after > 0)
		sleep_ms(j->start_after);
	if (j->getattr)
		j->rv = f->C_GetAttributeValue(j->s, j->key, &a, 1);
	else
		j->rv = f->C_Sign(j->s, in, sizeof(in), sig, &siglen);
	j->done = now_ms() - j->t0;
	pthread_mutex_lock(&order_lock);
	j->order = order_next++;
	pthread_mutex_unlock(&order_lock);
	return NULL;
}

/* Runs the jobs at once; returns the time until the last one is done, in ms. */
static double
run_jobs(struct job *jobs, int n)
{
	pthread_barrier_t barrier;
	pthread_t th[8];
	double t0, last = 0;
	int i;

	pthread_barrier_init(&barrier, NULL, (unsigned)n + 1);
	order_next = 0;
	for (i = 0; i < n; i++) {
		jobs[i].barrier = &barrier;
		pthread_create(&th[i], NULL, job_run, &jobs[i]);
	}
	t0 = now_ms();
	for (i = 0; i < n; i++)
		jobs[i].t0 = t0;
	pthread_barrier_wait(&barrier);
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].rv != CKR_OK)
			die("job %d: 0x%lx", i, jobs[i].rv);
		if (jobs[i].done > last)
			last = jobs[i].done;
	}
	pthread_barrier_destroy(&barrier);
	return last;
}

static int
cmd_serial(void)
{
	CK_SESSION_HANDLE s1[4], s2;
	CK_OBJECT_HANDLE k1, k2;
	struct job jobs[4];
	double one, same = 1e9, diff = 1e9, v[3], d;
	int i, try;

	/* Scale 0.2: an RSA-2048 signature takes 150 ms. The tokens' own queues are measured,
	 * without the module-wide lock (see cmd_modlock). */
	MUST(init("scale=0.2;module_lock=no"));
	for (i = 0; i < 4; i++)
		s1[i] = open_login(slot_of("hsm1"));
	s2 = open_login(slot_of("hsm2"));
	k1 = find_key(s1[0], CKO_PRIVATE_KEY, 1);
	k2 = find_key(s2, CKO_PRIVATE_KEY, 1);
	for (i = 0; i < 3; i++) {
		d = now_ms();
		MUST(sign(s1[0], k1, 0, NULL));
		v[i] = now_ms() - d;
	}
	one = median(v, 3);
	printf("measure: one RSA-2048 signature, scale 0.2: %.1f ms\n", one);
	for (try = 0; try < 2; try++) {
		memset(jobs, 0, sizeof(jobs));
		jobs[0].s = s1[0];
		jobs[1].s = s1[1];
		jobs[0].key = jobs[1].key = k1;
		d = run_jobs(jobs, 2);
		same = d < same ? d : same;
		memset(jobs, 0, sizeof(jobs));
		jobs[0].s = s1[0];
		jobs[0].key = k1;
		jobs[1].s = s2;
		jobs[1].key = k2;
		d = run_jobs(jobs, 2);
		diff = d < diff ? d : diff;
	}
	printf("measure: two at once on one token: %.1f ms (%.2f x one)\n", same, same / one);
	printf("measure: two at once on two tokens: %.1f ms (%.2f x one)\n", diff, diff / one);
	expect(same / one >= 1.6 && same / one <= 2.6,
	       "two signatures on one token take about twice one (%.2f x)", same / one);
	expect(diff / one >= 0.8 && diff / one <= 1.4,
	       "two signatures on two tokens take about as long as one (%.2f x)", diff / one);

	/* An attribute read waits for the signature in progress. */
	memset(jobs, 0, sizeof(jobs));
	jobs[0].s = s1[0];
	jobs[0].key = k1;
	jobs[1].s = s1[1];
	jobs[1].key = find_key(s1[1], CKO_PUBLIC_KEY, 1);
	jobs[1].getattr = 1;
	jobs[1].start_after = 30;
	run_jobs(jobs, 2);
	expect(jobs[1].done >= jobs[0].done && jobs[1].done - 30 >= one * 0.6,
	       "C_GetAttributeValue queued behind a signature (done after %.1f ms)",
	       jobs[1].done - 30);

	/* First come, first served: four signatures started 20 ms apart finish in order. */
	memset(jobs, 0, sizeof(jobs));
	for (i = 0; i < 4; i++) {
		jobs[i].s = s1[i];
		jobs[i].key = k1;
		jobs[i].start_after = 20.0 * i;
	}
	d = run_jobs(jobs, 4);
	expect(jobs[0].order == 0 && jobs[1].order == 1 && jobs[2].order == 2 && jobs[3].order == 3,
	       "four queued signatures finish in arrival order (%d %d %d %d), %.1f ms in all",
	       jobs[0].order, jobs[1].order, jobs[2].order, jobs[3].order, d);
	expect(d >= one * 3.2, "four signatures on one token take about four times one (%.2f x)",
	       d / one);
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

/* ---------------------------------------------------------------- faults */

/* Calls `probe` until it returns `want`, for at most `limit` ms; returns the time it took,
 * or -1. */
static double
wait_for(int (*probe)(CK_SLOT_ID), CK_SLOT_ID slot, int want, double limit)
{
	double t0 = now_ms(), t;

	for (;;) {
		t = now_ms() - t0;
		if (probe(slot) == want)
			return t;
		if (t > limit)
			return -1;
		sleep_ms(2);
	}
}

/* A call on a thread of its own: a signature with key in session s, or (key 0)
 * C_GetTokenInfo of slot. */
struct bg {
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_SLOT_ID slot;
	CK_RV rv;
	double done; /* now_ms() when done */
	pthread_t th;
};

static void *
bg_run(void *arg)
{
	struct bg *b = arg;
	CK_TOKEN_INFO ti;

	b->rv = b->key != 0 ? sign(b->s, b->key, 0, NULL) : f->C_GetTokenInfo(b->slot, &ti);
	b->done = now_ms();
	return NULL;
}

static void
bg_start(struct bg *b, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_SLOT_ID slot)
{
	memset(b, 0, sizeof(*b));
	b->s = s;
	b->key = key;
	b->slot = slot;
	pthread_create(&b->th, NULL, bg_run, b);
}

static int
cmd_removed(void)
{
	CK_SESSION_HANDLE s1, s2, s3;
	CK_OBJECT_HANDLE k1, k2;
	CK_SLOT_ID slot1, slot2;
	CK_SLOT_INFO si;
	CK_SESSION_INFO info;
	CK_TOKEN_INFO ti;
	struct bg bg;
	double t, t0;
	CK_RV rv;

	MUST(init("scale=0.05"));
	slot1 = slot_of("hsm1");
	slot2 = slot_of("hsm2");
	s1 = open_login(slot1);
	s2 = open_login(slot2);
	k1 = find_key(s1, CKO_PRIVATE_KEY, 1);
	k2 = find_key(s2, CKO_PRIVATE_KEY, 1);
	MUST(sign(s2, k2, 0, NULL));

	ctl_write("hsm2", "removed\n");
	t = wait_for(listed, slot2, 0, 1000);
	expect(t >= 0 && t <= 100, "removed: C_GetSlotList(CK_TRUE) omits the token after %.1f ms",
	       t);
	MUST(f->C_GetSlotInfo(slot2, &si));
	expect(!(si.flags & CKF_TOKEN_PRESENT) && (si.flags & CKF_REMOVABLE_DEVICE),
	       "removed: C_GetSlotInfo has no CKF_TOKEN_PRESENT (flags 0x%lx)", si.flags);
	rv = sign(s2, k2, 0, NULL);
	expect(rv == CKR_DEVICE_REMOVED, "removed: signing in an old session: 0x%lx", rv);
	rv = f->C_GetSessionInfo(s2, &info);
	expect(rv == CKR_DEVICE_REMOVED, "removed: C_GetSessionInfo: 0x%lx", rv);
	rv = f->C_GetTokenInfo(slot2, &ti);
	expect(rv == CKR_TOKEN_NOT_PRESENT, "removed: C_GetTokenInfo: 0x%lx", rv);
	rv = f->C_OpenSession(slot2, CKF_SERIAL_SESSION, NULL, NULL, &s3);
	expect(rv == CKR_TOKEN_NOT_PRESENT, "removed: C_OpenSession: 0x%lx", rv);
	rv = sign(s1, k1, 0, NULL);
	expect(rv == CKR_OK, "removed: the other token still signs: 0x%lx", rv);

	ctl_clear("hsm2");
	t = wait_for(listed, slot2, 1, 1000);
	expect(t >= 0 && t <= 100, "re-inserted: C_GetSlotList(CK_TRUE) lists it after %.1f ms", t);
	rv = sign(s2, k2, 0, NULL);
	expect(rv == CKR_SESSION_HANDLE_INVALID, "re-inserted: the old session is invalid: 0x%lx",
	       rv);
	rv = f->C_CloseSession(s2);
	expect(rv == CKR_SESSION_HANDLE_INVALID, "re-inserted: closing the old session: 0x%lx", rv);
	s3 = open_session(slot2);
	MUST(f->C_GetSessionInfo(s3, &info));
	expect(info.state == CKS_RW_PUBLIC_SESSION, "re-inserted: the login is gone (state %lu)",
	       info.state);
	MUST(login(s3, PIN));
	rv = sign(s3, find_key(s3, CKO_PRIVATE_KEY, 1), 0, NULL);
	expect(rv == CKR_OK, "re-inserted: a new session logs in and signs: 0x%lx", rv);

	/* Pulled out in the middle of a command (750 ms with slow 20): the command fails at
	 * once rather than at its end. */
	ctl_write("hsm2", "slow 20\n");
	sleep_ms(100);
	bg_start(&bg, s3, find_key(s3, CKO_PRIVATE_KEY, 1), 0);
	sleep_ms(200);
	ctl_write("hsm2", "removed\n");
	t0 = now_ms();
	pthread_join(bg.th, NULL);
	expect(bg.rv == CKR_DEVICE_REMOVED && bg.done - t0 <= 100,
	       "removed during a signature: 0x%lx after %.1f ms", bg.rv, bg.done - t0);
	ctl_clear("hsm2");
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

static int
cmd_hang(void)
{
	CK_SESSION_HANDLE s1, s2;
	CK_OBJECT_HANDLE k1, k2;
	CK_SESSION_INFO info;
	struct bg bg;
	double one, t0, t;
	CK_RV rv;

	/* One token's hang, as its own device shows it; with the module-wide lock every token
	 * would stop (cmd_modlock). */
	MUST(init("scale=0.05;module_lock=no"));
	s1 = open_login(slot_of("hsm1"));
	s2 = open_login(slot_of("hsm2"));
	k1 = find_key(s1, CKO_PRIVATE_KEY, 1);
	k2 = find_key(s2, CKO_PRIVATE_KEY, 1);
	t0 = now_ms();
	MUST(sign(s2, k2, 0, NULL));
	one = now_ms() - t0;

	ctl_write("hsm2", "hang\n");
	sleep_ms(100);
	bg_start(&bg, s2, k2, 0);
	t0 = now_ms();
	rv = sign(s1, k1, 0, NULL);
	t = now_ms() - t0;
	expect(rv == CKR_OK && t < one * 3, "hang: the other token signs meanwhile (%.1f ms)", t);
	rv = f->C_GetSessionInfo(s2, &info);
	expect(rv == CKR_OK, "hang: C_GetSessionInfo (driver bookkeeping) still answers: 0x%lx",
	       rv);
	sleep_ms(400);
	expect(bg.done == 0, "hang: a signature on the hung token is still waiting after 500 ms");
	ctl_clear("hsm2");
	t0 = now_ms();
	pthread_join(bg.th, NULL);
	t = bg.done - t0;
	expect(bg.rv == CKR_OK && t - one <= 100,
	       "hang cleared: the waiting signature went on (0x%lx) %.1f ms later (%.1f ms of it "
	       "the signature)",
	       bg.rv, t, one);

	/* Hung, then pulled out: the waiting call fails as the new state says. */
	ctl_write("hsm2", "hang\n");
	sleep_ms(100);
	bg_start(&bg, s2, k2, 0);
	sleep_ms(150);
	ctl_write("hsm2", "removed\n");
	t0 = now_ms();
	pthread_join(bg.th, NULL);
	expect(bg.rv == CKR_DEVICE_REMOVED && bg.done - t0 <= 100,
	       "hang then removed: the waiting signature fails with 0x%lx after %.1f ms", bg.rv,
	       bg.done - t0);
	ctl_clear("hsm2");
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

/* n calls of C_GenerateRandom: how many failed with CKR_DEVICE_ERROR; pattern[i] = 1 when
 * call i did. Any other error is fatal. */
static int
random_failures(CK_SESSION_HANDLE s, int n, char *pattern)
{
	CK_BYTE buf[16];
	int i, failed = 0;
	CK_RV rv;

	for (i = 0; i < n; i++) {
		rv = f->C_GenerateRandom(s, buf, sizeof(buf));
		if (rv != CKR_OK && rv != CKR_DEVICE_ERROR)
			die("C_GenerateRandom: 0x%lx", rv);
		if (pattern != NULL)
			pattern[i] = rv == CKR_DEVICE_ERROR;
		failed += rv == CKR_DEVICE_ERROR;
	}
	return failed;
}

static int
error_run(char *pattern, int n)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE k;
	int failed, i, signfail = 0, other = 0;
	CK_RV rv;

	MUST(init("profile=none"));
	s = open_login(slot_of("hsm3"));
	k = find_key(s, CKO_PRIVATE_KEY, 1);
	ctl_write("hsm3", "error 0.3\n");
	sleep_ms(100);
	failed = random_failures(s, n, pattern);
	/* A signature that fails ends its operation: the next C_SignInit works. */
	for (i = 0; i < 100; i++) {
		rv = sign(s, k, 0, NULL);
		signfail += rv == CKR_DEVICE_ERROR;
		other += rv != CKR_OK && rv != CKR_DEVICE_ERROR;
	}
	expect(other == 0 && signfail > 20 && signfail < 80,
	       "error 0.3: %d of 100 signatures (C_SignInit + C_Sign) failed with "
	       "CKR_DEVICE_ERROR, none otherwise",
	       signfail);
	ctl_clear("hsm3");
	sleep_ms(100);
	i = random_failures(s, 100, NULL);
	expect(i == 0, "error cleared: %d of 100 calls failed", i);
	MUST(f->C_Finalize(NULL));
	return failed;
}

static int
cmd_error(void)
{
	char a[400], b[400];
	int failed;

	failed = error_run(a, 400);
	printf("measure: error 0.3: %d of 400 calls failed (%.1f%%)\n", failed, failed / 4.0);
	expect(failed >= 400 * 0.22 && failed <= 400 * 0.38,
	       "error 0.3: %d of 400 calls failed with CKR_DEVICE_ERROR", failed);
	error_run(b, 400);
	expect(memcmp(a, b, sizeof(a)) == 0,
	       "error 0.3: the same calls fail in a second run (seeded per token)");
	return failures != 0;
}

static int
cmd_slow(void)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE k;
	double base, slow, back, ms;
	CK_RV rv;

	MUST(init("scale=0.05"));
	s = open_login(slot_of("hsm1"));
	k = find_key(s, CKO_PRIVATE_KEY, 1);
	base = sign_median(s, k, 0, 5, NULL, NULL);
	ctl_write("hsm1", "slow 3\n");
	sleep_ms(100);
	/* The first command 100 ms after the change is already slow. */
	rv = sign(s, k, 0, &ms);
	expect(rv == CKR_OK && ms >= base * 2.2, "slow 3: in effect within 100 ms (%.1f ms)", ms);
	slow = sign_median(s, k, 0, 5, NULL, NULL);
	printf("measure: RSA-2048 at scale 0.05: %.1f ms, with slow 3: %.1f ms (%.2f x)\n", base,
	       slow, slow / base);
	expect(slow / base >= 2.4 && slow / base <= 3.6, "slow 3: %.2f times slower", slow / base);
	ctl_clear("hsm1");
	sleep_ms(100);
	rv = sign(s, k, 0, &ms);
	expect(rv == CKR_OK && ms <= base * 1.5, "slow cleared within 100 ms (%.1f ms)", ms);
	back = sign_median(s, k, 0, 5, NULL, NULL);
	expect(within(back, base, 0.2), "slow cleared: %.1f ms again", back);
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

static int
cmd_pinlocked(void)
{
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slot;
	int before;
	CK_RV rv;

	MUST(init("scale=0.05"));
	slot = slot_of("hsm3");
	s = open_session(slot);
	before = retries_file("hsm3");
	ctl_write("hsm3", "pin-locked\n");
	sleep_ms(100);
	rv = login(s, PIN);
	expect(rv == CKR_PIN_LOCKED, "pin-locked: C_Login with the right PIN: 0x%lx", rv);
	expect(token_flags(slot) & CKF_USER_PIN_LOCKED, "pin-locked: token info has "
	                                                "CKF_USER_PIN_LOCKED");
	expect(retries_file("hsm3") == before, "pin-locked: the retry counter is untouched (%d)",
	       retries_file("hsm3"));
	ctl_clear("hsm3");
	sleep_ms(100);
	expect(!(token_flags(slot) & CKF_USER_PIN_LOCKED), "pin-locked cleared within 100 ms");
	rv = login(s, PIN);
	expect(rv == CKR_OK, "pin-locked cleared: C_Login: 0x%lx", rv);
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

#define PIN_FLAGS (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED)

static int
cmd_retries(int file)
{
	CK_SESSION_HANDLE s, s1;
	CK_SLOT_ID slot;
	CK_FLAGS fl;
	CK_RV rv;
	int i;

	MUST(init("profile=none"));
	slot = slot_of("hsm2");
	s = open_session(slot);
	expect((token_flags(slot) & PIN_FLAGS) == 0, "retries: a fresh token has no PIN flags");
	rv = login(s, "000000");
	fl = token_flags(slot) & PIN_FLAGS;
	expect(rv == CKR_PIN_INCORRECT && fl == CKF_USER_PIN_COUNT_LOW,
	       "1st wrong PIN: 0x%lx, flags 0x%lx (CKF_USER_PIN_COUNT_LOW)", rv, fl);
	if (file)
		expect(retries_file("hsm2") == 2, "1st wrong PIN: hsm2.retries says %d",
		       retries_file("hsm2"));
	rv = login(s, "111111");
	fl = token_flags(slot) & PIN_FLAGS;
	expect(rv == CKR_PIN_INCORRECT && fl == (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY),
	       "2nd wrong PIN: 0x%lx, flags 0x%lx (COUNT_LOW | FINAL_TRY)", rv, fl);
	if (file)
		expect(retries_file("hsm2") == 1, "2nd wrong PIN: hsm2.retries says %d",
		       retries_file("hsm2"));
	rv = login(s, PIN);
	fl = token_flags(slot) & PIN_FLAGS;
	expect(rv == CKR_OK && fl == 0, "right PIN: 0x%lx, counter reset (flags 0x%lx)", rv, fl);
	if (file)
		expect(retries_file("hsm2") == 3, "right PIN: hsm2.retries says %d",
		       retries_file("hsm2"));
	MUST(f->C_Logout(s));
	for (i = 0; i < 3; i++)
		rv = login(s, "000000");
	fl = token_flags(slot) & PIN_FLAGS;
	expect(rv == CKR_PIN_INCORRECT && fl == CKF_USER_PIN_LOCKED,
	       "3 wrong PINs: the last 0x%lx, flags 0x%lx (CKF_USER_PIN_LOCKED)", rv, fl);
	rv = login(s, PIN);
	expect(rv == CKR_PIN_LOCKED, "locked: the right PIN is refused with 0x%lx", rv);
	if (file)
		expect(retries_file("hsm2") == 0, "locked: hsm2.retries says %d",
		       retries_file("hsm2"));
	s1 = open_session(slot_of("hsm1"));
	expect(login(s1, PIN) == CKR_OK, "locked: another token is not affected");
	if (file) {
		/* Writing the file resets the device, as an SO would with C_InitPIN. */
		retries_file_set("hsm2", 3);
		rv = login(s, PIN);
		expect(rv == CKR_OK, "reset through hsm2.retries: C_Login 0x%lx", rv);
	}
	MUST(f->C_Finalize(NULL));
	return failures != 0;
}

/* ---------------------------------------------------------------- module lock */

/* Two signatures on two tokens, from two threads, n times each: the time for all, in ms. */
static double
two_tokens(CK_SESSION_HANDLE a, CK_OBJECT_HANDLE ka, CK_SESSION_HANDLE b, CK_OBJECT_HANDLE kb,
           int n)
{
	struct job jobs[2];
	double total = 0;
	int i;

	for (i = 0; i < n; i++) {
		memset(jobs, 0, sizeof(jobs));
		jobs[0].s = a;
		jobs[0].key = ka;
		jobs[1].s = b;
		jobs[1].key = kb;
		total += run_jobs(jobs, 2);
	}
	return total;
}

/* OpenSC holds one mutex for the whole module through every call (sc_pkcs11_lock() in
 * src/pkcs11/pkcs11-object.c); module_lock = yes does the same. */
static int
cmd_modlock(void)
{
	CK_SESSION_HANDLE s1, s2;
	CK_OBJECT_HANDLE k1, k2;
	CK_SLOT_ID slot2;
	struct bg bg;
	struct bg bi;
	double one, both, t0;
	const int n = 4;
	int lock;

	for (lock = 1; lock >= 0; lock--) {
		/* Scale 0.2: an RSA-2048 signature takes 150 ms. */
		MUST(init(lock ? "scale=0.2;module_lock=yes" : "scale=0.2;module_lock=no"));
		s1 = open_login(slot_of("hsm1"));
		slot2 = slot_of("hsm2");
		s2 = open_login(slot2);
		k1 = find_key(s1, CKO_PRIVATE_KEY, 1);
		k2 = find_key(s2, CKO_PRIVATE_KEY, 1);
		one = sign_median(s1, k1, 0, 3, NULL, NULL);
		both = two_tokens(s1, k1, s2, k2, n) / n;
		printf("measure: module_lock=%s: one signature %.1f ms, two on two tokens at once "
		       "%.1f ms (%.2f x one)\n",
		       lock ? "yes" : "no", one, both, both / one);
		if (lock)
			expect(both / one >= 1.7 && both / one <= 2.6,
			       "module_lock=yes: two tokens take turns, %.2f x one signature",
			       both / one);
		else
			expect(both / one >= 0.8 && both / one <= 1.4,
			       "module_lock=no: two tokens sign in parallel, %.2f x one signature",
			       both / one);
		if (lock) {
			/* A hung token holds the lock: a call for another token waits as long. */
			ctl_write("hsm1", "hang\n");
			sleep_ms(120);
			bg_start(&bg, s1, k1, 0);
			sleep_ms(100);
			t0 = now_ms();
			bg_start(&bi, 0, 0, slot2);
			sleep_ms(400);
			ctl_clear("hsm1");
			pthread_join(bi.th, NULL);
			pthread_join(bg.th, NULL);
			expect(bi.rv == CKR_OK && bi.done - t0 >= 350,
			       "module_lock=yes: C_GetTokenInfo on hsm2 waited %.0f ms behind hung "
			       "hsm1 (0x%lx)",
			       bi.done - t0, bi.rv);
			expect(bg.rv == CKR_OK,
			       "the hung signature finished once hsm1 answered "
			       "(0x%lx)",
			       bg.rv);
		}
		MUST(f->C_Finalize(NULL));
	}
	return failures != 0;
}

/* ---------------------------------------------------------------- crash */

/* In a child process: initialise, log in to `label`, sign `data` (or only ask the length of
 * the signature). Returns the child's wait status. */
static int
sign_in_child(const char *label, const CK_BYTE *data, CK_ULONG len, int query, double *ms)
{
	CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};
	CK_BYTE sig[512];
	CK_ULONG siglen = sizeof(sig);
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE k;
	double t0 = now_ms();
	pid_t pid;
	int status = -1;

	fflush(NULL);
	if ((pid = fork()) < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		CK_RV rv;

		if (init("scale=0.2") != CKR_OK)
			_exit(3);
		s = open_login(slot_of(label));
		k = find_key(s, CKO_PRIVATE_KEY, 1);
		if (f->C_SignInit(s, &mech, k) != CKR_OK)
			_exit(4);
		rv = f->C_Sign(s, (CK_BYTE_PTR)data, len, query ? NULL : sig, &siglen);
		f->C_Finalize(NULL);
		_exit(rv == CKR_OK ? 0 : 5);
	}
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid: %s", strerror(errno));
	*ms = now_ms() - t0;
	return status;
}

static int
cmd_crash(void)
{
	CK_BYTE plain[51], marked[51];
	double ms;
	int st;

	memset(plain, 0x5a, sizeof(plain));
	memset(marked, 0x5a, sizeof(marked));
	marked[0] = 0xde;
	marked[1] = 0xad;

	ctl_write("hsm1", "crash\n");
	st = sign_in_child("hsm1", plain, sizeof(plain), 0, &ms);
	expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
	       "crash: the process signing on hsm1 was killed by SIGABRT (status 0x%x)", st);
	st = sign_in_child("hsm1", plain, sizeof(plain), 1, &ms);
	expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "crash: a length query is answered without the device (status 0x%x)", st);
	st = sign_in_child("hsm2", plain, sizeof(plain), 0, &ms);
	expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "crash on hsm1: a process signing on hsm2 is unaffected (status 0x%x)", st);

	ctl_write("hsm1", "crash-on dead\n");
	st = sign_in_child("hsm1", plain, sizeof(plain), 0, &ms);
	expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	       "crash-on dead: other input signs (status 0x%x)", st);
	st = sign_in_child("hsm1", marked, sizeof(marked), 0, &ms);
	expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
	       "crash-on dead: input starting with de ad aborts the process (status 0x%x)", st);
	ctl_clear("hsm1");
	st = sign_in_child("hsm1", marked, sizeof(marked), 0, &ms);
	expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cleared: the same input signs (status 0x%x)",
	       st);
	return failures != 0;
}

static int
cmd_signtime(const char *label, int n, const char *params)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE k;
	double m;

	MUST(init(params));
	s = open_login(slot_of(label));
	k = find_key(s, CKO_PRIVATE_KEY, 1);
	m = sign_median(s, k, 0, n, NULL, NULL);
	printf("%.2f\n", m);
	MUST(f->C_Finalize(NULL));
	return 0;
}

int
main(int argc, char **argv)
{
	CK_RV rv;

	if (argc < 3) {
		fprintf(stderr, "usage: see the comment at the top of sim_client.c\n");
		return 2;
	}
	if (load_module(argv[1], &f) != 0)
		return 2;
	ctl_dir = getenv("P11SIM_CONTROL_DIR");
	if (strcmp(argv[2], "init") == 0) {
		rv = init(argc > 3 ? argv[3] : NULL);
		printf("0x%lx\n", rv);
		if (rv == CKR_OK)
			f->C_Finalize(NULL);
		return 0;
	}
	if (strcmp(argv[2], "signtime") == 0 && argc >= 5)
		return cmd_signtime(argv[3], atoi(argv[4]), argc > 5 ? argv[5] : NULL);
	if (strcmp(argv[2], "timing") == 0)
		return cmd_timing();
	if (strcmp(argv[2], "serial") == 0)
		return cmd_serial();
	if (strcmp(argv[2], "modlock") == 0 && ctl_dir != NULL)
		return cmd_modlock();
	if (strcmp(argv[2], "retries") == 0 && argc == 4 && strcmp(argv[3], "memory") == 0)
		return cmd_retries(0);
	if (ctl_dir == NULL) {
		fprintf(stderr, "P11SIM_CONTROL_DIR is not set\n");
		return 2;
	}
	if (strcmp(argv[2], "removed") == 0)
		return cmd_removed();
	if (strcmp(argv[2], "hang") == 0)
		return cmd_hang();
	if (strcmp(argv[2], "error") == 0)
		return cmd_error();
	if (strcmp(argv[2], "slow") == 0)
		return cmd_slow();
	if (strcmp(argv[2], "pinlocked") == 0)
		return cmd_pinlocked();
	if (strcmp(argv[2], "crash") == 0)
		return cmd_crash();
	if (strcmp(argv[2], "retries") == 0 && argc == 4 && strcmp(argv[3], "file") == 0)
		return cmd_retries(1);
	fprintf(stderr, "unknown command %s\n", argv[2]);
	return 2;
}
