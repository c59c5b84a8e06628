/*
 * An application of the pool that makes session objects, for it_session_objects:
 *   itest_objects SHIM hold N
 *       logs in, makes N session AES keys (each encrypts once), prints "made K" (and the
 *       CK_RV that stopped it, if any: "refused CKR_..."), then "ready", and waits until
 *       killed, or for a line on standard input: then it calls C_Finalize and prints
 *       "finalized".
 *   itest_objects SHIM fault
 *       logs in, makes a session AES key and encrypts with it, prints "ready", and waits for a
 *       line on standard input (the test takes the key's member away meanwhile); then prints
 *       what the encryption that was initialised before gives ("inflight CKR_..."), what a new
 *       C_EncryptInit with the key gives ("again CKR_..."), what C_GetAttributeValue of it
 *       gives ("attribute CKR_..."), and what a signature with the pool's token RSA key gives
 *       ("token CKR_...").
 *   itest_objects SHIM hostile
 *       templates the daemon must refuse before a device sees them, one line each, "NAME
 *       CKR_...": an attribute array (pointers), a vendor attribute, CKA_TOKEN twice (false,
 *       then true), CKA_ALWAYS_AUTHENTICATE true, a CK_BBOOL of 4 bytes.
 * The PIN is taken from $P11MUX_PIN. Exit 0 when it got as far as it was asked to.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *f;

static const char *
rv_name(CK_RV rv)
{
	static char buf[32];

	switch (rv) {
	case CKR_OK:
		return "CKR_OK";
	case CKR_DEVICE_MEMORY:
		return "CKR_DEVICE_MEMORY";
	case CKR_DEVICE_REMOVED:
		return "CKR_DEVICE_REMOVED";
	case CKR_DEVICE_ERROR:
		return "CKR_DEVICE_ERROR";
	case CKR_KEY_HANDLE_INVALID:
		return "CKR_KEY_HANDLE_INVALID";
	case CKR_OBJECT_HANDLE_INVALID:
		return "CKR_OBJECT_HANDLE_INVALID";
	case CKR_SESSION_HANDLE_INVALID:
		return "CKR_SESSION_HANDLE_INVALID";
	case CKR_OPERATION_NOT_INITIALIZED:
		return "CKR_OPERATION_NOT_INITIALIZED";
	case CKR_ATTRIBUTE_TYPE_INVALID:
		return "CKR_ATTRIBUTE_TYPE_INVALID";
	case CKR_ATTRIBUTE_VALUE_INVALID:
		return "CKR_ATTRIBUTE_VALUE_INVALID";
	case CKR_TEMPLATE_INCONSISTENT:
		return "CKR_TEMPLATE_INCONSISTENT";
	default:
		snprintf(buf, sizeof(buf), "0x%lx", rv);
		return buf;
	}
}

#define MUST(call)                                                                                 \
	do {                                                                                       \
		CK_RV rv_ = (call);                                                                \
		if (rv_ != CKR_OK) {                                                               \
			fprintf(stderr, "itest_objects: %s: %s\n", #call, rv_name(rv_));           \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static CK_SESSION_HANDLE
setup(const char *shim)
{
	CK_C_GetFunctionList gfl;
	CK_SLOT_ID slot;
	CK_ULONG n = 1;
	CK_SESSION_HANDLE s;
	const char *pin = getenv("P11MUX_PIN");
	void *lib = dlopen(shim, RTLD_NOW);

	if (lib == NULL || pin == NULL ||
	    (gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) == NULL) {
		fprintf(stderr, "itest_objects: cannot load %s (or no P11MUX_PIN)\n", shim);
		exit(1);
	}
	MUST(gfl(&f));
	MUST(f->C_Initialize(NULL));
	MUST(f->C_GetSlotList(CK_TRUE, &slot, &n));
	MUST(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
	MUST(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
	return s;
}

static CK_BYTE iv[16];
static CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof(iv)};

static CK_RV
make_key(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *k)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BYTE value[16] = "itest aes key 16";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	                    {CKA_TOKEN, &no, sizeof(no)},
	                    {CKA_VALUE, value, sizeof(value)},
	                    {CKA_ENCRYPT, &yes, sizeof(yes)}};

	return f->C_CreateObject(s, t, 5, k);
}

static CK_RV
encrypt(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k)
{
	CK_BYTE in[20] = "twenty bytes of data", out[64];
	CK_ULONG len = sizeof(out);
	CK_RV rv;

	if ((rv = f->C_EncryptInit(s, &cbc, k)) != CKR_OK)
		return rv;
	return f->C_Encrypt(s, in, sizeof(in), out, &len);
}

static void
wait_stdin(void)
{
	char line[64];

	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL)
		exit(0);
}

static int
hold(CK_SESSION_HANDLE s, unsigned n)
{
	CK_OBJECT_HANDLE k;
	unsigned i;
	CK_RV rv = CKR_OK;

	for (i = 0; i < n; i++) {
		if ((rv = make_key(s, &k)) != CKR_OK)
			break;
		MUST(encrypt(s, k));
	}
	printf("made %u\n", i);
	if (rv != CKR_OK)
		printf("refused %s\n", rv_name(rv));
	printf("ready\n");
	wait_stdin();
	f->C_Finalize(NULL);
	printf("finalized\n");
	return 0;
}

static int
fault(CK_SESSION_HANDLE s)
{
	CK_BYTE in[20] = "twenty bytes of data", out[512];
	CK_ULONG len = sizeof(out), sl = sizeof(out);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BYTE id = 1;
	CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, &id, 1}};
	CK_MECHANISM rsa = {CKM_SHA256_RSA_PKCS, NULL, 0};
	CK_OBJECT_HANDLE k, rsakey;
	CK_ULONG n = 0, vlen = 0;
	CK_ATTRIBUTE t = {CKA_VALUE_LEN, &vlen, sizeof(vlen)};

	MUST(make_key(s, &k));
	MUST(encrypt(s, k));
	MUST(f->C_FindObjectsInit(s, find, 2));
	MUST(f->C_FindObjects(s, &rsakey, 1, &n));
	MUST(f->C_FindObjectsFinal(s));
	MUST(f->C_EncryptInit(s, &cbc, k));
	printf("ready\n");
	wait_stdin();
	printf("inflight %s\n", rv_name(f->C_Encrypt(s, in, sizeof(in), out, &len)));
	printf("again %s\n", rv_name(encrypt(s, k)));
	printf("attribute %s\n", rv_name(f->C_GetAttributeValue(s, k, &t, 1)));
	MUST(f->C_SignInit(s, &rsa, rsakey));
	printf("token %s\n", rv_name(f->C_Sign(s, in, sizeof(in), out, &sl)));
	f->C_Finalize(NULL);
	return 0;
}

static int
hostile(CK_SESSION_HANDLE s)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG wide = 1;
	CK_BYTE value[16] = "itest aes key 16", blob[16] = {0};
	CK_ATTRIBUTE inner = {CKA_SIGN, &yes, sizeof(yes)};
	CK_ATTRIBUTE base[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                       {CKA_KEY_TYPE, &kt, sizeof(kt)},
	                       {CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_VALUE, value, sizeof(value)},
	                       {0, NULL, 0}};
	static const struct {
		const char *name;
		CK_ATTRIBUTE_TYPE type;
		int what; /* 0 the array, 1 blob, 2 CK_TRUE, 3 a 4-byte boolean */
	} bad[] = {{"array", CKA_WRAP_TEMPLATE, 0},
	           {"vendor", CKA_VENDOR_DEFINED | 7, 1},
	           {"token-twice", CKA_TOKEN, 2},
	           {"always-authenticate", CKA_ALWAYS_AUTHENTICATE, 2},
	           {"wide-boolean", CKA_ENCRYPT, 3}};
	CK_OBJECT_HANDLE k;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		base[4].type = bad[i].type;
		base[4].pValue = bad[i].what == 0   ? (void *)&inner
		                 : bad[i].what == 1 ? (void *)blob
		                 : bad[i].what == 2 ? (void *)&yes
		                                    : (void *)&wide;
		base[4].ulValueLen = bad[i].what == 0   ? sizeof(inner)
		                     : bad[i].what == 1 ? sizeof(blob)
		                     : bad[i].what == 2 ? sizeof(yes)
		                                        : 4;
		printf("%s %s\n", bad[i].name, rv_name(f->C_CreateObject(s, base, 5, &k)));
	}
	f->C_Finalize(NULL);
	return 0;
}

int
main(int argc, char **argv)
{
	CK_SESSION_HANDLE s;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[2], "hold") == 0) {
		s = setup(argv[1]);
		return hold(s, (unsigned)strtoul(argv[3], NULL, 10));
	}
	if (argc == 3 && strcmp(argv[2], "fault") == 0) {
		s = setup(argv[1]);
		return fault(s);
	}
	if (argc == 3 && strcmp(argv[2], "hostile") == 0) {
		s = setup(argv[1]);
		return hostile(s);
	}
	fprintf(stderr, "usage: itest_objects SHIM hold N | fault | hostile\n");
	return 2;
}
