/*
 * An application of the pool for the integration tests, driving p11mux-pkcs11.so directly:
 *   itest_client SHIM threads N ITERATIONS RSA_PUB_PEM EC_PUB_PEM
 *       N threads sign at once (RSA PKCS#1 with SHA-256 and ECDSA, NSS's sequence of
 *       OpenSession/SignInit/Sign/CloseSession), each signature checked with OpenSSL.
 *       With $ITEST_UNTIL set to a file name, each thread goes on signing past ITERATIONS
 *       until that file exists. With $ITEST_PROGRESS set to a file name, "ops N failed M"
 *       is written to it every second (and at the end); each failure is also reported on
 *       stderr with its UTC time, to set beside the daemon's log.
 *   itest_client SHIM oaep CIPHERTEXT_FILE PLAINTEXT_FILE
 *       decrypts with RSA-OAEP (SHA-1, MGF1-SHA-1: all SoftHSM 2.6 offers; empty label as
 *       CKZ_DATA_SPECIFIED), which pkcs11-tool cannot ask of SoftHSM.
 *   itest_client SHIM guess N
 *       N logins with $P11MUX_PIN (a wrong one) on one session; prints how many were
 *       answered CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_OK and anything else.
 *   itest_client SHIM provoke N
 *       N RSA-PKCS decryptions of random bytes (bad padding) and N ECDSA signatures of data
 *       of a wrong length (1 to 200 bytes, never 32) that starts with ba d0 ba d0 ba d0 (the
 * simulator's reject-on fault can refuse it); prints how often each answer came. itest_client SHIM
 * fork RSA_PUB_PEM signs, forks; the child must get CKR_CRYPTOKI_NOT_INITIALIZED until it calls
 *       C_Initialize again, then signs with the key handle its parent found.
 *   itest_client SHIM withdraw HEXID FILE
 *       finds private key HEXID and signs with it, prints "ready", waits for FILE to exist
 *       (meanwhile the key is deleted from every member and the pool rescanned), then checks
 *       that signing with the handle it holds fails with CKR_KEY_HANDLE_INVALID (no crash),
 *       that a search no longer finds the key, and that its cached attributes went with it
 *       (CKR_OBJECT_HANDLE_INVALID).
 * The PIN is taken from $P11MUX_PIN. Exit 0 when every check passed.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <p11-kit/pkcs11.h>

#include "testclient.h"

static CK_FUNCTION_LIST *f;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE rsa_key, ec_key;
static EVP_PKEY *rsa_pub, *ec_pub;
static int iterations;
static atomic_long ops_done, ops_failed; /* signatures made and checked, and failed */
static atomic_int finished;

#define CHECK(call)                                                                                \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != CKR_OK) {                                                               \
			fprintf(stderr, "%s:%d: %s: 0x%lx\n", __FILE__, __LINE__, #call, rv_);     \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

static EVP_PKEY *
load_pub(const char *path)
{
	FILE *fp = fopen(path, "r");
	EVP_PKEY *k;

	if (fp == NULL)
		return NULL;
	k = PEM_read_PUBKEY(fp, NULL, NULL, NULL);
	fclose(fp);
	return k;
}

static int
init_and_login(void)
{
	CK_C_INITIALIZE_ARGS args = {0};
	CK_SESSION_HANDLE s;
	CK_ULONG n = 1;
	const char *pin = getenv("P11MUX_PIN");

	args.flags = CKF_OS_LOCKING_OK;
	CHECK(f->C_Initialize(&args));
	CHECK(f->C_GetSlotList(CK_TRUE, &slot, &n));
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	CHECK(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
	/* This session stays open: closing the last one would log the application out. */
	return 0;
}

static int
find_key(CK_BYTE id, CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, &id, 1}};
	CK_SESSION_HANDLE s;
	CK_ULONG n = 0;

	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	CHECK(f->C_FindObjectsInit(s, t, 2));
	CHECK(f->C_FindObjects(s, h, 1, &n));
	CHECK(f->C_FindObjectsFinal(s));
	CHECK(f->C_CloseSession(s));
	return n == 1 ? 0 : -1;
}

