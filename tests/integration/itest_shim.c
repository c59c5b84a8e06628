/*
 * What the shim checks in what an application and the daemon's socket give it (issue 13),
 * against a real p11muxd (tests/integration/it_shim.sh):
 *   itest_shim SHIM initargs SOCKET
 *       C_Initialize's pReserved: (void *)1, a PROT_NONE page, unterminated or overlong
 *       memory and text that is not key=value get CKR_ARGUMENTS_BAD, with no crash and
 *       nothing initialised; "socket=SOCKET" (also quoted, and ending on the last byte
 *       before a PROT_NONE page) works. Once more in a child whose seccomp filter makes
 *       process_vm_readv fail with EPERM, as a sandbox's allow-list may.
 *   itest_shim SHIM slots [PARAMETERS]
 *       C_GetSlotList twice with the socket of $P11MUX_SOCKET (C_Initialize's parameter string
 *       PARAMETERS, when given). Exit 0 when it listed slots,
 *       3 when both calls failed as they do when no daemon is there (CKR_FUNCTION_FAILED, what
 *       C_GetSlotList makes of the shim's CKR_DEVICE_ERROR), 1 otherwise.
 *   itest_shim SHIM oaep RSA_KEY_PEM
 *       RSA-OAEP through the pool where the application unmaps its CK_RSA_PKCS_OAEP_PARAMS
 *       and label between C_*Init and C_Encrypt/C_Decrypt: the shim must have kept copies
 *       (see cmd_oaep).
 * The PIN is taken from $P11MUX_PIN. Prints "ok: ..." per check, "FAIL: ..." on a failure;
 * exits 0 when every check passed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <p11-kit/pkcs11.h>

#include "testclient.h"

static CK_FUNCTION_LIST *f;
static size_t page;

/* Two pages: the first readable and writable, the second PROT_NONE. */
static uint8_t *
guarded_pages(void)
{
	uint8_t *p =
	        mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || mprotect(p + page, page, PROT_NONE) != 0) {
		perror("mmap");
		exit(2);
	}
	return p;
}

static CK_RV
init_with(const void *reserved)
{
	CK_C_INITIALIZE_ARGS args = {0};

	args.flags = CKF_OS_LOCKING_OK;
	args.pReserved = (void *)reserved;
	return f->C_Initialize(&args);
}

/* C_Initialize with reserved must fail with CKR_ARGUMENTS_BAD and leave nothing initialised. */
static void
expect_bad(const void *reserved, const char *what)
{
	CK_ULONG n = 0;
	CK_RV rv = init_with(reserved), rv2 = f->C_GetSlotList(CK_FALSE, NULL, &n);

	expect(rv == CKR_ARGUMENTS_BAD && rv2 == CKR_CRYPTOKI_NOT_INITIALIZED,
	       "pReserved %s: C_Initialize 0x%lx (want CKR_ARGUMENTS_BAD), then C_GetSlotList "
	       "0x%lx",
	       what, rv, rv2);
}

/* C_Initialize with reserved must succeed and reach the pool. */
static void
expect_good(const void *reserved, const char *what)
{
	CK_ULONG n = 0;
	CK_RV rv = init_with(reserved), rv2 = CKR_GENERAL_ERROR;

	if (rv == CKR_OK) {
		rv2 = f->C_GetSlotList(CK_TRUE, NULL, &n);
		f->C_Finalize(NULL);
	}
	expect(rv == CKR_OK && rv2 == CKR_OK && n >= 1,
	       "pReserved %s: C_Initialize 0x%lx, C_GetSlotList 0x%lx with %lu slots", what, rv,
	       rv2, n);
}

/* A string placed so that its NUL is the last byte before a PROT_NONE page. */
static const char *
at_page_end(const char *s)
{
	uint8_t *p = guarded_pages();
	size_t len = strlen(s) + 1;

	memcpy(p + page - len, s, len);
	return (const char *)(p + page - len);
}

