/*
 * p11sim-tool - the SmartCard-HSM key lifecycle (DKEK share, wrap, unwrap) rehearsed on the
 * tokens of a PKCS#11 module, SoftHSM2 by default (docs/simulator.md, "The key lifecycle").
 *
 * A SmartCard-HSM can export a key only wrapped under its Device Key Encryption Key (DKEK),
 * which an operator loads from password-protected share files; devices that hold the same
 * DKEK can take each other's keys. Here the DKEK is an AES-256 secret key object on the token
 * (label "DKEK", sensitive, not extractable, wrap/unwrap only), and wrapping is C_WrapKey
 * with AES key wrap with padding (RFC 5649). Each command prints the sc-hsm-tool command an
 * operator runs for the same step on a real device.
 *
 * Exit status: 0 done, 1 the step failed, 2 usage.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <p11-kit/pkcs11.h>

#include "log.h" /* p11mux_rv_name */

#define PROG           "p11sim-tool"
#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define DKEK_LABEL     "DKEK"
#define DKEK_ID        "\xd0\xec"
#define DKEK_ID_LEN    2
#define DKEK_LEN       32
#define NELEM(a)       (sizeof(a) / sizeof((a)[0]))
/* PKCS#11 2.40 calls 0x210A CKM_AES_KEY_WRAP_PAD; SoftHSM implements it as RFC 5649. */
#ifndef WRAP_MECH
#define WRAP_MECH CKM_AES_KEY_WRAP_PAD
#endif

/* --- messages ---------------------------------------------------------------------- */

static void errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
errx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Prints the step a real device takes, beside ours. */
static void say_real(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
say_real(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("  on a SmartCard-HSM: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

static void
hex_print(const char *prefix, const unsigned char *p, size_t n)
{
	size_t i;

	fputs(prefix, stdout);
	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
	fputc('\n', stdout);
}

/* Parses hex (an even number of digits, at most max bytes) into out; returns the length or
 * -1. */
static int
hex_parse(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s), i;
	unsigned int byte;

	if (n == 0 || n % 2 != 0 || n / 2 > max)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(s + 2 * i, "%2x", &byte) != 1 ||
		    strspn(s + 2 * i, "0123456789abcdefABCDEF") < 2)
			return -1;
		out[i] = (unsigned char)byte;
	}
	return (int)(n / 2);
}

/* --- files ------------------------------------------------------------------------- */

/* Reads a whole file of at most max bytes into a fresh buffer (the caller frees *out). */
static int
file_read(const char *path, size_t max, unsigned char **out, size_t *len)
{
	FILE *f = NULL;
	unsigned char *p = NULL;
	size_t n;
	int r = -1;

	if ((f = fopen(path, "rb")) == NULL) {
		errx("%s: %s", path, strerror(errno));
		goto out;
	}
	if ((p = malloc(max + 1)) == NULL) {
		errx("out of memory");
		goto out;
	}
	n = fread(p, 1, max + 1, f);
	if (ferror(f) || n > max) {
		errx("%s: %s", path, ferror(f) ? "read error" : "too large");
		goto out;
	}
	*out = p;
	*len = n;
	p = NULL;
	r = 0;
out:
	free(p);
	if (f != NULL)
		fclose(f);
	return r;
}

/* Writes a file, mode 600: a regular file through a temporary name and a rename, so that
 * it appears whole; anything else (a device, a pipe) directly. */
static int
file_write(const char *path, const unsigned char *p, size_t n)
{
	char tmp[4096];
	struct stat st;
	bool direct = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
	FILE *f = NULL;
	mode_t old;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		errx("%s: name too long", path);
		return -1;
	}
	old = umask(077);
	f = fopen(direct ? path : tmp, "wb");
	umask(old);
	if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0 ||
	    (!direct && rename(tmp, path) != 0)) {
		errx("%s: %s", path, strerror(errno));
		if (f != NULL && !direct)
			remove(tmp);
		return -1;
	}
	return 0;
}

/* A password given as VALUE or env:VARIABLE (as sc-hsm-tool takes it). */
static const char *
password_value(const char *arg)
{
	const char *v;

	if (arg == NULL || strncmp(arg, "env:", 4) != 0)
		return arg;
	if ((v = getenv(arg + 4)) == NULL)
		errx("--password %s: the variable is not set", arg);
	return v;
}

/* --- the DKEK share file (docs/simulator.md, "The DKEK share file") ----------------- */

#define SHARE_MAGIC      "P11SDKEK"
#define SHARE_VERSION    1
#define SHARE_HDR_LEN    44
#define SHARE_LEN        100
#define SHARE_ITERATIONS 100000

static void
put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t
get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* AES-256-GCM under PBKDF2-HMAC-SHA256(password) over the share, with the header (bytes
 * 0..43 of f) as additional data; enc selects the direction. Returns 0, or -1 (for a
 * decryption: wrong password or damaged file). */
static int
share_crypt(unsigned char *f, const char *pwd, int enc)
{
	unsigned char key[32];
	EVP_CIPHER_CTX *c = NULL;
	int n, r = -1;

	if (!PKCS5_PBKDF2_HMAC(pwd, (int)strlen(pwd), f + 16, 16, (int)get_be32(f + 12),
	                       EVP_sha256(), sizeof(key), key))
		goto out;
	if ((c = EVP_CIPHER_CTX_new()) == NULL ||
	    !EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, f + 32, enc) ||
	    !EVP_CipherUpdate(c, NULL, &n, f, SHARE_HDR_LEN) ||
	    !EVP_CipherUpdate(c, f + 44, &n, f + 44, DKEK_LEN))
		goto out;
	if (!enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, f + 76))
		goto out;
	if (!EVP_CipherFinal_ex(c, f + 44 + n, &n))
		goto out;
	if (enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, f + 76))
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	EVP_CIPHER_CTX_free(c);
	return r;
}