/* One signature the way NSS makes it, then checked with OpenSSL. */
static int
sign_and_verify(int ec, const unsigned char *msg, size_t len)
{
	CK_MECHANISM mech = {ec ? CKM_ECDSA : CKM_SHA256_RSA_PKCS, NULL, 0};
	unsigned char sig[512], hash[32], der[128], *p = der;
	CK_ULONG siglen = sizeof(sig);
	CK_SESSION_HANDLE s;
	EVP_MD_CTX *md;
	EVP_PKEY_CTX *pc;
	unsigned int hlen = 0;
	ECDSA_SIG *es;
	int ok, derlen;

	EVP_Digest(msg, len, hash, &hlen, EVP_sha256(), NULL);
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	CHECK(f->C_SignInit(s, &mech, ec ? ec_key : rsa_key));
	if (ec)
		CHECK(f->C_Sign(s, hash, sizeof(hash), sig, &siglen));
	else
		CHECK(f->C_Sign(s, (CK_BYTE_PTR)msg, len, sig, &siglen));
	CHECK(f->C_CloseSession(s));
	if (!ec) {
		md = EVP_MD_CTX_new();
		ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, rsa_pub) == 1 &&
		     EVP_DigestVerify(md, sig, siglen, msg, len) == 1;
		EVP_MD_CTX_free(md);
		return ok ? 0 : -1;
	}
	if (siglen != 64)
		return -1;
	es = ECDSA_SIG_new();
	ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
	derlen = i2d_ECDSA_SIG(es, &p);
	ECDSA_SIG_free(es);
	pc = EVP_PKEY_CTX_new(ec_pub, NULL);
	ok = EVP_PKEY_verify_init(pc) == 1 &&
	     EVP_PKEY_verify(pc, der, (size_t)derlen, hash, sizeof(hash)) == 1;
	EVP_PKEY_CTX_free(pc);
	return ok ? 0 : -1;
}

/* A failed signature, with the time in the daemon log's format. */
static void
report_failure(long id, int i)
{
	struct timespec now;
	struct tm tm;
	char ts[32];

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ itest_client: thread %ld signature %d failed\n", ts,
	        now.tv_nsec / 1000000, id, i);
}

static void *
worker(void *arg)
{
	long id = (long)arg, bad = 0;
	const char *until = getenv("ITEST_UNTIL");
	unsigned char msg[64];
	int i;

	for (i = 0; i < iterations || (until != NULL && access(until, F_OK) != 0); i++) {
		snprintf((char *)msg, sizeof(msg), "thread %ld message %d", id, i);
		if (sign_and_verify((int)((id + i) & 1), msg, strlen((char *)msg)) != 0) {
			bad++;
			atomic_fetch_add(&ops_failed, 1);
			report_failure(id, i);
		}
		atomic_fetch_add(&ops_done, 1);
	}
	return (void *)bad;
}

/* Writes "ops N failed M" to path (through a temporary file: a reader sees a whole line). */
static void
write_progress(const char *path)
{
	char tmp[4096];
	FILE *fp;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fp = fopen(tmp, "w")) == NULL)
		return;
	fprintf(fp, "ops %ld failed %ld\n", atomic_load(&ops_done), atomic_load(&ops_failed));
	if (fclose(fp) == 0)
		rename(tmp, path);
}

static void *
progress(void *arg)
{
	const char *path = arg;

	while (!atomic_load(&finished)) {
		write_progress(path);
		sleep(1);
	}
	return NULL;
}