static void
initargs_bad(void)
{
	uint8_t *g = guarded_pages(), *big;

	expect_bad((void *)1, "(void *)1");
	expect_bad(g + page, "in a PROT_NONE page");
	memset(g, 'a', page);
	expect_bad(g, "of a page without NUL before a PROT_NONE page");
	expect_bad(g + page - 1, "one byte before a PROT_NONE page, no NUL");
	expect_bad((void *)(uintptr_t)-8, "at the top of the address space");
	if ((big = malloc(3 * 4096)) == NULL)
		exit(2);
	memset(big, 'a', 3 * 4096);
	big[3 * 4096 - 1] = '\0';
	expect_bad(big, "readable, 12 KiB long (over the 4 KiB bound)");
	free(big);
	expect_bad("\x01\x02\x03", "binary bytes");
	expect_bad("socket", "a word without '='");
	expect_bad("socket=\"/run/p11mux/p11mux.sock", "with an unterminated quote");
	expect_bad("=x", "with an empty key");
	expect_bad("socket=/x\x1b[2J", "with a control character");
}

static void
initargs_good(const char *sock)
{
	char s[512];

	snprintf(s, sizeof(s), "socket=%s", sock);
	expect_good(s, s);
	expect_good(at_page_end(s), "socket=... ending just before a PROT_NONE page");
	snprintf(s, sizeof(s), " reconnect_ms=0\tsocket=\"%s\"\nfuture_key=1 ", sock);
	expect_good(s, "with blanks, a quoted value and an unknown key");
	snprintf(s, sizeof(s), "reconnect_ms=100;socket='%s'", sock);
	expect_good(s, "with ';' and a single-quoted value");
	snprintf(s, sizeof(s), "socket={%s}", sock);
	expect_good(s, "with a value in NSS's {} quotes");
}

/* Makes process_vm_readv fail with EPERM in this process, as a seccomp allow-list without it
 * does. A test on the build machine: the filter does not check the architecture. */
static int
forbid_process_vm_readv(void)
{
	struct sock_filter filter[] = {
	        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 0, 1),
	        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};
	struct iovec a, b;
	char x = 0, y;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return -1;
	a = (struct iovec){&y, 1};
	b = (struct iovec){&x, 1};
	return syscall(__NR_process_vm_readv, getpid(), &a, 1, &b, 1, 0) < 0 && errno == EPERM ? 0
	                                                                                       : -1;
}