/* The check value a token shows for an AES key (CKA_CHECK_VALUE): the first 3 bytes of the
 * key's encryption of a zero block. */
static int
aes_check_value(const unsigned char *key, unsigned char kcv[3])
{
	static const unsigned char zero[16];
	unsigned char out[32];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, ok;

	ok = c != NULL && EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, key, NULL) &&
	     EVP_CIPHER_CTX_set_padding(c, 0) && EVP_EncryptUpdate(c, out, &n, zero, 16);
	EVP_CIPHER_CTX_free(c);
	if (ok)
		memcpy(kcv, out, 3);
	return ok ? 0 : -1;
}

static int
cmd_dkek_share(const char *path, const char *pwd)
{
	unsigned char f[SHARE_LEN] = {0}, sum[SHA256_DIGEST_LENGTH], kcv[3];
	int r = 1;

	memcpy(f, SHARE_MAGIC, 8);
	f[8] = SHARE_VERSION;
	f[9] = pwd != NULL;
	if (RAND_bytes(f + 44, DKEK_LEN) != 1 || aes_check_value(f + 44, kcv) != 0) {
		errx("the random generator or AES failed");
		goto out;
	}
	if (pwd != NULL) {
		put_be32(f + 12, SHARE_ITERATIONS);
		if (RAND_bytes(f + 16, 16 + 12) != 1 || share_crypt(f, pwd, 1) != 0) {
			errx("encrypting the share failed");
			goto out;
		}
	}
	SHA256(f, SHARE_LEN - 8, sum);
	memcpy(f + SHARE_LEN - 8, sum, 8);
	if (file_write(path, f, sizeof(f)) != 0)
		goto out;
	printf("wrote DKEK share %s (%s)\n", path,
	       pwd != NULL ? "protected by the password" : "NOT protected by a password");
	hex_print("  DKEK check value (CKA_CHECK_VALUE of the DKEK made from this share alone): ",
	          kcv, 3);
	say_real("sc-hsm-tool --create-dkek-share %s --password PASSWORD", path);
	r = 0;
out:
	OPENSSL_cleanse(f, sizeof(f));
	return r;
}

/* Reads and checks a share file; the share goes to dkek. */
static int
share_read(const char *path, const char *pwd, unsigned char dkek[DKEK_LEN])
{
	unsigned char *f = NULL, sum[SHA256_DIGEST_LENGTH];
	size_t n;
	int r = -1;

	if (file_read(path, SHARE_LEN, &f, &n) != 0)
		return -1;
	if (n != SHARE_LEN || memcmp(f, SHARE_MAGIC, 8) != 0) {
		errx("%s is not a p11sim DKEK share file", path);
		goto out;
	}
	SHA256(f, SHARE_LEN - 8, sum);
	if (f[8] != SHARE_VERSION || f[9] > 1 || memcmp(sum, f + SHARE_LEN - 8, 8) != 0) {
		errx("%s: bad checksum or version: the file is damaged", path);
		goto out;
	}
	if (f[9] == 1 && pwd == NULL) {
		errx("%s is protected by a password: give --password", path);
		goto out;
	}
	if (f[9] == 1 && share_crypt(f, pwd, 0) != 0) {
		errx("%s: wrong password", path);
		goto out;
	}
	memcpy(dkek, f + 44, DKEK_LEN);
	r = 0;
out:
	OPENSSL_cleanse(f, SHARE_LEN);
	free(f);
	return r;
}

/* --- the module and a token -------------------------------------------------------- */

struct token {
	void *dl;
	CK_FUNCTION_LIST *f;
	CK_SESSION_HANDLE s;
	bool initialized, open;
	const char *label;
};