static int
cmd_threads(int n)
{
	const char *path = getenv("ITEST_PROGRESS");
	pthread_t t[256], pt;
	long i, bad = 0;
	void *r;

	if (init_and_login() != 0 || find_key(1, &rsa_key) != 0 || find_key(2, &ec_key) != 0)
		return 1;
	if (path != NULL)
		pthread_create(&pt, NULL, progress, (void *)path);
	for (i = 0; i < n; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (i = 0; i < n; i++) {
		pthread_join(t[i], &r);
		bad += (long)r;
	}
	if (path != NULL) {
		atomic_store(&finished, 1);
		pthread_join(pt, NULL);
		write_progress(path);
	}
	f->C_Finalize(NULL);
	printf("%d threads x %d%s signatures: %ld failed or did not verify\n", n, iterations,
	       getenv("ITEST_UNTIL") != NULL ? " or more" : "", bad);
	return bad == 0 ? 0 : 1;
}

static int
cmd_guess(int n)
{
	CK_C_INITIALIZE_ARGS args = {0};
	const char *pin = getenv("P11MUX_PIN");
	long incorrect = 0, locked = 0, ok = 0, other = 0;
	CK_SESSION_HANDLE s;
	CK_ULONG count = 1;
	CK_RV rv;
	int i;

	args.flags = CKF_OS_LOCKING_OK;
	CHECK(f->C_Initialize(&args));
	CHECK(f->C_GetSlotList(CK_TRUE, &slot, &count));
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	for (i = 0; i < n; i++) {
		rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
		if (rv == CKR_PIN_INCORRECT)
			incorrect++;
		else if (rv == CKR_PIN_LOCKED)
			locked++;
		else if (rv == CKR_OK && ++ok > 0)
			f->C_Logout(s);
		else
			other++;
	}
	f->C_Finalize(NULL);
	printf("incorrect %ld locked %ld ok %ld other %ld\n", incorrect, locked, ok, other);
	return 0;
}

/* Counts answer rv in a small table of (rv, count). */
static void
tally(CK_RV rv, CK_RV *seen, long *count, int *n)
{
	int i;

	for (i = 0; i < *n && seen[i] != rv; i++)
		;
	if (i == *n && *n < 16)
		seen[(*n)++] = rv;
	if (i < 16)
		count[i]++;
}

static int
cmd_provoke(int n)
{
	CK_MECHANISM rsa = {CKM_RSA_PKCS, NULL, 0}, ecdsa = {CKM_ECDSA, NULL, 0};
	unsigned char in[256], out[512];
	CK_RV seen[2][16];
	long count[2][16] = {{0}};
	int nseen[2] = {0, 0}, i, k;
	CK_SESSION_HANDLE s;
	CK_ULONG outlen, len;
	FILE *rnd = fopen("/dev/urandom", "rb");

	if (rnd == NULL || init_and_login() != 0 || find_key(1, &rsa_key) != 0 ||
	    find_key(2, &ec_key) != 0)
		return 1;
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	for (i = 0; i < n; i++) {
		if (fread(in, 1, sizeof(in), rnd) != sizeof(in))
			return 1;
		in[0] &= 0x7f; /* below the modulus: the padding is what is wrong */
		outlen = sizeof(out);
		CHECK(f->C_DecryptInit(s, &rsa, rsa_key));
		tally(f->C_Decrypt(s, in, sizeof(in), out, &outlen), seen[0], count[0], &nseen[0]);
		len = 6 + (CK_ULONG)(i % 195);
		len += len == 32;
		memcpy(in, "\xba\xd0\xba\xd0\xba\xd0", 6);
		outlen = sizeof(out);
		CHECK(f->C_SignInit(s, &ecdsa, ec_key));
		tally(f->C_Sign(s, in, len, out, &outlen), seen[1], count[1], &nseen[1]);
	}
	fclose(rnd);
	for (k = 0; k < 2; k++) {
		printf("%s:", k == 0 ? "decrypt" : "ecdsa");
		for (i = 0; i < nseen[k]; i++)
			printf(" 0x%lx=%ld", seen[k][i], count[k][i]);
		printf("\n");
	}
	f->C_Finalize(NULL);
	return 0;
}

static int
cmd_fork(void)
{
	const unsigned char msg[] = "before fork";
	CK_ULONG n = 1;
	CK_RV rv;
	pid_t pid;
	int status;

	if (init_and_login() != 0 || find_key(1, &rsa_key) != 0 ||
	    sign_and_verify(0, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "parent: could not sign\n");
		return 1;
	}
	if ((pid = fork()) == 0) {
		rv = f->C_GetSlotList(CK_TRUE, &slot, &n);
		if (rv != CKR_CRYPTOKI_NOT_INITIALIZED) {
			fprintf(stderr,
			        "child: C_GetSlotList gave 0x%lx, not "
			        "CKR_CRYPTOKI_NOT_INITIALIZED\n",
			        rv);
			_exit(1);
		}
		/* As NSS and mod_nss do in a child: initialise again, log in, use the key
		 * handle found before the fork (handles are stable in the pool). */
		if (init_and_login() != 0) {
			fprintf(stderr, "child: re-initialisation failed\n");
			_exit(1);
		}
		if (sign_and_verify(0, (const unsigned char *)"in child", 8) != 0) {
			fprintf(stderr, "child: signing with the parent's key handle failed\n");
			_exit(1);
		}
		f->C_Finalize(NULL);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	/* The parent's connections were not disturbed by the child. */
	if (sign_and_verify(0, (const unsigned char *)"after fork", 10) != 0) {
		fprintf(stderr, "parent: signing after the fork failed\n");
		return 1;
	}
	f->C_Finalize(NULL);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 1;
	printf("fork: child re-initialised and signed; parent kept working\n");
	return 0;
}

static int
cmd_oaep(const char *in, const char *outpath)
{
	CK_RSA_PKCS_OAEP_PARAMS params = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL, 0};
	CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &params, sizeof(params)};
	unsigned char ct[512], pt[512];
	CK_ULONG ptlen = sizeof(pt);
	CK_SESSION_HANDLE s;
	size_t ctlen;
	FILE *fp;

	if ((fp = fopen(in, "rb")) == NULL)
		return 2;
	ctlen = fread(ct, 1, sizeof(ct), fp);
	fclose(fp);
	if (init_and_login() != 0 || find_key(1, &rsa_key) != 0)
		return 1;
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	CHECK(f->C_DecryptInit(s, &mech, rsa_key));
	CHECK(f->C_Decrypt(s, ct, ctlen, pt, &ptlen));
	CHECK(f->C_CloseSession(s));
	f->C_Finalize(NULL);
	if ((fp = fopen(outpath, "wb")) == NULL || fwrite(pt, 1, ptlen, fp) != ptlen)
		return 1;
	fclose(fp);
	return 0;
}