static int
cmd_initargs(const char *sock)
{
	char s[512];
	pid_t pid;
	int status;

	initargs_bad();
	initargs_good(sock);
	if ((pid = fork()) == 0) {
		if (forbid_process_vm_readv() != 0) {
			expect(0, "seccomp filter against process_vm_readv");
			_exit(1);
		}
		expect(1, "process_vm_readv now fails with EPERM (seccomp)");
		failures = 0;
		expect_bad((void *)1, "(void *)1, without process_vm_readv");
		expect_bad(guarded_pages() + page, "in a PROT_NONE page, without process_vm_readv");
		snprintf(s, sizeof(s), "socket=%s", sock);
		expect_good(at_page_end(s), "socket=... before a PROT_NONE page, without "
		                            "process_vm_readv");
		_exit(failures == 0 ? 0 : 1);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		expect(0, "child without process_vm_readv: status 0x%x", status);
	return failures == 0 ? 0 : 1;
}

static int
cmd_slots(const char *params)
{
	CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
	CK_ULONG n = 0;
	CK_RV rv, rv2;

	args.pReserved = (void *)params;
	if ((rv = f->C_Initialize(params != NULL ? &args : NULL)) != CKR_OK) {
		fprintf(stderr, "C_Initialize: 0x%lx\n", rv);
		return 1;
	}
	rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
	rv2 = f->C_GetSlotList(CK_TRUE, NULL, &n);
	f->C_Finalize(NULL);
	printf("C_GetSlotList: 0x%lx, then 0x%lx, %lu slots\n", rv, rv2, n);
	if (rv == CKR_OK && rv2 == CKR_OK && n >= 1)
		return 0;
	return rv == CKR_FUNCTION_FAILED && rv2 == CKR_FUNCTION_FAILED ? 3 : 1;
}

#define CHECK(call)                                                                                \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != CKR_OK) {                                                               \
			expect(0, "%s: 0x%lx", #call, rv_);                                        \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

static CK_SESSION_HANDLE session;

static int
login_and_find(CK_OBJECT_HANDLE *priv, CK_OBJECT_HANDLE *pub)
{
	CK_OBJECT_CLASS cls[2] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
	const char *pin = getenv("P11MUX_PIN");
	CK_OBJECT_HANDLE *out[2] = {priv, pub};
	CK_BYTE id = 1;
	CK_SLOT_ID slot;
	CK_ULONG n = 1;
	int i;

	CHECK(f->C_Initialize(NULL));
	CHECK(f->C_GetSlotList(CK_TRUE, &slot, &n));
	CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
	CHECK(f->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
	for (i = 0; i < 2; i++) {
		CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls[i], sizeof(cls[i])}, {CKA_ID, &id, 1}};

		CHECK(f->C_FindObjectsInit(session, t, 2));
		CHECK(f->C_FindObjects(session, out[i], 1, &n));
		CHECK(f->C_FindObjectsFinal(session));
		if (n != 1)
			return -1;
	}
	return 0;
}

/* A mechanism for RSA-OAEP (SHA-1, as SoftHSM 2.6 offers it) with label, the parameter and
 * the label in one mapped page that the caller unmaps. */
static CK_MECHANISM *
oaep_mech(const char *label)
{
	uint8_t *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CK_RSA_PKCS_OAEP_PARAMS *params;
	CK_MECHANISM *mech;

	if (p == MAP_FAILED)
		exit(2);
	mech = (CK_MECHANISM *)p;
	params = (CK_RSA_PKCS_OAEP_PARAMS *)(p + 64);
	memcpy(p + 128, label, strlen(label));
	*params = (CK_RSA_PKCS_OAEP_PARAMS){CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, p + 128,
	                                    strlen(label)};
	*mech = (CK_MECHANISM){CKM_RSA_PKCS_OAEP, params, sizeof(*params)};
	return mech;
}

/* Undoes oaep_mech, first scribbling over it, so that a shim that kept a pointer into it
 * crashes (or sends a wrong label) rather than pass. */
static void
unmap_mech(CK_MECHANISM *mech)
{
	memset(mech, 0x5a, page);
	munmap(mech, page);
}

/* RSA-OAEP with OpenSSL: encrypt (enc) or decrypt with key under label. */
static int
ossl_oaep(EVP_PKEY *key, int enc, const char *label, const uint8_t *in, size_t inlen, uint8_t *out,
          size_t *outlen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
	char *l = strdup(label); /* set0 takes ownership */
	int ok;

	ok = c != NULL && l != NULL &&
	     (enc ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) == 1 &&
	     EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
	     EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha1()) == 1 &&
	     EVP_PKEY_CTX_set0_rsa_oaep_label(c, l, (int)strlen(label)) == 1;
	if (ok)
		l = NULL;
	ok = ok && (enc ? EVP_PKEY_encrypt(c, out, outlen, in, inlen)
	                : EVP_PKEY_decrypt(c, out, outlen, in, inlen)) == 1;
	free(l);
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -1;
}

/* The key pair for the OAEP checks: OpenSSL's copy and the pool's handles. */
struct oaep_keys {
	EVP_PKEY *key;
	CK_OBJECT_HANDLE priv, pub;
};

/* C_EncryptInit with label, its page unmapped or not before C_Encrypt (a shim that kept a
 * pointer into it crashes). Returns C_Encrypt's CK_RV; CKR_OK only when OpenSSL decrypts the
 * result with that label. */
static CK_RV
oaep_encrypt(const struct oaep_keys *k, const char *label, int unmap)
{
	const uint8_t msg[] = "a secret that travels with a label";
	CK_MECHANISM *mech = oaep_mech(label);
	uint8_t ct[512], pt[512];
	CK_ULONG ctlen = sizeof(ct);
	size_t ptlen = sizeof(pt);
	CK_RV rv;

	if ((rv = f->C_EncryptInit(session, mech, k->pub)) != CKR_OK)
		return rv;
	if (unmap)
		unmap_mech(mech);
	if ((rv = f->C_Encrypt(session, (CK_BYTE_PTR)msg, sizeof(msg), ct, &ctlen)) != CKR_OK)
		return rv;
	if (ossl_oaep(k->key, 0, label, ct, ctlen, pt, &ptlen) != 0 || ptlen != sizeof(msg) ||
	    memcmp(pt, msg, ptlen) != 0)
		return CKR_GENERAL_ERROR;
	return CKR_OK;
}