/* Loads the module, finds the token with this label, opens a R/W session. */
static int
token_open(struct token *t, const char *module, const char *label)
{
	CK_C_GetFunctionList get;
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	CK_RV rv;
	size_t len = strlen(label);

	t->label = label;
	if ((t->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		errx("cannot load %s: %s", module, dlerror());
		return -1;
	}
	*(void **)&get = dlsym(t->dl, "C_GetFunctionList");
	if (get == NULL || get(&t->f) != CKR_OK) {
		errx("%s: no C_GetFunctionList", module);
		return -1;
	}
	if ((rv = t->f->C_Initialize(NULL)) != CKR_OK) {
		errx("C_Initialize: %s", p11mux_rv_name(rv));
		return -1;
	}
	t->initialized = true;
	if ((rv = t->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		errx("C_GetSlotList: %s", p11mux_rv_name(rv));
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (t->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || len > sizeof(ti.label) ||
		    memcmp(ti.label, label, len) != 0)
			continue;
		if (len < sizeof(ti.label) && ti.label[len] != ' ')
			continue;
		rv = t->f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
		                         &t->s);
		if (rv != CKR_OK) {
			errx("C_OpenSession on token %s: %s", label, p11mux_rv_name(rv));
			return -1;
		}
		t->open = true;
		return 0;
	}
	errx("no token labelled \"%s\" in %s", label, module);
	return -1;
}

static int
token_login(struct token *t, CK_USER_TYPE who, const char *pin)
{
	CK_RV rv;

	rv = t->f->C_Login(t->s, who, (CK_UTF8CHAR *)pin, strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		errx("%s login on token %s: %s", who == CKU_SO ? "SO" : "user", t->label,
		     p11mux_rv_name(rv));
		return -1;
	}
	return 0;
}

static void
token_close(struct token *t)
{
	if (t->open)
		t->f->C_CloseSession(t->s);
	if (t->initialized)
		t->f->C_Finalize(NULL);
	if (t->dl != NULL)
		dlclose(t->dl);
	memset(t, 0, sizeof(*t));
}

/* Finds the one object of this class (and CKA_ID, if id != NULL); returns 0 and sets *h, 1
 * when there is none, -1 on error. */
static int
find_one(struct token *t, CK_OBJECT_CLASS cls, const void *id, size_t idlen, CK_OBJECT_HANDLE *h)
{
	CK_ATTRIBUTE tmpl[] = {
	        {CKA_CLASS, &cls, sizeof(cls)},
	        {CKA_ID, (void *)id, idlen},
	};
	CK_ULONG n = 0;
	CK_RV rv;

	rv = t->f->C_FindObjectsInit(t->s, tmpl, id != NULL ? 2 : 1);
	if (rv == CKR_OK) {
		rv = t->f->C_FindObjects(t->s, h, 1, &n);
		t->f->C_FindObjectsFinal(t->s);
	}
	if (rv != CKR_OK) {
		errx("finding objects on token %s: %s", t->label, p11mux_rv_name(rv));
		return -1;
	}
	return n == 1 ? 0 : 1;
}

/* The DKEK of the token: 0, 1 when it has none, -1 on error. */
static int
find_dkek(struct token *t, CK_OBJECT_HANDLE *h)
{
	return find_one(t, CKO_SECRET_KEY, DKEK_ID, DKEK_ID_LEN, h);
}

/* Reads one attribute into a fresh buffer (*out, the caller frees it); 1 when the object
 * has no such attribute or it cannot be read. */
static int
attr_get(struct token *t, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, unsigned char **out,
         CK_ULONG *len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	CK_RV rv;

	rv = t->f->C_GetAttributeValue(t->s, h, &a, 1);
	if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return 1;
	if ((a.pValue = malloc(a.ulValueLen + 1)) == NULL) {
		errx("out of memory");
		return -1;
	}
	if ((rv = t->f->C_GetAttributeValue(t->s, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		errx("C_GetAttributeValue: %s", p11mux_rv_name(rv));
		return -1;
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return 0;
}

/* The DKEK's check value (CKA_CHECK_VALUE, 3 bytes). */
static int
dkek_check_value(struct token *t, CK_OBJECT_HANDLE h, unsigned char kcv[3])
{
	unsigned char *v = NULL;
	CK_ULONG n;

	if (attr_get(t, h, CKA_CHECK_VALUE, &v, &n) != 0 || n != 3) {
		free(v);
		errx("token %s: cannot read the DKEK's CKA_CHECK_VALUE", t->label);
		return -1;
	}
	memcpy(kcv, v, 3);
	free(v);
	return 0;
}

/* --- init: the DKEK onto a token --------------------------------------------------- */

static int
cmd_init(struct token *t, const char *so_pin, const char *pin, const char *share, const char *pwd)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	unsigned char dkek[DKEK_LEN], kcv[3];
	CK_ATTRIBUTE tmpl[] = {
	        {CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)},
	        {CKA_TOKEN, &yes, 1},           {CKA_PRIVATE, &yes, 1},
	        {CKA_LABEL, DKEK_LABEL, 4},     {CKA_ID, DKEK_ID, DKEK_ID_LEN},
	        {CKA_VALUE, dkek, DKEK_LEN},    {CKA_WRAP, &yes, 1},
	        {CKA_UNWRAP, &yes, 1},          {CKA_ENCRYPT, &no, 1},
	        {CKA_DECRYPT, &no, 1},          {CKA_SIGN, &no, 1},
	        {CKA_VERIFY, &no, 1},           {CKA_EXTRACTABLE, &no, 1},
	        {CKA_SENSITIVE, &yes, 1},
	};
	CK_OBJECT_HANDLE h;
	CK_RV rv;
	int r = 1, found;

	if (share_read(share, pwd, dkek) != 0)
		goto out;
	/* A SmartCard-HSM is initialised with the SO PIN; SoftHSM's token exists already, so
	 * the SO PIN is only checked, then the user creates the (private) key object. */
	if (so_pin != NULL &&
	    (token_login(t, CKU_SO, so_pin) != 0 || t->f->C_Logout(t->s) != CKR_OK))
		goto out;
	if (token_login(t, CKU_USER, pin) != 0 || (found = find_dkek(t, &h)) < 0)
		goto out;
	if (found == 0) {
		errx("token %s already holds a DKEK: initialise a fresh token", t->label);
		goto out;
	}
	if ((rv = t->f->C_CreateObject(t->s, tmpl, NELEM(tmpl), &h)) != CKR_OK) {
		errx("C_CreateObject (the DKEK) on token %s: %s", t->label, p11mux_rv_name(rv));
		goto out;
	}
	if (dkek_check_value(t, h, kcv) != 0)
		goto out;
	printf("token %s: DKEK imported from %s (AES-256, label \"%s\")\n", t->label, share,
	       DKEK_LABEL);
	hex_print("  DKEK check value: ", kcv, 3);
	say_real("sc-hsm-tool --initialize --so-pin SOPIN --pin PIN --dkek-shares 1");
	say_real("sc-hsm-tool --import-dkek-share %s --password PASSWORD", share);
	r = 0;
out:
	OPENSSL_cleanse(dkek, sizeof(dkek));
	return r;
}

/* --- the wrapped-key file (docs/simulator.md, "The wrapped-key file") --------------- */

#define WRAP_MAGIC   "P11SWRAP"
#define WRAP_VERSION 1
#define WRAP_MAX     (1024 * 1024)
#define VALUE_MAX    (64 * 1024)
#define MAX_ATTRS    16

enum { SEC_WRAP, SEC_PRIV, SEC_PUB, SEC_CERT, SEC_N, SEC_END = 0xff };
enum { WRAP_MECHANISM = 1, WRAP_DKEK_KCV = 2, WRAP_BLOB = 3 };

/* What each object takes along: its public attributes, enough to rebuild it. */
static const CK_ATTRIBUTE_TYPE priv_attrs[] = {
        CKA_KEY_TYPE, CKA_LABEL,  CKA_ID,     CKA_SIGN,
        CKA_DECRYPT,  CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER,
};
static const CK_ATTRIBUTE_TYPE pub_attrs[] = {
        CKA_KEY_TYPE, CKA_LABEL,  CKA_ID,      CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS,
        CKA_EC_POINT, CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP,    CKA_VERIFY_RECOVER,
};
static const CK_ATTRIBUTE_TYPE cert_attrs[] = {
        CKA_CERTIFICATE_TYPE, CKA_LABEL,         CKA_ID,    CKA_SUBJECT,
        CKA_ISSUER,           CKA_SERIAL_NUMBER, CKA_VALUE,
};

/* CK_ULONG-valued attributes travel as 4 bytes, big-endian. */
static bool
is_ulong_attr(CK_ATTRIBUTE_TYPE type)
{
	return type == CKA_KEY_TYPE || type == CKA_CERTIFICATE_TYPE || type == CKA_CLASS;
}

struct wbuf {
	unsigned char *p;
	size_t len, cap;
	bool failed; /* sticky: an allocation or a cap failed */
};

static void
wbuf_put(struct wbuf *b, const void *v, size_t n)
{
	size_t cap;
	unsigned char *p;

	if (b->failed)
		return;
	if (b->len + n > WRAP_MAX) {
		b->failed = true;
		return;
	}
	if (b->len + n > b->cap) {
		cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + n)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	if (n > 0) /* (v may be NULL for an empty value) */
		memcpy(b->p + b->len, v, n);
	b->len += n;
}

/* One record: section (1 byte), type (4), length (4), value. */
static void
wbuf_record(struct wbuf *b, int sec, uint32_t type, const void *v, size_t n)
{
	unsigned char hdr[9];

	hdr[0] = (unsigned char)sec;
	put_be32(hdr + 1, type);
	put_be32(hdr + 5, (uint32_t)n);
	wbuf_put(b, hdr, sizeof(hdr));
	wbuf_put(b, v, n);
}

/* The attributes the object has, among types, as records of section sec. */
static int
wbuf_object(struct wbuf *b, struct token *t, CK_OBJECT_HANDLE h, int sec,
            const CK_ATTRIBUTE_TYPE *types, size_t ntypes)
{
	unsigned char *v, be[4];
	CK_ULONG n;
	size_t i;
	int r;

	for (i = 0; i < ntypes; i++) {
		v = NULL;
		if ((r = attr_get(t, h, types[i], &v, &n)) < 0)
			return -1;
		if (r == 1)
			continue;
		if (is_ulong_attr(types[i]) && n == sizeof(CK_ULONG)) {
			put_be32(be, (uint32_t) * (CK_ULONG *)(void *)v);
			wbuf_record(b, sec, (uint32_t)types[i], be, 4);
		} else {
			wbuf_record(b, sec, (uint32_t)types[i], v, n);
		}
		free(v);
	}
	return 0;
}

/* The wrapped key as read back: attribute values point into the file's bytes, except the
 * CK_ULONG ones, kept in ulongs. */
struct wrapped {
	unsigned char *file;
	CK_ULONG mech;
	const unsigned char *kcv, *blob;
	size_t blob_len;
	CK_ATTRIBUTE attrs[SEC_N][MAX_ATTRS];
	CK_ULONG nattrs[SEC_N];
	CK_ULONG ulongs[SEC_N][MAX_ATTRS];
};

static int
wrapped_record(struct wrapped *w, int sec, uint32_t type, const unsigned char *v, uint32_t n)
{
	CK_ATTRIBUTE *a;

	if (sec == SEC_WRAP) {
		if (type == WRAP_MECHANISM && n == 4)
			w->mech = get_be32(v);
		else if (type == WRAP_DKEK_KCV && n == 3)
			w->kcv = v;
		else if (type == WRAP_BLOB)
			w->blob = v, w->blob_len = n;
		return 0;
	}
	if (sec >= SEC_N || w->nattrs[sec] == MAX_ATTRS)
		return -1;
	a = &w->attrs[sec][w->nattrs[sec]];
	a->type = type;
	a->pValue = (void *)v;
	a->ulValueLen = n;
	if (is_ulong_attr(type)) {
		if (n != 4)
			return -1;
		w->ulongs[sec][w->nattrs[sec]] = get_be32(v);
		a->pValue = &w->ulongs[sec][w->nattrs[sec]];
		a->ulValueLen = sizeof(CK_ULONG);
	}
	w->nattrs[sec]++;
	return 0;
}

/* Reads and checks a wrapped-key file (w->file is then the caller's to free). */
static int
wrapped_read(const char *path, struct wrapped *w)
{
	unsigned char sum[SHA256_DIGEST_LENGTH];
	size_t len, off = 9;
	uint32_t n;
	int sec;

	memset(w, 0, sizeof(*w));
	if (file_read(path, WRAP_MAX, &w->file, &len) != 0)
		return -1;
	if (len < 9 + 9 + 32 || memcmp(w->file, WRAP_MAGIC, 8) != 0 || w->file[8] != WRAP_VERSION) {
		errx("%s is not a p11sim wrapped-key file (version %d)", path, WRAP_VERSION);
		return -1;
	}
	SHA256(w->file, len - 32, sum);
	if (memcmp(sum, w->file + len - 32, 32) != 0) {
		errx("%s: bad checksum: the file is damaged", path);
		return -1;
	}
	while (off + 9 <= len - 32) {
		sec = w->file[off];
		n = get_be32(w->file + off + 5);
		if (sec == SEC_END || n > VALUE_MAX || n > len - 32 - off - 9 ||
		    wrapped_record(w, sec, get_be32(w->file + off + 1), w->file + off + 9, n) != 0)
			break;
		off += 9 + n;
	}
	if (off != len - 32 - 9 || w->file[off] != SEC_END || w->blob == NULL || w->kcv == NULL ||
	    w->nattrs[SEC_PRIV] == 0 || w->nattrs[SEC_PUB] == 0) {
		errx("%s: malformed wrapped-key file", path);
		return -1;
	}
	return 0;
}

/* --- wrap-key ---------------------------------------------------------------------- */

/* The wrapped private key, its public key and certificate, and the DKEK's check value. */
static int
wrap_collect(struct token *t, const unsigned char *id, size_t idlen, struct wbuf *b)
{
	CK_MECHANISM mech = {WRAP_MECH, NULL, 0};
	CK_OBJECT_HANDLE dkek, priv, pub, cert;
	unsigned char kcv[3], *blob = NULL, mbe[4];
	CK_ULONG n = 0;
	CK_RV rv;
	int r = -1, has_cert;

	if (find_dkek(t, &dkek) != 0) {
		errx("token %s has no DKEK: run `" PROG " init` first", t->label);
		return -1;
	}
	if (find_one(t, CKO_PRIVATE_KEY, id, idlen, &priv) != 0 ||
	    find_one(t, CKO_PUBLIC_KEY, id, idlen, &pub) != 0) {
		errx("token %s has no private key and public key with that id", t->label);
		return -1;
	}
	if ((has_cert = find_one(t, CKO_CERTIFICATE, id, idlen, &cert)) < 0 ||
	    dkek_check_value(t, dkek, kcv) != 0)
		return -1;
	rv = t->f->C_WrapKey(t->s, &mech, dkek, priv, NULL, &n);
	if (rv == CKR_OK && (blob = malloc(n)) == NULL)
		rv = CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		rv = t->f->C_WrapKey(t->s, &mech, dkek, priv, blob, &n);
	if (rv != CKR_OK) {
		errx("C_WrapKey (CKM_AES_KEY_WRAP_PAD under the DKEK) on token %s: %s%s", t->label,
		     p11mux_rv_name(rv),
		     rv == CKR_KEY_UNEXTRACTABLE ? " (the key is not CKA_EXTRACTABLE: make it "
		                                   "with mktokens.sh --extractable)"
		                                 : "");
		goto out;
	}
	put_be32(mbe, WRAP_MECH);
	wbuf_record(b, SEC_WRAP, WRAP_MECHANISM, mbe, 4);
	wbuf_record(b, SEC_WRAP, WRAP_DKEK_KCV, kcv, 3);
	wbuf_record(b, SEC_WRAP, WRAP_BLOB, blob, n);
	if (wbuf_object(b, t, priv, SEC_PRIV, priv_attrs, NELEM(priv_attrs)) != 0 ||
	    wbuf_object(b, t, pub, SEC_PUB, pub_attrs, NELEM(pub_attrs)) != 0 ||
	    (has_cert == 0 &&
	     wbuf_object(b, t, cert, SEC_CERT, cert_attrs, NELEM(cert_attrs)) != 0))
		goto out;
	printf("token %s: private key wrapped under the DKEK (%lu bytes), with its public key%s\n",
	       t->label, (unsigned long)n, has_cert == 0 ? " and certificate" : "");
	hex_print("  DKEK check value: ", kcv, 3);
	r = 0;
out:
	free(blob);
	return r;
}

static int
cmd_wrap_key(struct token *t, const char *pin, const char *hexid, const char *out)
{
	unsigned char id[128], sum[SHA256_DIGEST_LENGTH];
	struct wbuf b = {0};
	int idlen, r = 1;

	if ((idlen = hex_parse(hexid, id, sizeof(id))) < 0) {
		errx("--id %s: not hex", hexid);
		return 1;
	}
	if (token_login(t, CKU_USER, pin) != 0)
		return 1;
	wbuf_put(&b, WRAP_MAGIC, 8);
	wbuf_put(&b, (unsigned char[]){WRAP_VERSION}, 1);
	if (wrap_collect(t, id, (size_t)idlen, &b) != 0)
		goto out;
	wbuf_record(&b, SEC_END, 0, NULL, 0);
	if (!b.failed) {
		SHA256(b.p, b.len, sum);
		wbuf_put(&b, sum, sizeof(sum));
	}
	if (b.failed) {
		errx("out of memory, or the objects are too large");
		goto out;
	}
	if (file_write(out, b.p, b.len) != 0)
		goto out;
	printf("  wrote %s\n", out);
	say_real("sc-hsm-tool --wrap-key %s --key-reference N --pin PIN"
	         "   (N: the key's reference, from pkcs15-tool -D)",
	         out);
	r = 0;
out:
	free(b.p);
	return r;
}

/* --- unwrap-key -------------------------------------------------------------------- */

/* Creates an object from fixed attributes and those of one section of the file. */
static CK_RV
create_from(struct token *t, struct wrapped *w, int sec, CK_OBJECT_CLASS *cls, CK_OBJECT_HANDLE *h)
{
	static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[MAX_ATTRS + 3] = {
	        {CKA_CLASS, cls, sizeof(*cls)},
	        {CKA_TOKEN, &yes, 1},
	        {CKA_PRIVATE, &no, 1},
	};

	if (w->nattrs[sec] > 0)
		memcpy(tmpl + 3, w->attrs[sec], w->nattrs[sec] * sizeof(CK_ATTRIBUTE));
	return t->f->C_CreateObject(t->s, tmpl, 3 + w->nattrs[sec], h);
}

static CK_RV
unwrap_private(struct token *t, struct wrapped *w, CK_OBJECT_HANDLE dkek, CK_OBJECT_HANDLE *h)
{
	static CK_BBOOL yes = CK_TRUE;
	static CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_MECHANISM mech = {w->mech, NULL, 0};
	/* Sensitive, and extractable only wrapped: the SmartCard-HSM's "exportable under the
	 * DKEK", so that this token can hand the key on in turn. */
	CK_ATTRIBUTE tmpl[MAX_ATTRS + 5] = {
	        {CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, 1},       {CKA_PRIVATE, &yes, 1},
	        {CKA_SENSITIVE, &yes, 1},       {CKA_EXTRACTABLE, &yes, 1},
	};

	if (w->nattrs[SEC_PRIV] > 0)
		memcpy(tmpl + 5, w->attrs[SEC_PRIV], w->nattrs[SEC_PRIV] * sizeof(CK_ATTRIBUTE));
	return t->f->C_UnwrapKey(t->s, &mech, dkek, (CK_BYTE *)w->blob, w->blob_len, tmpl,
	                         5 + w->nattrs[SEC_PRIV], h);
}

static const CK_ATTRIBUTE *
wrapped_attr(const struct wrapped *w, int sec, CK_ATTRIBUTE_TYPE type)
{
	CK_ULONG i;

	for (i = 0; i < w->nattrs[sec]; i++)
		if (w->attrs[sec][i].type == type)
			return &w->attrs[sec][i];
	return NULL;
}

/* Signs a test string with the private key and verifies it with the public key. */
static int
check_pair(struct token *t, CK_KEY_TYPE kt, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub)
{
	static const char msg[] = "p11sim-tool: does the unwrapped key match?";
	unsigned char digest[SHA256_DIGEST_LENGTH], sig[1024];
	CK_MECHANISM mech = {kt == CKK_EC ? CKM_ECDSA : CKM_SHA256_RSA_PKCS, NULL, 0};
	CK_BYTE *data = (CK_BYTE *)msg;
	CK_ULONG len = sizeof(msg) - 1, siglen = sizeof(sig);
	CK_RV rv;

	if (kt == CKK_EC) { /* SoftHSM 2.6 has CKM_ECDSA, not CKM_ECDSA_SHA256 */
		SHA256((const unsigned char *)msg, len, digest);
		data = digest;
		len = sizeof(digest);
	}
	rv = t->f->C_SignInit(t->s, &mech, priv);
	if (rv == CKR_OK)
		rv = t->f->C_Sign(t->s, data, len, sig, &siglen);
	if (rv != CKR_OK) {
		errx("signing with the unwrapped key: %s", p11mux_rv_name(rv));
		return -1;
	}
	rv = t->f->C_VerifyInit(t->s, &mech, pub);
	if (rv == CKR_OK)
		rv = t->f->C_Verify(t->s, data, len, sig, siglen);
	if (rv != CKR_OK) {
		errx("the unwrapped private key does not match its public key: %s",
		     p11mux_rv_name(rv));
		return -1;
	}
	return 0;
}

/* The token's DKEK, if it is the one the key was wrapped under. */
static int
unwrap_dkek(struct token *t, const struct wrapped *w, const char *path, CK_OBJECT_HANDLE *h)
{
	unsigned char kcv[3];

	if (find_dkek(t, h) != 0) {
		errx("token %s has no DKEK: run `" PROG " init` with the DKEK share first",
		     t->label);
		return -1;
	}
	if (dkek_check_value(t, *h, kcv) != 0)
		return -1;
	if (memcmp(kcv, w->kcv, 3) != 0) {
		errx("token %s holds a different DKEK (check value %02x%02x%02x) from the one %s "
		     "was wrapped under (%02x%02x%02x): initialise it with the same DKEK share",
		     t->label, kcv[0], kcv[1], kcv[2], path, w->kcv[0], w->kcv[1], w->kcv[2]);
		return -1;
	}
	return 0;
}

static int
cmd_unwrap_key(struct token *t, const char *pin, const char *path)
{
	CK_OBJECT_CLASS pubcls = CKO_PUBLIC_KEY, certcls = CKO_CERTIFICATE;
	CK_OBJECT_HANDLE dkek, h, priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE cert = CK_INVALID_HANDLE;
	const CK_ATTRIBUTE *id, *kt;
	struct wrapped w;
	CK_RV rv;
	int r = 1;

	if (wrapped_read(path, &w) != 0 || token_login(t, CKU_USER, pin) != 0 ||
	    unwrap_dkek(t, &w, path, &dkek) != 0)
		goto out;
	id = wrapped_attr(&w, SEC_PRIV, CKA_ID);
	kt = wrapped_attr(&w, SEC_PRIV, CKA_KEY_TYPE);
	if (id == NULL || kt == NULL) {
		errx("%s: the private key has no CKA_ID or CKA_KEY_TYPE", path);
		goto out;
	}
	if (find_one(t, CKO_PRIVATE_KEY, id->pValue, id->ulValueLen, &h) != 1) {
		errx("token %s already holds a private key with this id", t->label);
		goto out;
	}
	if ((rv = unwrap_private(t, &w, dkek, &priv)) != CKR_OK) {
		errx("C_UnwrapKey on token %s: %s%s", t->label, p11mux_rv_name(rv),
		     rv == CKR_WRAPPED_KEY_INVALID || rv == CKR_ENCRYPTED_DATA_INVALID ||
		                     rv == CKR_GENERAL_ERROR
		             ? " (SoftHSM's answer to a key not wrapped under this token's DKEK, "
		               "or damaged)"
		             : "");
		goto out;
	}
	if ((rv = create_from(t, &w, SEC_PUB, &pubcls, &pub)) != CKR_OK ||
	    (w.nattrs[SEC_CERT] > 0 &&
	     (rv = create_from(t, &w, SEC_CERT, &certcls, &cert)) != CKR_OK)) {
		errx("C_CreateObject (public key or certificate) on token %s: %s", t->label,
		     p11mux_rv_name(rv));
		goto out;
	}
	if (check_pair(t, *(CK_KEY_TYPE *)kt->pValue, priv, pub) != 0)
		goto out;
	printf("token %s: key unwrapped under the DKEK, public key%s recreated; a test "
	       "signature verifies\n",
	       t->label, cert != CK_INVALID_HANDLE ? " and certificate" : "");
	say_real("sc-hsm-tool --unwrap-key %s --key-reference N --pin PIN"
	         "   (N: a free key reference; --force replaces a key in the way)",
	         path);
	r = 0;
out:
	if (r != 0) { /* leave no half-restored key behind */
		if (cert != CK_INVALID_HANDLE)
			t->f->C_DestroyObject(t->s, cert);
		if (pub != CK_INVALID_HANDLE)
			t->f->C_DestroyObject(t->s, pub);
		if (priv != CK_INVALID_HANDLE)
			t->f->C_DestroyObject(t->s, priv);
	}
	free(w.file);
	return r;
}

/* --- generate-key ------------------------------------------------------------------ */

static int
cmd_generate_key(struct token *t, const char *pin, const char *hexid, const char *label,
                 int rsa_bits, const char *curve)
{
	static const unsigned char p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
	                                     0xce, 0x3d, 0x03, 0x01, 0x07};
	static const unsigned char p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
	static const unsigned char e65537[] = {0x01, 0x00, 0x01};
	CK_BBOOL yes = CK_TRUE;
	CK_ULONG bits = (CK_ULONG)rsa_bits;
	unsigned char id[128];
	char kind[64];
	int idlen;
	CK_MECHANISM mech = {rsa_bits ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_ATTRIBUTE pub[6] = {
	        {CKA_TOKEN, &yes, 1},
	        {CKA_LABEL, (void *)label, strlen(label)},
	        {CKA_ID, id, 0},
	        {CKA_VERIFY, &yes, 1},
	        {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	        {CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537)},
	};
	CK_ATTRIBUTE priv[] = {
	        {CKA_TOKEN, &yes, 1},
	        {CKA_PRIVATE, &yes, 1},
	        {CKA_LABEL, (void *)label, strlen(label)},
	        {CKA_ID, id, 0},
	        {CKA_SIGN, &yes, 1},
	        {CKA_SENSITIVE, &yes, 1},
	        {CKA_EXTRACTABLE, &yes, 1},
	};
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv;

	if ((idlen = hex_parse(hexid, id, sizeof(id))) < 0) {
		errx("--id %s: not hex", hexid);
		return 1;
	}
	pub[2].ulValueLen = priv[3].ulValueLen = (CK_ULONG)idlen;
	if (!rsa_bits) { /* EC: the curve instead of the modulus size and exponent */
		bool is384 = strcmp(curve, "secp384r1") == 0;
		if (!is384 && strcmp(curve, "prime256v1") != 0 && strcmp(curve, "P-256") != 0) {
			errx("--ec %s: prime256v1 or secp384r1", curve);
			return 2;
		}
		pub[4] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)(is384 ? p384 : p256),
		                        is384 ? sizeof(p384) : sizeof(p256)};
	}
	if (token_login(t, CKU_USER, pin) != 0)
		return 1;
	rv = t->f->C_GenerateKeyPair(t->s, &mech, pub, rsa_bits ? 6 : 5, priv, 7, &hpub, &hpriv);
	if (rv != CKR_OK) {
		errx("C_GenerateKeyPair on token %s: %s", t->label, p11mux_rv_name(rv));
		return 1;
	}
	printf("token %s: %s key pair generated, id %s, label \"%s\", extractable only "
	       "wrapped (no certificate)\n",
	       t->label, rsa_bits ? "RSA" : curve, hexid, label);
	if (rsa_bits)
		snprintf(kind, sizeof(kind), "rsa:%d", rsa_bits);
	else
		snprintf(kind, sizeof(kind), "EC:%s", curve);
	say_real("pkcs11-tool --module opensc-pkcs11.so --login --pin PIN --keypairgen "
	         "--key-type %s --id %s --label %s   (on a device initialised with DKEK "
	         "shares, every key it generates can be wrapped under the DKEK)",
	         kind, hexid, label);
	return 0;
}