/* One RSA PKCS#1 signature with key h: the first failing call's result. */
static CK_RV
sign_rv(CK_OBJECT_HANDLE h)
{
	CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
	unsigned char sig[512];
	CK_ULONG siglen = sizeof(sig);
	CK_SESSION_HANDLE s;
	CK_RV rv;

	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		return rv;
	if ((rv = f->C_SignInit(s, &mech, h)) == CKR_OK)
		rv = f->C_Sign(s, (CK_BYTE_PTR) "withdrawn?", 10, sig, &siglen);
	f->C_CloseSession(s);
	return rv;
}

static int
cmd_withdraw(const char *hexid, const char *file)
{
	CK_BYTE id = (CK_BYTE)strtoul(hexid, NULL, 16);
	char label[64];
	CK_ATTRIBUTE a = {CKA_LABEL, label, sizeof(label)};
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h, again;
	CK_RV rv;

	if (init_and_login() != 0 || find_key(id, &h) != 0) {
		fprintf(stderr, "withdraw: key %s not found\n", hexid);
		return 1;
	}
	CHECK(sign_rv(h));
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	CHECK(f->C_GetAttributeValue(s, h, &a, 1));
	printf("ready\n");
	fflush(stdout);
	while (access(file, F_OK) != 0)
		usleep(20000);
	if ((rv = sign_rv(h)) != CKR_KEY_HANDLE_INVALID) {
		fprintf(stderr, "withdraw: signing with the withdrawn key: 0x%lx\n", rv);
		return 1;
	}
	if (find_key(id, &again) == 0) {
		fprintf(stderr, "withdraw: the withdrawn key is still found\n");
		return 1;
	}
	a.ulValueLen = sizeof(label);
	if ((rv = f->C_GetAttributeValue(s, h, &a, 1)) != CKR_OBJECT_HANDLE_INVALID) {
		fprintf(stderr, "withdraw: its attributes after a search: 0x%lx\n", rv);
		return 1;
	}
	printf("withdrawn: sign CKR_KEY_HANDLE_INVALID, not found, attributes "
	       "CKR_OBJECT_HANDLE_INVALID\n");
	CHECK(f->C_CloseSession(s));
	CHECK(f->C_Finalize(NULL));
	return 0;
}

int
main(int argc, char **argv)
{

	if (argc < 4 || getenv("P11MUX_PIN") == NULL) {
		fprintf(stderr, "usage: see the comment at the top of itest_client.c\n");
		return 2;
	}
	if (load_module(argv[1], &f) != 0)
		return 2;
	if (strcmp(argv[2], "threads") == 0 && argc == 7) {
		iterations = atoi(argv[4]);
		rsa_pub = load_pub(argv[5]);
		ec_pub = load_pub(argv[6]);
		if (rsa_pub == NULL || ec_pub == NULL || atoi(argv[3]) < 1 || atoi(argv[3]) > 256)
			return 2;
		return cmd_threads(atoi(argv[3]));
	}
	if (strcmp(argv[2], "oaep") == 0 && argc == 5)
		return cmd_oaep(argv[3], argv[4]);
	if (strcmp(argv[2], "provoke") == 0 && atoi(argv[3]) > 0)
		return cmd_provoke(atoi(argv[3]));
	if (strcmp(argv[2], "guess") == 0 && atoi(argv[3]) > 0)
		return cmd_guess(atoi(argv[3]));
	if (strcmp(argv[2], "withdraw") == 0 && argc == 5)
		return cmd_withdraw(argv[3], argv[4]);
	if (strcmp(argv[2], "fork") == 0) {
		if ((rsa_pub = load_pub(argv[3])) == NULL)
			return 2;
		return cmd_fork();
	}
	return 2;
}