/* The same for C_DecryptInit and C_Decrypt of what OpenSSL encrypted with label. CKR_OK
 * only when the plaintext comes back. */
static CK_RV
oaep_decrypt(const struct oaep_keys *k, const char *label, int unmap)
{
	const uint8_t msg[] = "a secret that travels with a label";
	CK_MECHANISM *mech = oaep_mech(label);
	uint8_t ct[512], pt[512];
	CK_ULONG ptlen = sizeof(pt);
	size_t ctlen = sizeof(ct);
	CK_RV rv;

	if (ossl_oaep(k->key, 1, label, msg, sizeof(msg), ct, &ctlen) != 0)
		return CKR_GENERAL_ERROR;
	if ((rv = f->C_DecryptInit(session, mech, k->priv)) != CKR_OK)
		return rv;
	if (unmap)
		unmap_mech(mech);
	if ((rv = f->C_Decrypt(session, ct, ctlen, pt, &ptlen)) != CKR_OK)
		return rv;
	return ptlen == sizeof(msg) && memcmp(pt, msg, ptlen) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}

/* RSA-OAEP through the pool with the application's parameter gone after C_*Init. SoftHSM 2.6
 * takes only an empty label: C_EncryptInit refuses any other (CKR_ARGUMENTS_BAD), and
 * C_Decrypt ignores it and then fails on the padding (CKR_GENERAL_ERROR, which today's pool
 * takes for a failing member, so it is not tried). With a label, the shim must still read its
 * own copy: not crash, and get the same answer as when the label stays mapped; where the
 * token takes labels, the result is checked with OpenSSL. */
static int
cmd_oaep(const char *keypath)
{
	const char *label = "p11mux label";
	struct oaep_keys k;
	CK_RV e, d, e0;
	FILE *fp;

	if ((fp = fopen(keypath, "r")) == NULL ||
	    (k.key = PEM_read_PrivateKey(fp, NULL, NULL, NULL)) == NULL)
		return 2;
	fclose(fp);
	if (login_and_find(&k.priv, &k.pub) != 0)
		return 1;
	e = oaep_encrypt(&k, "", 1);
	d = oaep_decrypt(&k, "", 1);
	expect(e == CKR_OK && d == CKR_OK,
	       "RSA-OAEP, empty label, parameter unmapped after C_*Init: C_Encrypt 0x%lx, "
	       "C_Decrypt 0x%lx, both checked with OpenSSL",
	       e, d);
	e0 = oaep_encrypt(&k, label, 0);
	e = oaep_encrypt(&k, label, 1);
	expect(e == e0 && (e == CKR_OK || e == CKR_ARGUMENTS_BAD),
	       "RSA-OAEP, label \"%s\" unmapped after C_EncryptInit: C_Encrypt 0x%lx, as with "
	       "the label mapped (0x%lx; CKR_OK is checked with OpenSSL)",
	       label, e, e0);
	f->C_Finalize(NULL);
	EVP_PKEY_free(k.key);
	return failures == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	if (argc < 3) {
		fprintf(stderr, "usage: see the comment at the top of itest_shim.c\n");
		return 2;
	}
	if (load_module(argv[1], &f) != 0)
		return 2;
	if (strcmp(argv[2], "initargs") == 0 && argc == 4)
		return cmd_initargs(argv[3]);
	if (strcmp(argv[2], "slots") == 0 && argc == 4)
		return cmd_slots(argv[3]);
	if (strcmp(argv[2], "slots") == 0 && argc == 3)
		return cmd_slots(NULL);
	if (strcmp(argv[2], "oaep") == 0 && argc == 4 && getenv("P11MUX_PIN") != NULL)
		return cmd_oaep(argv[3]);
	fprintf(stderr, "usage: see the comment at the top of itest_shim.c\n");
	return 2;
}