/* --- main -------------------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fputs("usage: " PROG " [--module PATH] COMMAND ...\n"
	      "  dkek-share FILE [--password PWD]\n"
	      "  init --token LABEL --pin PIN [--so-pin SOPIN] --dkek-share FILE [--password PWD]\n"
	      "  wrap-key --token LABEL --pin PIN --id HEXID --out FILE\n"
	      "  unwrap-key --token LABEL --pin PIN --in FILE\n"
	      "  generate-key --token LABEL --pin PIN --id HEXID --label L "
	      "(--rsa BITS | --ec CURVE)\n"
	      "PINs and passwords may be given as env:VARIABLE. The module is " DEFAULT_MODULE
	      " by default. See docs/simulator.md, \"The key lifecycle\".\n",
	      f);
}

struct opts {
	const char *module, *token, *pin, *so_pin, *share, *pwd, *id, *label, *in, *out, *ec;
	int rsa;
};

/* Parses options; first (stop at the command) or after the command (any order). */
static int
parse_opts(int argc, char **argv, struct opts *o, const char *optstring)
{
	static const struct option longopts[] = {
	        {"module", 1, NULL, 'm'}, {"token", 1, NULL, 't'},      {"pin", 1, NULL, 'p'},
	        {"so-pin", 1, NULL, 's'}, {"dkek-share", 1, NULL, 'd'}, {"password", 1, NULL, 'w'},
	        {"id", 1, NULL, 'i'},     {"label", 1, NULL, 'l'},      {"in", 1, NULL, 'I'},
	        {"out", 1, NULL, 'o'},    {"rsa", 1, NULL, 'r'},        {"ec", 1, NULL, 'e'},
	        {"help", 0, NULL, 'h'},   {NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->module = optarg;
			break;
		case 't':
			o->token = optarg;
			break;
		case 'p':
			o->pin = password_value(optarg);
			break;
		case 's':
			o->so_pin = password_value(optarg);
			break;
		case 'd':
			o->share = optarg;
			break;
		case 'w':
			o->pwd = password_value(optarg);
			break;
		case 'i':
			o->id = optarg;
			break;
		case 'l':
			o->label = optarg;
			break;
		case 'I':
			o->in = optarg;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'r':
			o->rsa = atoi(optarg);
			break;
		case 'e':
			o->ec = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
		/* env:VARIABLE naming an unset variable */
		if ((c == 'p' && o->pin == NULL) || (c == 's' && o->so_pin == NULL) ||
		    (c == 'w' && o->pwd == NULL))
			return -1;
	}
	return 0;
}

/* Runs a command that works on one token. */
static int
run_token_cmd(const char *cmd, struct opts *o)
{
	struct token t = {0};
	int r = 2;

	if (strcmp(cmd, "init") != 0 && strcmp(cmd, "wrap-key") != 0 &&
	    strcmp(cmd, "unwrap-key") != 0 && strcmp(cmd, "generate-key") != 0) {
		errx("unknown command %s (see --help)", cmd);
		return 2;
	}
	if (o->token == NULL || o->pin == NULL) {
		errx("%s needs --token and --pin", cmd);
		return 2;
	}
	if (token_open(&t, o->module, o->token) != 0) {
		token_close(&t);
		return 1;
	}
	if (strcmp(cmd, "init") == 0 && o->share != NULL)
		r = cmd_init(&t, o->so_pin, o->pin, o->share, o->pwd);
	else if (strcmp(cmd, "wrap-key") == 0 && o->id != NULL && o->out != NULL)
		r = cmd_wrap_key(&t, o->pin, o->id, o->out);
	else if (strcmp(cmd, "unwrap-key") == 0 && o->in != NULL)
		r = cmd_unwrap_key(&t, o->pin, o->in);
	else if (strcmp(cmd, "generate-key") == 0 && o->id != NULL && o->label != NULL &&
	         (o->rsa == 2048 || o->rsa == 3072 || o->rsa == 4096 || (!o->rsa && o->ec)))
		r = cmd_generate_key(&t, o->pin, o->id, o->label, o->rsa, o->ec);
	else
		errx("%s: missing or bad options (see --help)", cmd);
	token_close(&t);
	return r;
}

int
main(int argc, char **argv)
{
	struct opts o = {.module = DEFAULT_MODULE};
	const char *cmd;

	if (parse_opts(argc, argv, &o, "+h") != 0 || optind >= argc) {
		usage(stderr);
		return 2;
	}
	/* The command's own options, in any order: getopt starts afresh (optind 0) on the
	 * arguments from the command on, the command standing in for argv[0]. */
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	optind = 0;
	if (parse_opts(argc, argv, &o, "h") != 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "dkek-share") == 0) {
		if (optind != argc - 1) {
			errx("dkek-share FILE [--password PWD]");
			return 2;
		}
		return cmd_dkek_share(argv[optind], o.pwd);
	}
	if (optind != argc) {
		errx("unexpected argument: %s", argv[optind]);
		return 2;
	}
	return run_token_cmd(cmd, &o);
}
