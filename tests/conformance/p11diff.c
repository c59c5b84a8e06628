/*
 * The differential conformance test (docs/conformance.md): a table of PKCS#11 call sequences,
 * each run on a device's token straight through its module (the oracle) and on the pool
 * through p11mux-pkcs11.so, in one process. For every step it records the return code and,
 * where the step gives one, the output length and the output; the two traces must agree.
 *
 *   p11diff --device MODULE --token LABEL --pool MODULE --pin PIN --so-pin PIN
 *           [--doc docs/conformance.md] [--row NAME] [--list] [-v]
 *
 * A row whose traces differ is a failure unless docs/conformance.md lists it in its table of
 * deviations (a line starting with "| `ROW` |"); a listed row whose traces agree is a failure
 * too (the document would be stale). At the end it prints how many rows, rules and PKCS#11
 * functions the table covers. Exit 0 when every row agrees or is a listed deviation.
 *
 * Rows only read from the device: no object is created on a token, no PIN is changed; the
 * wrong-PIN rows spend one try and then log in with the right PIN, which resets the counter.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define MAX_STEPS 64
#define MAX_OUT   512

struct step {
	char what[48];
	CK_RV rv;
	int kind; /* 'r' return code, 'v' value, 'b' bytes */
	unsigned long val;
	size_t len;
	unsigned char out[MAX_OUT];
};

/* One side of the comparison: a module, the slot, and what the current row did on it. */
struct side {
	const char *name;
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	struct step steps[MAX_STEPS];
	size_t n;
};

struct row {
	const char *name;
	const char *rule;
	void (*run)(struct side *s);
};

static const char *user_pin, *so_pin;
static int verbose;

/* The functions of a PKCS#11 2.40 function list, for the coverage line. */
static const char *const all_functions[] = {
        "C_Initialize",
        "C_Finalize",
        "C_GetInfo",
        "C_GetFunctionList",
        "C_GetSlotList",
        "C_GetSlotInfo",
        "C_GetTokenInfo",
        "C_GetMechanismList",
        "C_GetMechanismInfo",
        "C_InitToken",
        "C_InitPIN",
        "C_SetPIN",
        "C_OpenSession",
        "C_CloseSession",
        "C_CloseAllSessions",
        "C_GetSessionInfo",
        "C_GetOperationState",
        "C_SetOperationState",
        "C_Login",
        "C_Logout",
        "C_CreateObject",
        "C_CopyObject",
        "C_DestroyObject",
        "C_GetObjectSize",
        "C_GetAttributeValue",
        "C_SetAttributeValue",
        "C_FindObjectsInit",
        "C_FindObjects",
        "C_FindObjectsFinal",
        "C_EncryptInit",
        "C_Encrypt",
        "C_EncryptUpdate",
        "C_EncryptFinal",
        "C_DecryptInit",
        "C_Decrypt",
        "C_DecryptUpdate",
        "C_DecryptFinal",
        "C_DigestInit",
        "C_Digest",
        "C_DigestUpdate",
        "C_DigestKey",
        "C_DigestFinal",
        "C_SignInit",
        "C_Sign",
        "C_SignUpdate",
        "C_SignFinal",
        "C_SignRecoverInit",
        "C_SignRecover",
        "C_VerifyInit",
        "C_Verify",
        "C_VerifyUpdate",
        "C_VerifyFinal",
        "C_VerifyRecoverInit",
        "C_VerifyRecover",
        "C_DigestEncryptUpdate",
        "C_DecryptDigestUpdate",
        "C_SignEncryptUpdate",
        "C_DecryptVerifyUpdate",
        "C_GenerateKey",
        "C_GenerateKeyPair",
        "C_WrapKey",
        "C_UnwrapKey",
        "C_DeriveKey",
        "C_SeedRandom",
        "C_GenerateRandom",
        "C_GetFunctionStatus",
        "C_CancelFunction",
        "C_WaitForSlotEvent",
};
#define NFUNCTIONS (sizeof(all_functions) / sizeof(all_functions[0]))

/* The PKCS#11 functions the rows called, for the coverage line. */
static const char *covered[80];
static size_t ncovered;

static void
cover(const char *fn)
{
	size_t i;

	for (i = 0; i < ncovered; i++)
		if (strcmp(covered[i], fn) == 0)
			return;
	if (ncovered < sizeof(covered) / sizeof(covered[0]))
		covered[ncovered++] = fn;
}

static struct step *
next_step(struct side *s, const char *what, int kind)
{
	struct step *st;

	if (s->n == MAX_STEPS) {
		fprintf(stderr, "p11diff: too many steps in one row\n");
		exit(2);
	}
	st = &s->steps[s->n++];
	memset(st, 0, sizeof(*st));
	snprintf(st->what, sizeof(st->what), "%s", what);
	st->kind = kind;
	return st;
}

/* Records a call's return code. */
static CK_RV
rec(struct side *s, const char *fn, CK_RV rv)
{
	cover(fn);
	next_step(s, fn, 'r')->rv = rv;
	return rv;
}

/* Records a value an output parameter received (a length, a count, a flag). */
static void
val(struct side *s, const char *what, unsigned long v)
{
	next_step(s, what, 'v')->val = v;
}

/* Records an output that must be byte for byte the same on both sides. */
static void
bytes(struct side *s, const char *what, const void *p, size_t n)
{
	struct step *st = next_step(s, what, 'b');

	st->len = n > MAX_OUT ? MAX_OUT : n;
	memcpy(st->out, p, st->len);
}

#define C(s, fn, ...) rec((s), #fn, (s)->f->fn(__VA_ARGS__))

/* --- fixtures: sessions, login, keys --- */

static CK_SESSION_HANDLE
open_s(struct side *s, int rw)
{
	CK_SESSION_HANDLE h = CK_INVALID_HANDLE;

	C(s, C_OpenSession, s->slot, CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0), NULL, NULL,
	  &h);
	return h;
}

static CK_RV
login(struct side *s, CK_SESSION_HANDLE h)
{
	return C(s, C_Login, h, CKU_USER, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
}

/* A user session, logged in. */
static CK_SESSION_HANDLE
user_s(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	login(s, h);
	return h;
}

/* The object of a class with CKA_ID id (01 RSA, 02 EC), found without recording steps. */
static CK_OBJECT_HANDLE
obj(struct side *s, CK_SESSION_HANDLE h, CK_OBJECT_CLASS cls, unsigned char id)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, &id, 1}};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
	CK_ULONG n = 0;

	if (s->f->C_FindObjectsInit(h, t, 2) != CKR_OK)
		return CK_INVALID_HANDLE;
	s->f->C_FindObjects(h, &o, 1, &n);
	s->f->C_FindObjectsFinal(h);
	return n == 1 ? o : CK_INVALID_HANDLE;
}

#define RSA_PRIV(s, h) obj(s, h, CKO_PRIVATE_KEY, 1)
#define RSA_PUB(s, h)  obj(s, h, CKO_PUBLIC_KEY, 1)
#define EC_PRIV(s, h)  obj(s, h, CKO_PRIVATE_KEY, 2)
#define EC_PUB(s, h)   obj(s, h, CKO_PUBLIC_KEY, 2)

static CK_MECHANISM m_rsa = {CKM_RSA_PKCS, NULL, 0};
static CK_MECHANISM m_x509 = {CKM_RSA_X_509, NULL, 0};
static CK_MECHANISM m_sha256_rsa = {CKM_SHA256_RSA_PKCS, NULL, 0};
static CK_MECHANISM m_ecdsa = {CKM_ECDSA, NULL, 0};
static CK_MECHANISM m_sha256 = {CKM_SHA256, NULL, 0};
static CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
static CK_MECHANISM m_pss = {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss)};
static CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL, 0};
static CK_MECHANISM m_oaep = {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)};

static CK_BYTE data32[32] = "0123456789abcdef0123456789abcdef";
static CK_BYTE data300[300];

/* --- rows: library, slots, sessions --- */

static void
r_info_args(struct side *s)
{
	CK_ULONG n = 0;

	C(s, C_GetInfo, NULL);
	C(s, C_GetSlotList, CK_TRUE, NULL, NULL);
	C(s, C_GetSlotInfo, s->slot, NULL);
	C(s, C_GetTokenInfo, s->slot, NULL);
	C(s, C_GetMechanismList, s->slot, NULL, NULL);
	C(s, C_GetMechanismInfo, s->slot, CKM_RSA_PKCS, NULL);
	C(s, C_GetSlotList, CK_TRUE, NULL, &n);
}

static void
r_initialize(struct side *s)
{
	CK_FUNCTION_LIST_PTR fl;
	CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
	int dummy;

	C(s, C_Initialize, NULL);
	C(s, C_Initialize, &args);
	C(s, C_Finalize, &dummy);
	C(s, C_GetFunctionList, NULL);
	C(s, C_GetFunctionList, &fl);
	val(s, "the same function list", fl == s->f);
}

static void
r_bad_slot(struct side *s)
{
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_MECHANISM_INFO mi;
	CK_ULONG n = 0;
	CK_SESSION_HANDLE h;

	C(s, C_GetSlotInfo, 0x7ffffff0, &si);
	C(s, C_GetTokenInfo, 0x7ffffff0, &ti);
	C(s, C_GetMechanismList, 0x7ffffff0, NULL, &n);
	C(s, C_GetMechanismInfo, 0x7ffffff0, CKM_RSA_PKCS, &mi);
	C(s, C_OpenSession, 0x7ffffff0, CKF_SERIAL_SESSION, NULL, NULL, &h);
	C(s, C_CloseAllSessions, 0x7ffffff0);
}

static void
r_mech_list(struct side *s)
{
	CK_MECHANISM_TYPE list[1];
	CK_MECHANISM_INFO mi;
	CK_ULONG n = 0;

	C(s, C_GetMechanismList, s->slot, NULL, &n);
	n = 0;
	C(s, C_GetMechanismList, s->slot, list, &n);
	C(s, C_GetMechanismInfo, s->slot, 0x8fff1234, &mi);
	C(s, C_GetMechanismInfo, s->slot, CKM_SHA256_RSA_PKCS, &mi);
	val(s, "SHA256_RSA_PKCS can sign", (mi.flags & CKF_SIGN) != 0);
}

static void
r_open_args(struct side *s)
{
	CK_SESSION_HANDLE h;

	C(s, C_OpenSession, s->slot, CKF_SERIAL_SESSION, NULL, NULL, NULL);
	C(s, C_OpenSession, s->slot, 0, NULL, NULL, &h);
	C(s, C_OpenSession, s->slot, CKF_RW_SESSION, NULL, NULL, &h);
}

static void
r_close(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_SESSION_INFO si;

	C(s, C_CloseSession, h);
	C(s, C_CloseSession, h);
	C(s, C_GetSessionInfo, h, &si);
	C(s, C_CloseSession, CK_INVALID_HANDLE);
}

static void
r_session_states(struct side *s)
{
	CK_SESSION_HANDLE ro = open_s(s, 0), rw = open_s(s, 1);
	CK_SESSION_INFO si;

	C(s, C_GetSessionInfo, ro, NULL);
	C(s, C_GetSessionInfo, ro, &si);
	val(s, "RO public state", si.state);
	val(s, "RO flags", si.flags);
	C(s, C_GetSessionInfo, rw, &si);
	val(s, "RW public state", si.state);
	val(s, "RW flags", si.flags);
	login(s, ro);
	C(s, C_GetSessionInfo, ro, &si);
	val(s, "RO user state", si.state);
	C(s, C_GetSessionInfo, rw, &si);
	val(s, "RW user state", si.state);
	C(s, C_Logout, rw);
	C(s, C_GetSessionInfo, ro, &si);
	val(s, "RO state after logout", si.state);
}

static void
r_last_close_logs_out(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_SESSION_INFO si;

	C(s, C_CloseSession, h);
	h = open_s(s, 0);
	C(s, C_GetSessionInfo, h, &si);
	val(s, "state", si.state);
	login(s, h);
	C(s, C_CloseAllSessions, s->slot);
	h = open_s(s, 1);
	C(s, C_GetSessionInfo, h, &si);
	val(s, "state after C_CloseAllSessions", si.state);
}

static void
r_token_info(struct side *s)
{
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE h = open_s(s, 0);

	open_s(s, 1);
	C(s, C_GetTokenInfo, s->slot, &ti);
	val(s, "CKF_LOGIN_REQUIRED", (ti.flags & CKF_LOGIN_REQUIRED) != 0);
	val(s, "CKF_TOKEN_INITIALIZED", (ti.flags & CKF_TOKEN_INITIALIZED) != 0);
	val(s, "CKF_USER_PIN_INITIALIZED", (ti.flags & CKF_USER_PIN_INITIALIZED) != 0);
	val(s, "CKF_PROTECTED_AUTHENTICATION_PATH",
	    (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH) != 0);
	val(s, "CKF_RNG", (ti.flags & CKF_RNG) != 0);
	val(s, "CKF_WRITE_PROTECTED", (ti.flags & CKF_WRITE_PROTECTED) != 0);
	(void)h;
}

static void
r_token_session_count(struct side *s)
{
	CK_TOKEN_INFO ti;

	open_s(s, 0);
	open_s(s, 1);
	C(s, C_GetTokenInfo, s->slot, &ti);
	val(s, "ulSessionCount", ti.ulSessionCount);
	val(s, "ulRwSessionCount", ti.ulRwSessionCount);
}

/* --- rows: login rules --- */

static void
r_login_twice(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0), h2 = open_s(s, 1);

	login(s, h);
	login(s, h);
	login(s, h2);
	C(s, C_Logout, h2);
}

static void
r_logout_not_logged_in(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	C(s, C_Logout, h);
	login(s, h);
	C(s, C_Logout, h);
	C(s, C_Logout, h);
}

static void
r_login_args(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	C(s, C_Login, h, 99, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
	C(s, C_Login, h, CKU_USER, NULL, 6);
	C(s, C_Login, CK_INVALID_HANDLE, CKU_USER, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
	C(s, C_Login, h, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
	C(s, C_Logout, CK_INVALID_HANDLE);
	login(s, h);
}

static void
r_login_empty_pin(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	C(s, C_Login, h, CKU_USER, (CK_UTF8CHAR_PTR) "", 0);
	login(s, h);
}

static void
r_wrong_pin(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_TOKEN_INFO ti;

	C(s, C_Login, h, CKU_USER, (CK_UTF8CHAR_PTR) "000000", 6);
	C(s, C_GetTokenInfo, s->slot, &ti);
	val(s, "CKF_USER_PIN_LOCKED", (ti.flags & CKF_USER_PIN_LOCKED) != 0);
	val(s, "CKF_USER_PIN_FINAL_TRY", (ti.flags & CKF_USER_PIN_FINAL_TRY) != 0);
	login(s, h);
	C(s, C_GetTokenInfo, s->slot, &ti);
	val(s, "CKF_USER_PIN_COUNT_LOW after a good login",
	    (ti.flags & CKF_USER_PIN_COUNT_LOW) != 0);
}

static void
r_wrong_pin_count_low(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_TOKEN_INFO ti;

	C(s, C_Login, h, CKU_USER, (CK_UTF8CHAR_PTR) "000000", 6);
	C(s, C_GetTokenInfo, s->slot, &ti);
	val(s, "CKF_USER_PIN_COUNT_LOW after a wrong PIN",
	    (ti.flags & CKF_USER_PIN_COUNT_LOW) != 0);
	login(s, h);
}

static void
r_so_ro_exists(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	open_s(s, 1);
	C(s, C_Login, h, CKU_SO, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin));
}

static void
r_so_user_logged_in(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 1);

	login(s, h);
	C(s, C_Login, h, CKU_SO, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin));
}

static void
r_so_login(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 1), ro;
	CK_SESSION_INFO si;

	C(s, C_Login, h, CKU_SO, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin));
	C(s, C_GetSessionInfo, h, &si);
	val(s, "state", si.state);
	C(s, C_OpenSession, s->slot, CKF_SERIAL_SESSION, NULL, NULL, &ro);
	login(s, h);
	C(s, C_Logout, h);
}

static void
r_setpin_ro(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);

	C(s, C_SetPIN, h, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin), (CK_UTF8CHAR_PTR)user_pin,
	  strlen(user_pin));
	C(s, C_InitPIN, h, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
}

/* --- rows: objects and attributes --- */

static unsigned long
count(struct side *s, CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG nt, CK_ULONG chunk)
{
	CK_OBJECT_HANDLE found[16];
	CK_ULONG n = 0, total = 0;

	if (C(s, C_FindObjectsInit, h, t, nt) != CKR_OK)
		return 0;
	do {
		if (C(s, C_FindObjects, h, found, chunk, &n) != CKR_OK)
			break;
		total += n;
	} while (n > 0 && total < 64);
	C(s, C_FindObjectsFinal, h);
	return total;
}

static void
r_find_login(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY, pub = CKO_PUBLIC_KEY, cert = CKO_CERTIFICATE;
	CK_ATTRIBUTE tp = {CKA_CLASS, &priv, sizeof(priv)}, tu = {CKA_CLASS, &pub, sizeof(pub)},
	             tc = {CKA_CLASS, &cert, sizeof(cert)};

	val(s, "private keys before login", count(s, h, &tp, 1, 16));
	val(s, "public keys before login", count(s, h, &tu, 1, 16));
	val(s, "certificates before login", count(s, h, &tc, 1, 16));
	login(s, h);
	val(s, "private keys after login", count(s, h, &tp, 1, 16));
	val(s, "objects, one at a time", count(s, h, NULL, 0, 1));
	C(s, C_Logout, h);
	val(s, "private keys after logout", count(s, h, &tp, 1, 16));
}

static void
r_find_rules(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE o[4];
	CK_ULONG n;
	unsigned char id = 1, none = 0x77;
	CK_ATTRIBUTE tid = {CKA_ID, &id, 1}, tnone = {CKA_ID, &none, 1};

	C(s, C_FindObjects, h, o, 4, &n);
	C(s, C_FindObjectsFinal, h);
	C(s, C_FindObjectsInit, h, NULL, 1);
	C(s, C_FindObjectsInit, h, &tid, 1);
	C(s, C_FindObjectsInit, h, &tid, 1);
	C(s, C_FindObjects, h, NULL, 4, &n);
	C(s, C_FindObjects, h, o, 4, NULL);
	C(s, C_FindObjects, h, o, 4, &n);
	val(s, "objects with CKA_ID 01", n);
	C(s, C_FindObjectsFinal, h);
	val(s, "objects with an absent CKA_ID", count(s, h, &tnone, 1, 4));
	C(s, C_FindObjectsInit, CK_INVALID_HANDLE, &tid, 1);
}

static void
r_getattr(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = RSA_PRIV(s, h), pubk = RSA_PUB(s, h);
	CK_BYTE mod[512], small[4], label[64];
	CK_ATTRIBUTE t[] = {{CKA_MODULUS, NULL, 0}, {CKA_LABEL, NULL, 0}, {CKA_ID, NULL, 0}};
	CK_ATTRIBUTE tm = {CKA_MODULUS, mod, sizeof(mod)};
	CK_ATTRIBUTE ts[] = {{CKA_LABEL, small, sizeof(small)}, {CKA_MODULUS, mod, sizeof(mod)}};
	CK_ATTRIBUTE tx[] = {{CKA_PRIVATE_EXPONENT, mod, sizeof(mod)}, {CKA_LABEL, label, 64}};
	CK_ATTRIBUTE tv[] = {{0x8fff4321, label, 64}, {CKA_ID, label, 64}};

	C(s, C_GetAttributeValue, h, k, t, 3);
	val(s, "modulus length", t[0].ulValueLen);
	val(s, "label length", t[1].ulValueLen);
	val(s, "id length", t[2].ulValueLen);
	C(s, C_GetAttributeValue, h, pubk, &tm, 1);
	bytes(s, "modulus", mod, tm.ulValueLen);
	C(s, C_GetAttributeValue, h, k, ts, 2);
	val(s, "too small: label length", ts[0].ulValueLen);
	val(s, "too small: modulus length", ts[1].ulValueLen);
	C(s, C_GetAttributeValue, h, k, tx, 2);
	val(s, "sensitive: exponent length", tx[0].ulValueLen);
	bytes(s, "label", label, tx[1].ulValueLen);
	C(s, C_GetAttributeValue, h, k, tv, 2);
	val(s, "invalid type length", tv[0].ulValueLen);
	C(s, C_GetAttributeValue, h, k, NULL, 1);
	C(s, C_GetAttributeValue, h, 0x7fff0001, &tm, 1);
	C(s, C_GetAttributeValue, CK_INVALID_HANDLE, k, &tm, 1);
}

static void
r_private_after_logout(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_OBJECT_HANDLE k;
	CK_BYTE mod[512];
	CK_ATTRIBUTE tm = {CKA_MODULUS, mod, sizeof(mod)};

	login(s, h);
	k = RSA_PRIV(s, h);
	C(s, C_Logout, h);
	C(s, C_GetAttributeValue, h, k, &tm, 1);
	C(s, C_SignInit, h, &m_rsa, k);
	login(s, h);
	C(s, C_SignInit, h, &m_rsa, 0x7fff0001);
	C(s, C_DecryptInit, h, &m_rsa, 0x7fff0001);
}

static void
r_write_ro(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = RSA_PUB(s, h), o;
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL yes = CK_TRUE;
	CK_BYTE label[] = "p11diff";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_TOKEN, &yes, sizeof(yes)},
	                    {CKA_LABEL, label, sizeof(label) - 1}};

	C(s, C_CreateObject, h, t, 3, &o);
	C(s, C_SetAttributeValue, h, k, &t[2], 1);
	C(s, C_CopyObject, h, k, &t[1], 1, &o);
	C(s, C_DestroyObject, h, 0x7fff0001);
}

static void
r_session_object(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_OBJECT_HANDLE o;
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL no = CK_FALSE;
	CK_BYTE label[] = "p11diff session object";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_TOKEN, &no, sizeof(no)},
	                    {CKA_LABEL, label, sizeof(label) - 1}};

	C(s, C_CreateObject, h, t, 3, &o);
}

static void
r_generate_session_key(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
	CK_ULONG len = 16;
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &no, sizeof(no)}};
	CK_OBJECT_HANDLE k;

	CK_MECHANISM kp = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
	CK_ULONG bits = 1024;
	CK_ATTRIBUTE pt[] = {{CKA_MODULUS_BITS, &bits, sizeof(bits)}, {CKA_TOKEN, &no, sizeof(no)}};
	CK_OBJECT_HANDLE pub, priv;

	C(s, C_GenerateKey, h, &m, t, 2, &k);
	C(s, C_GenerateKeyPair, h, &kp, pt, 2, &t[1], 1, &pub, &priv);
}

static void
r_object_size(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_ULONG size;

	C(s, C_GetObjectSize, h, RSA_PUB(s, h), NULL);
	C(s, C_GetObjectSize, h, 0x7fff0001, &size);
}

/* --- rows: digests --- */

/* The size query of the conformance suite that failed through the pool (issue 15). */
static void
r_digest_size_query(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len = 0;

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_Digest, h, data32, sizeof(data32), NULL, &len);
	val(s, "length", len);
	len = 2;
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	val(s, "length", len);
	len = sizeof(out);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	bytes(s, "digest", out, len);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
}

/* The same, in a session whose earlier operations failed, and after other sessions. */
static void
r_digest_after_failures(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s), h2 = open_s(s, 0);
	CK_MECHANISM bad = {0x8fff0001, NULL, 0};
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, &bad, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_DigestInit, h, &bad);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	C(s, C_DecryptInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Decrypt, h, data32, sizeof(data32), out, &len);
	C(s, C_DigestInit, h2, &m_sha256);
	C(s, C_CloseSession, h2);
	C(s, C_DigestInit, h, &m_sha256);
	len = 0;
	C(s, C_Digest, h, data32, sizeof(data32), NULL, &len);
	val(s, "length", len);
	len = sizeof(out);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	bytes(s, "digest", out, len);
}

static void
r_digest_final_size(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len = 0;

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestUpdate, h, data32, 10);
	C(s, C_DigestUpdate, h, data32 + 10, 22);
	C(s, C_DigestFinal, h, NULL, &len);
	val(s, "length", len);
	len = 1;
	C(s, C_DigestFinal, h, out, &len);
	val(s, "length", len);
	len = sizeof(out);
	C(s, C_DigestFinal, h, out, &len);
	bytes(s, "digest", out, len);
	C(s, C_DigestFinal, h, out, &len);
}

static void
r_digest_zero_updates(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len = sizeof(out);

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestUpdate, h, data32, 0);
	C(s, C_DigestUpdate, h, data32, 0);
	C(s, C_DigestFinal, h, out, &len);
	bytes(s, "digest of nothing", out, len);
	C(s, C_DigestInit, h, &m_sha256);
	len = sizeof(out);
	C(s, C_Digest, h, data32, 0, out, &len);
	bytes(s, "digest of nothing", out, len);
}

static void
r_digest_mixing(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len = sizeof(out);

	/* C_DigestFinal after a C_Digest size query. */
	C(s, C_DigestInit, h, &m_sha256);
	len = 0;
	C(s, C_Digest, h, data32, sizeof(data32), NULL, &len);
	len = sizeof(out);
	C(s, C_DigestFinal, h, out, &len);
	len = sizeof(out);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
}

static void
r_digest_after_update(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len = sizeof(out);

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestUpdate, h, data32, 1);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	len = sizeof(out);
	C(s, C_DigestFinal, h, out, &len);
}

static void
r_update_null_empty(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	CK_BYTE out[64];
	CK_ULONG len = sizeof(out);

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestUpdate, h, NULL, 0);
	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_Digest, h, NULL, 0, out, &len);
}

static void
r_digest_args(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_MECHANISM bad = {0x8fff0001, NULL, 0};
	CK_BYTE out[64];
	CK_ULONG len = sizeof(out);

	C(s, C_DigestInit, h, NULL);
	C(s, C_DigestInit, h, &bad);
	C(s, C_DigestInit, CK_INVALID_HANDLE, &m_sha256);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	C(s, C_DigestUpdate, h, data32, 1);
	C(s, C_DigestFinal, h, out, &len);
	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_Digest, h, data32, sizeof(data32), out, NULL);
	C(s, C_Digest, h, NULL, 5, out, &len);
	C(s, C_DigestUpdate, h, NULL, 5);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
	bytes(s, "digest", out, len);
}

static void
r_digest_mechs(struct side *s)
{
	static const CK_MECHANISM_TYPE types[] = {CKM_MD5,    CKM_SHA_1,  CKM_SHA224,
	                                          CKM_SHA256, CKM_SHA384, CKM_SHA512};
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[64];
	CK_ULONG len;
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		CK_MECHANISM m = {types[i], NULL, 0};

		len = sizeof(out);
		C(s, C_DigestInit, h, &m);
		C(s, C_Digest, h, data32, sizeof(data32), out, &len);
		bytes(s, "digest", out, len);
	}
}

static void
r_digest_key(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_DigestKey, h, RSA_PRIV(s, h));
	C(s, C_DigestKey, h, 0x7fff0001);
}

/* --- rows: signatures --- */

static void
r_sign_rsa(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = 0;

	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), NULL, &len);
	val(s, "length", len);
	len = 10;
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	val(s, "length", len);
	len = sizeof(out);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	bytes(s, "signature", out, len);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
}

static void
r_sign_multipart(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = 0;

	C(s, C_SignInit, h, &m_sha256_rsa, RSA_PRIV(s, h));
	C(s, C_SignUpdate, h, data32, 7);
	C(s, C_SignUpdate, h, data32, 0);
	C(s, C_SignUpdate, h, data32 + 7, 25);
	C(s, C_SignFinal, h, NULL, &len);
	val(s, "length", len);
	len = 3;
	C(s, C_SignFinal, h, out, &len);
	len = sizeof(out);
	C(s, C_SignFinal, h, out, &len);
	bytes(s, "signature", out, len);
	C(s, C_SignFinal, h, out, &len);
}

static void
r_sign_after_update(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, &m_sha256_rsa, RSA_PRIV(s, h));
	C(s, C_SignUpdate, h, data32, 3);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_SignFinal, h, out, &len);
}

static void
r_sign_errors_end(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data300, 250, out, &len);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, NULL);
	len = sizeof(out);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_SignInit, h, &m_ecdsa, EC_PRIV(s, h));
	len = sizeof(out);
	C(s, C_Sign, h, data32, 20, out, &len);
	C(s, C_SignFinal, h, out, &len);
}

static void
r_sign_init_rules(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_MECHANISM bad = {0x8fff0001, NULL, 0};
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, NULL, RSA_PRIV(s, h));
	C(s, C_SignInit, h, &bad, RSA_PRIV(s, h));
	C(s, C_SignInit, h, &m_rsa, RSA_PUB(s, h));
	C(s, C_SignInit, CK_INVALID_HANDLE, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_SignUpdate, h, data32, 1);
	C(s, C_SignFinal, h, out, &len);
	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
}

static void
r_sign_init_key_type(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, &m_rsa, EC_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
}

static void
r_pss_no_param(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_MECHANISM pss_noparam = {CKM_SHA256_RSA_PKCS_PSS, NULL, 0};

	C(s, C_SignInit, h, &pss_noparam, RSA_PRIV(s, h));
	C(s, C_VerifyInit, h, &pss_noparam, RSA_PUB(s, h));
}

static void
r_sign_ec_pss(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = 0;

	C(s, C_SignInit, h, &m_ecdsa, EC_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), NULL, &len);
	val(s, "ECDSA length", len);
	len = sizeof(out);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	val(s, "ECDSA length", len);
	C(s, C_VerifyInit, h, &m_ecdsa, EC_PUB(s, h));
	C(s, C_Verify, h, data32, sizeof(data32), out, len);
	C(s, C_SignInit, h, &m_pss, RSA_PRIV(s, h));
	len = sizeof(out);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	val(s, "PSS length", len);
	C(s, C_VerifyInit, h, &m_pss, RSA_PUB(s, h));
	C(s, C_Verify, h, data32, sizeof(data32), out, len);
}

static void
r_sign_public(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);

	C(s, C_SignInit, h, &m_rsa, RSA_PUB(s, h));
	C(s, C_VerifyInit, h, &m_rsa, RSA_PUB(s, h));
}

static void
r_recover(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignRecoverInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_SignRecover, h, data32, sizeof(data32), out, &len);
	C(s, C_VerifyRecoverInit, h, &m_rsa, RSA_PUB(s, h));
	C(s, C_VerifyRecover, h, out, 256, data300, &len);
	C(s, C_SignRecoverInit, CK_INVALID_HANDLE, &m_rsa, RSA_PRIV(s, h));
	C(s, C_VerifyRecover, CK_INVALID_HANDLE, out, 256, data300, &len);
}

/* --- rows: verification --- */

/* A PKCS#1 v1.5 signature made on this side (deterministic, so the same on both). */
static CK_ULONG
rsa_sig(struct side *s, CK_SESSION_HANDLE h, CK_BYTE *out)
{
	CK_ULONG len = 512;

	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	return len;
}

static void
r_verify(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE pubk = RSA_PUB(s, h);
	CK_BYTE sig[512];
	CK_ULONG len = rsa_sig(s, h, sig);

	C(s, C_VerifyInit, h, &m_rsa, pubk);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
	sig[5] ^= 1;
	C(s, C_VerifyInit, h, &m_rsa, pubk);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
	sig[5] ^= 1;
	C(s, C_VerifyInit, h, &m_rsa, pubk);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len - 1);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
	C(s, C_VerifyInit, h, &m_rsa, pubk);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len + 1);
	C(s, C_VerifyInit, h, &m_rsa, pubk);
	C(s, C_Verify, h, data32, sizeof(data32), NULL, len);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
}

static void
r_verify_multipart(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE pubk = RSA_PUB(s, h);
	CK_BYTE sig[512];
	CK_ULONG len = 512;

	C(s, C_SignInit, h, &m_sha256_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), sig, &len);
	C(s, C_VerifyInit, h, &m_sha256_rsa, pubk);
	C(s, C_VerifyUpdate, h, data32, 16);
	C(s, C_VerifyUpdate, h, data32, 0);
	C(s, C_VerifyUpdate, h, data32 + 16, 16);
	C(s, C_VerifyFinal, h, sig, len);
	C(s, C_VerifyFinal, h, sig, len);
	C(s, C_VerifyInit, h, &m_sha256_rsa, pubk);
	C(s, C_VerifyUpdate, h, data32, 16);
	C(s, C_VerifyFinal, h, sig, len - 3);
	C(s, C_VerifyFinal, h, sig, len);
	C(s, C_VerifyInit, h, &m_ecdsa, EC_PUB(s, h));
	C(s, C_Verify, h, data32, sizeof(data32), sig, 63);
	C(s, C_VerifyUpdate, h, data32, 1);
}

/* --- rows: encryption and decryption --- */

static void
r_encrypt_x509(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE in[256], out[512], back[512];
	CK_ULONG len = 0, blen = sizeof(back);

	memset(in, 0x42, sizeof(in));
	in[0] = 0;
	C(s, C_EncryptInit, h, &m_x509, RSA_PUB(s, h));
	C(s, C_Encrypt, h, in, sizeof(in), NULL, &len);
	val(s, "length", len);
	len = sizeof(out);
	C(s, C_Encrypt, h, in, sizeof(in), out, &len);
	bytes(s, "ciphertext", out, len);
	C(s, C_DecryptInit, h, &m_x509, RSA_PRIV(s, h));
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
}

static void
r_decrypt_pkcs(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512], back[512];
	CK_ULONG len = sizeof(out), blen = 0;

	C(s, C_EncryptInit, h, &m_rsa, RSA_PUB(s, h));
	C(s, C_Encrypt, h, data32, sizeof(data32), out, &len);
	val(s, "ciphertext length", len);
	C(s, C_DecryptInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Decrypt, h, out, len, NULL, &blen);
	val(s, "size query", blen);
	blen = 4;
	C(s, C_Decrypt, h, out, len, back, &blen);
	val(s, "too small", blen);
	blen = sizeof(back);
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
	C(s, C_Decrypt, h, out, len, back, &blen);
}

static void
r_decrypt_oaep(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512], back[512];
	CK_ULONG len = sizeof(out), blen = sizeof(back);

	C(s, C_EncryptInit, h, &m_oaep, RSA_PUB(s, h));
	C(s, C_Encrypt, h, data32, sizeof(data32), out, &len);
	C(s, C_DecryptInit, h, &m_oaep, RSA_PRIV(s, h));
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
}

static void
r_decrypt_errors(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = RSA_PRIV(s, h);
	CK_BYTE junk[256], back[512];
	CK_ULONG blen = sizeof(back);

	memset(junk, 0x33, sizeof(junk));
	C(s, C_DecryptInit, h, &m_rsa, k);
	C(s, C_Decrypt, h, junk, sizeof(junk), back, &blen);
	C(s, C_Decrypt, h, junk, sizeof(junk), back, &blen);
	C(s, C_DecryptInit, h, &m_rsa, k);
	C(s, C_Decrypt, h, junk, 255, back, &blen);
	C(s, C_Decrypt, h, junk, sizeof(junk), back, &blen);
	C(s, C_DecryptInit, h, &m_rsa, k);
	C(s, C_DecryptInit, h, &m_rsa, k);
	C(s, C_Decrypt, h, junk, sizeof(junk), back, NULL);
	C(s, C_DecryptInit, h, &m_rsa, RSA_PUB(s, h));
}

static void
r_single_part(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512], back[512];
	CK_ULONG len = sizeof(out), blen = sizeof(back);

	C(s, C_EncryptInit, h, &m_rsa, RSA_PUB(s, h));
	C(s, C_EncryptUpdate, h, data32, sizeof(data32), out, &len);
	len = sizeof(out);
	C(s, C_EncryptFinal, h, out, &len);
	len = sizeof(out);
	C(s, C_Encrypt, h, data32, sizeof(data32), out, &len);
	C(s, C_DecryptInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_DecryptUpdate, h, out, len, back, &blen);
	blen = sizeof(back);
	C(s, C_DecryptFinal, h, back, &blen);
	blen = sizeof(back);
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
}

static void
r_single_part_sign(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_SignUpdate, h, data32, sizeof(data32));
	len = sizeof(out);
	C(s, C_SignFinal, h, out, &len);
	len = sizeof(out);
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	C(s, C_VerifyInit, h, &m_ecdsa, EC_PUB(s, h));
	C(s, C_VerifyUpdate, h, data32, sizeof(data32));
	C(s, C_VerifyFinal, h, out, 64);
	C(s, C_Verify, h, data32, sizeof(data32), out, 64);
}

static void
r_ops_at_once(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_DigestInit, h, &m_sha256);
	C(s, C_SignInit, h, &m_rsa, RSA_PRIV(s, h));
	C(s, C_Sign, h, data32, sizeof(data32), out, &len);
	len = sizeof(out);
	C(s, C_Digest, h, data32, sizeof(data32), out, &len);
}

/* --- rows: session objects (issue 16) --- */

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_BYTE aes_value[16] = "p11diff aes key!";
static CK_BYTE hmac_value[32] = "p11diff hmac key of 32 bytes...";
static CK_BYTE iv[16] = "0123456789abcdef";

/* A session secret key of type kt with value v, for usage attributes u1 and u2. */
static CK_OBJECT_HANDLE
secret_key(struct side *s, CK_SESSION_HANDLE h, CK_KEY_TYPE kt, CK_BYTE *v, CK_ULONG len,
           CK_ATTRIBUTE_TYPE u1, CK_ATTRIBUTE_TYPE u2)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)},
	                    {CKA_TOKEN, &no, sizeof(no)},   {CKA_VALUE, v, len},
	                    {u1, &yes, sizeof(yes)},        {u2, &yes, sizeof(yes)}};
	CK_OBJECT_HANDLE k = CK_INVALID_HANDLE;

	C(s, C_CreateObject, h, t, 6, &k);
	return k;
}

static void
r_session_aes(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = secret_key(s, h, CKK_AES, aes_value, 16, CKA_ENCRYPT, CKA_DECRYPT);
	CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
	CK_BYTE out[128], back[128];
	CK_ULONG len = 0, blen = sizeof(back), vlen = 0;
	CK_KEY_TYPE kt = 0;
	CK_ATTRIBUTE t[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}, {CKA_VALUE_LEN, &vlen, sizeof(vlen)}};

	C(s, C_GetAttributeValue, h, k, t, 2);
	val(s, "key type", kt);
	val(s, "value length", vlen);
	C(s, C_EncryptInit, h, &m, k);
	C(s, C_Encrypt, h, data32, 20, NULL, &len);
	val(s, "size query", len);
	len = sizeof(out);
	C(s, C_Encrypt, h, data32, 20, out, &len);
	bytes(s, "ciphertext", out, len);
	C(s, C_DecryptInit, h, &m, k);
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
	C(s, C_DestroyObject, h, k);
	C(s, C_GetAttributeValue, h, k, t, 2);
	C(s, C_DestroyObject, h, k);
}

static void
r_session_aes_generate(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0}, m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
	CK_ULONG vlen = 32;
	CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &vlen, sizeof(vlen)},
	                    {CKA_TOKEN, &no, sizeof(no)},
	                    {CKA_ENCRYPT, &yes, sizeof(yes)},
	                    {CKA_DECRYPT, &yes, sizeof(yes)}};
	CK_OBJECT_HANDLE k = CK_INVALID_HANDLE;
	CK_BYTE out[128], back[128];
	CK_ULONG len = sizeof(out), blen = sizeof(back);

	C(s, C_GenerateKey, h, &gen, t, 4, &k);
	C(s, C_EncryptInit, h, &m, k);
	C(s, C_Encrypt, h, data32, sizeof(data32), out, &len);
	val(s, "ciphertext length", len);
	C(s, C_DecryptInit, h, &m, k);
	C(s, C_Decrypt, h, out, len, back, &blen);
	bytes(s, "plaintext", back, blen);
	C(s, C_DestroyObject, h, k);
}

static void
r_session_hmac(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k =
	        secret_key(s, h, CKK_GENERIC_SECRET, hmac_value, 32, CKA_SIGN, CKA_VERIFY);
	CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
	CK_BYTE mac[64];
	CK_ULONG len = sizeof(mac);

	C(s, C_SignInit, h, &m, k);
	C(s, C_Sign, h, data32, sizeof(data32), mac, &len);
	bytes(s, "HMAC", mac, len);
	C(s, C_VerifyInit, h, &m, k);
	C(s, C_Verify, h, data32, sizeof(data32), mac, len);
	mac[0] ^= 1;
	C(s, C_VerifyInit, h, &m, k);
	C(s, C_Verify, h, data32, sizeof(data32), mac, len);
	C(s, C_DestroyObject, h, k);
}

static void
r_session_pairs(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_MECHANISM rsagen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0},
	             ecgen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_ULONG bits = 1024;
	CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	CK_ATTRIBUTE rpub[] = {{CKA_MODULUS_BITS, &bits, sizeof(bits)},
	                       {CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_VERIFY, &yes, sizeof(yes)}};
	CK_ATTRIBUTE epub[] = {{CKA_EC_PARAMS, p256, sizeof(p256)},
	                       {CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_VERIFY, &yes, sizeof(yes)}};
	CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_SIGN, &yes, sizeof(yes)},
	                       {CKA_SENSITIVE, &yes, sizeof(yes)}};
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, prv = CK_INVALID_HANDLE;
	CK_BYTE sig[512];
	CK_ULONG len = sizeof(sig);

	C(s, C_GenerateKeyPair, h, &rsagen, rpub, 3, priv, 3, &pub, &prv);
	C(s, C_SignInit, h, &m_sha256_rsa, prv);
	C(s, C_Sign, h, data32, sizeof(data32), sig, &len);
	val(s, "RSA-1024 signature length", len);
	C(s, C_VerifyInit, h, &m_sha256_rsa, pub);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
	C(s, C_DestroyObject, h, prv);
	C(s, C_DestroyObject, h, pub);
	C(s, C_GenerateKeyPair, h, &ecgen, epub, 3, priv, 3, &pub, &prv);
	len = sizeof(sig);
	C(s, C_SignInit, h, &m_ecdsa, prv);
	C(s, C_Sign, h, data32, sizeof(data32), sig, &len);
	val(s, "ECDSA P-256 signature length", len);
	C(s, C_VerifyInit, h, &m_ecdsa, pub);
	C(s, C_Verify, h, data32, sizeof(data32), sig, len);
}

static void
r_session_data(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s), h2 = open_s(s, 0);
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BYTE label[] = "p11diff data", value[] = "some data";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_TOKEN, &no, sizeof(no)},
	                    {CKA_LABEL, label, sizeof(label) - 1},
	                    {CKA_VALUE, value, sizeof(value) - 1}};
	CK_BYTE got[64];
	CK_ATTRIBUTE tv = {CKA_VALUE, got, sizeof(got)};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;

	C(s, C_CreateObject, h, t, 4, &o);
	val(s, "found by label", count(s, h, &t[2], 1, 4));
	val(s, "found by label in another session", count(s, h2, &t[2], 1, 4));
	C(s, C_GetAttributeValue, h2, o, &tv, 1);
	bytes(s, "value", got, tv.ulValueLen);
	C(s, C_CloseSession, h);
	val(s, "found after its session closed", count(s, h2, &t[2], 1, 4));
	C(s, C_GetAttributeValue, h2, o, &tv, 1);
	C(s, C_DestroyObject, h2, o);
}

static void
r_session_private(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BYTE label[] = "p11diff private";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_TOKEN, &no, sizeof(no)},
	                    {CKA_PRIVATE, &yes, sizeof(yes)},
	                    {CKA_LABEL, label, sizeof(label) - 1}};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;

	C(s, C_CreateObject, h, t, 4, &o);
	val(s, "found, logged in", count(s, h, &t[3], 1, 4));
	C(s, C_Logout, h);
	val(s, "found, logged out", count(s, h, &t[3], 1, 4));
	C(s, C_CreateObject, h, t, 4, &o);
	login(s, h);
	val(s, "found, logged in again", count(s, h, &t[3], 1, 4));
	t[2].pValue = &no;
	C(s, C_Logout, h);
	C(s, C_CreateObject, h, t, 4, &o);
	val(s, "public one found, logged out", count(s, h, &t[3], 1, 4));
}

static void
r_session_change(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = secret_key(s, h, CKK_AES, aes_value, 16, CKA_ENCRYPT, CKA_DECRYPT), c;
	CK_BYTE label[] = "renamed";
	CK_ATTRIBUTE t = {CKA_LABEL, label, sizeof(label) - 1};
	CK_ATTRIBUTE session = {CKA_TOKEN, &no, sizeof(no)};

	C(s, C_SetAttributeValue, h, k, &t, 1);
	C(s, C_CopyObject, h, k, &session, 1, &c);
}

static void
r_session_args(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_OBJECT_CLASS secret = CKO_SECRET_KEY, data = CKO_DATA;
	CK_BYTE label[] = "p11diff public data";
	CK_ATTRIBUTE incomplete[] = {{CKA_CLASS, &secret, sizeof(secret)},
	                             {CKA_TOKEN, &no, sizeof(no)}};
	CK_ATTRIBUTE pub[] = {{CKA_CLASS, &data, sizeof(data)},
	                      {CKA_TOKEN, &no, sizeof(no)},
	                      {CKA_PRIVATE, &no, sizeof(no)},
	                      {CKA_LABEL, label, sizeof(label) - 1}};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE, o2;

	C(s, C_CreateObject, h, pub, 4, NULL);
	C(s, C_CreateObject, h, NULL, 1, &o);
	C(s, C_CreateObject, h, incomplete, 2, &o);
	C(s, C_CreateObject, h, pub, 4, &o);
	val(s, "public object found, logged out", count(s, h, &pub[3], 1, 4));
	C(s, C_CopyObject, h, o, NULL, 1, &o2);
	C(s, C_CopyObject, h, o, pub, 0, NULL);
	C(s, C_GenerateKey, h, NULL, incomplete, 2, &o2);
	C(s, C_DestroyObject, h, o);
	C(s, C_DestroyObject, h, o);
	C(s, C_DestroyObject, h, 0x80001234);
}

static void
r_session_multipart(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_OBJECT_HANDLE k = secret_key(s, h, CKK_AES, aes_value, 16, CKA_ENCRYPT, CKA_DECRYPT);
	CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
	CK_BYTE out[128];
	CK_ULONG len = sizeof(out), total = 0;

	C(s, C_EncryptInit, h, &m, k);
	C(s, C_EncryptUpdate, h, data32, 20, out, &len);
	val(s, "first part's output", len);
	total += len;
	len = sizeof(out) - total;
	C(s, C_EncryptFinal, h, out + total, &len);
	total += len;
	bytes(s, "ciphertext", out, total);
}

/* --- rows: random numbers and the rest --- */

static void
r_random(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE out[100];

	C(s, C_GenerateRandom, h, NULL, 10);
	C(s, C_GenerateRandom, h, out, 0);
	C(s, C_GenerateRandom, h, out, sizeof(out));
	C(s, C_GenerateRandom, CK_INVALID_HANDLE, out, 10);
	C(s, C_SeedRandom, h, NULL, 1);
	C(s, C_SeedRandom, CK_INVALID_HANDLE, out, 4);
}

static void
r_seed_random(struct side *s)
{
	CK_SESSION_HANDLE h = open_s(s, 0);
	CK_BYTE seed[4] = {1, 2, 3, 4};

	C(s, C_SeedRandom, h, seed, 4);
}

static void
r_unsupported(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);
	CK_SLOT_ID slot;

	C(s, C_GetOperationState, h, NULL, &len);
	C(s, C_SetOperationState, h, out, 16, 0, 0);
	C(s, C_GetFunctionStatus, h);
	C(s, C_CancelFunction, h);
	C(s, C_WaitForSlotEvent, CKF_DONT_BLOCK, &slot, NULL);
	C(s, C_DigestEncryptUpdate, h, data32, 16, out, &len);
	C(s, C_DecryptDigestUpdate, h, data32, 16, out, &len);
	C(s, C_SignEncryptUpdate, h, data32, 16, out, &len);
	C(s, C_DecryptVerifyUpdate, h, data32, 16, out, &len);
}

static void
r_wrap_key(struct side *s)
{
	CK_SESSION_HANDLE h = user_s(s);
	CK_BYTE out[512];
	CK_ULONG len = sizeof(out);

	C(s, C_WrapKey, h, &m_rsa, RSA_PUB(s, h), EC_PRIV(s, h), out, &len);
}

static const struct row rows[] = {
        {"initialize", "C_Initialize twice, C_Finalize and C_GetFunctionList arguments",
         r_initialize},
        {"info-args", "NULL output pointers of the information functions", r_info_args},
        {"bad-slot", "an unknown slot ID", r_bad_slot},
        {"mech-list", "mechanism list size query, too small a buffer, unknown mechanism",
         r_mech_list},
        {"open-args", "C_OpenSession: NULL handle, no CKF_SERIAL_SESSION", r_open_args},
        {"close", "closing a session twice, and a handle never issued", r_close},
        {"session-states", "session states: RO/RW, public/user, after logout", r_session_states},
        {"last-close-logs-out", "closing the last session (or all) logs the user out",
         r_last_close_logs_out},
        {"token-info", "token flags and session counts", r_token_info},
        {"token-session-count", "session counts in the token information", r_token_session_count},
        {"login-twice", "user already logged in, on any session of the token", r_login_twice},
        {"logout-not-logged-in", "C_Logout when nobody is logged in", r_logout_not_logged_in},
        {"login-args", "C_Login/C_Logout arguments: user type, NULL PIN, handles", r_login_args},
        {"login-empty-pin", "an empty PIN", r_login_empty_pin},
        {"wrong-pin", "a wrong PIN, then the right one", r_wrong_pin},
        {"wrong-pin-count-low", "CKF_USER_PIN_COUNT_LOW after a wrong PIN", r_wrong_pin_count_low},
        {"so-ro-exists", "SO login with a read-only session open", r_so_ro_exists},
        {"so-user-logged-in", "SO login while the user is logged in", r_so_user_logged_in},
        {"so-login", "SO login with read-write sessions only", r_so_login},
        {"setpin-ro", "C_SetPIN and C_InitPIN in a read-only session", r_setpin_ro},
        {"find-login", "what C_FindObjects lists before login, after, after logout", r_find_login},
        {"find-rules", "find without init, init twice, NULL arguments", r_find_rules},
        {"getattr", "attribute sizes, too small, sensitive, invalid type", r_getattr},
        {"key-handle-invalid", "a private key's handle after logout, a handle never issued",
         r_private_after_logout},
        {"write-ro", "token object changes in a read-only session", r_write_ro},
        {"session-object", "a session data object in a public session", r_session_object},
        {"generate-session-key", "a session AES key", r_generate_session_key},
        {"object-size", "C_GetObjectSize arguments", r_object_size},
        {"digest-size-query", "C_Digest size query, too small, then the digest",
         r_digest_size_query},
        {"digest-after-failures", "a digest after failed operations and other sessions",
         r_digest_after_failures},
        {"digest-final-size", "C_DigestFinal size query and too small", r_digest_final_size},
        {"digest-zero-updates", "zero-length updates and empty input", r_digest_zero_updates},
        {"digest-mixing", "C_DigestFinal after a C_Digest size query", r_digest_mixing},
        {"digest-after-update", "C_Digest after C_DigestUpdate", r_digest_after_update},
        {"update-null-empty", "an update with a NULL pointer and length 0", r_update_null_empty},
        {"digest-args", "digest arguments, not initialised, init while active", r_digest_args},
        {"digest-mechs", "MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512", r_digest_mechs},
        {"digest-key", "C_DigestKey", r_digest_key},
        {"sign-rsa", "C_Sign size query, too small, result, then ended", r_sign_rsa},
        {"sign-multipart", "C_SignUpdate/C_SignFinal, size query, zero-length part",
         r_sign_multipart},
        {"sign-after-update", "C_Sign after C_SignUpdate", r_sign_after_update},
        {"sign-errors-end", "which errors end a signing operation", r_sign_errors_end},
        {"sign-init-rules", "C_SignInit: NULL, bad mechanism, wrong key, init while active",
         r_sign_init_rules},
        {"sign-init-key-type", "an RSA mechanism on an EC key", r_sign_init_key_type},
        {"pss-no-param", "SHA-256 RSA-PSS without its parameter", r_pss_no_param},
        {"sign-ec-pss", "ECDSA and RSA-PSS lengths, verified on the same side", r_sign_ec_pss},
        {"sign-public", "signing with a public key, not logged in", r_sign_public},
        {"recover", "C_SignRecover and C_VerifyRecover", r_recover},
        {"verify", "C_Verify: good, bad, wrong lengths, NULL signature", r_verify},
        {"verify-multipart", "C_VerifyUpdate/C_VerifyFinal, wrong length ends it",
         r_verify_multipart},
        {"encrypt-x509", "raw RSA encryption size query and round trip", r_encrypt_x509},
        {"decrypt-pkcs", "C_Decrypt size query, too small, plaintext", r_decrypt_pkcs},
        {"decrypt-oaep", "RSA-OAEP round trip", r_decrypt_oaep},
        {"decrypt-errors", "bad padding and length end the operation; NULL length",
         r_decrypt_errors},
        {"single-part", "C_EncryptUpdate/C_DecryptUpdate of single-part mechanisms", r_single_part},
        {"single-part-sign", "C_SignUpdate/C_VerifyUpdate of single-part mechanisms",
         r_single_part_sign},
        {"ops-at-once", "a signature while a digest is active in the session", r_ops_at_once},
        {"random", "C_GenerateRandom and C_SeedRandom arguments", r_random},
        {"seed-random", "C_SeedRandom with a seed", r_seed_random},
        {"unsupported", "operation state, parallel and dual functions, slot events", r_unsupported},
        {"wrap-key", "C_WrapKey of a private key", r_wrap_key},
        {"session-aes", "a session AES key: attributes, CBC, destroyed", r_session_aes},
        {"session-aes-generate", "a generated session AES key", r_session_aes_generate},
        {"session-hmac", "a session HMAC key: SHA-256 HMAC, verified, a bad MAC", r_session_hmac},
        {"session-pairs", "session RSA and EC key pairs: sign, verify, destroyed", r_session_pairs},
        {"session-data", "a session data object: found in other sessions, ends with its own",
         r_session_data},
        {"session-private", "private and public session objects, logged in and out",
         r_session_private},
        {"session-multipart", "multi-part AES-CBC with a session key", r_session_multipart},
        {"session-args", "session object arguments, an incomplete template, a public object",
         r_session_args},
        {"session-change", "C_SetAttributeValue and C_CopyObject of a session key",
         r_session_change},
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* --- running --- */

static int
load(struct side *s, const char *path)
{
	CK_C_GetFunctionList gfl;
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CK_RV rv;

	if (lib == NULL || (gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) == NULL) {
		fprintf(stderr, "p11diff: %s: %s\n", path, dlerror());
		return -1;
	}
	if ((rv = gfl(&s->f)) != CKR_OK || (rv = s->f->C_Initialize(NULL)) != CKR_OK) {
		fprintf(stderr, "p11diff: %s: C_Initialize: 0x%lx\n", path, rv);
		return -1;
	}
	return 0;
}

/* The slot whose token has label (blank-padded in CK_TOKEN_INFO). */
static int
find_slot(struct side *s, const char *label)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	size_t len = strlen(label);

	if (s->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -1;
	for (i = 0; i < n; i++) {
		if (s->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || len > sizeof(ti.label))
			continue;
		if (memcmp(ti.label, label, len) == 0 &&
		    (len == sizeof(ti.label) || ti.label[len] == ' ')) {
			s->slot = slots[i];
			return 0;
		}
	}
	fprintf(stderr, "p11diff: %s: no token labelled \"%s\"\n", s->name, label);
	return -1;
}

static void
describe(const struct step *st, char *buf, size_t size)
{
	switch (st->kind) {
	case 'r':
		snprintf(buf, size, "rv 0x%lx", st->rv);
		break;
	case 'v':
		snprintf(buf, size, "%lu", st->val);
		break;
	default:
		snprintf(buf, size, "%zu bytes %02x%02x%02x%02x...", st->len, st->out[0],
		         st->out[1], st->out[2], st->out[3]);
	}
}

/* Both traces, side by side (-v). */
static void
dump(const struct side *a, const struct side *b)
{
	char da[64], db[64];
	size_t i;

	for (i = 0; i < a->n || i < b->n; i++) {
		da[0] = db[0] = '\0';
		if (i < a->n)
			describe(&a->steps[i], da, sizeof(da));
		if (i < b->n)
			describe(&b->steps[i], db, sizeof(db));
		printf("    %2zu %-36s %-28s %s\n", i + 1,
		       i < a->n ? a->steps[i].what : b->steps[i].what, da, db);
	}
}

/* Prints where two traces part; returns whether they agree. */
static int
compare(const struct row *r, const struct side *a, const struct side *b)
{
	char da[64], db[64];
	size_t i;

	for (i = 0; i < a->n || i < b->n; i++) {
		const struct step *x = i < a->n ? &a->steps[i] : NULL;
		const struct step *y = i < b->n ? &b->steps[i] : NULL;

		if (x != NULL && y != NULL && strcmp(x->what, y->what) == 0 && x->kind == y->kind &&
		    x->rv == y->rv && x->val == y->val && x->len == y->len &&
		    memcmp(x->out, y->out, x->len) == 0)
			continue;
		if (x != NULL)
			describe(x, da, sizeof(da));
		if (y != NULL)
			describe(y, db, sizeof(db));
		if (verbose)
			dump(a, b);
		printf("  %s: step %zu %s: %s %s, %s %s\n", r->name, i + 1,
		       x != NULL ? x->what : y->what, a->name, x != NULL ? da : "(none)", b->name,
		       y != NULL ? db : "(none)");
		return 0;
	}
	return 1;
}

static void
run_row(const struct row *r, struct side *s)
{
	s->n = 0;
	r->run(s);
	s->f->C_CloseAllSessions(s->slot);
}

/* The deviations docs/conformance.md lists: lines starting with "| `NAME` |". */
static char *doc;

static int
documented(const char *name)
{
	char key[96];

	if (doc == NULL)
		return 0;
	snprintf(key, sizeof(key), "\n| `%s` |", name);
	return strstr(doc, key) != NULL;
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0) {
		fprintf(stderr, "p11diff: cannot read %s\n", path);
		exit(2);
	}
	rewind(fp);
	buf = calloc(1, (size_t)n + 2);
	buf[0] = '\n';
	if (buf == NULL || fread(buf + 1, 1, (size_t)n, fp) != (size_t)n)
		exit(2);
	fclose(fp);
	return buf;
}

/* What the rows gave: rows the same as the device, documented deviations, failures, and the
 * steps run. */
struct tally {
	size_t same, documented, bad, steps;
};

/* Runs every row (or the one named only) on both sides and prints each that differs. */
static void
run_rows(struct side *dev, struct side *pool, const char *only, struct tally *t)
{
	size_t i;

	for (i = 0; i < NROWS; i++) {
		const struct row *r = &rows[i];
		int agree, listed = documented(r->name);

		if (only != NULL && strcmp(only, r->name) != 0)
			continue;
		run_row(r, dev);
		run_row(r, pool);
		t->steps += dev->n;
		agree = compare(r, dev, pool);
		if (agree && !listed) {
			t->same++;
			if (verbose)
				printf("same        %-24s %s (%zu steps)\n", r->name, r->rule,
				       dev->n);
		} else if (!agree && listed) {
			t->documented++;
			printf("deviation   %-24s %s (docs/conformance.md)\n", r->name, r->rule);
		} else if (agree) {
			t->bad++;
			printf("STALE       %-24s the pool now agrees with the device: take the "
			       "row "
			       "out of docs/conformance.md\n",
			       r->name);
		} else {
			t->bad++;
			printf("DIFFERENT   %-24s %s: not a documented deviation\n", r->name,
			       r->rule);
		}
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: p11diff --device MODULE --token LABEL --pool MODULE --pin PIN "
	                "--so-pin PIN [--pool-token LABEL] [--doc FILE] [--row NAME] [--list] "
	                "[-v]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct side *dev = calloc(1, sizeof(*dev)), *pool = calloc(1, sizeof(*pool));
	const char *devmod = NULL, *token = NULL, *poolmod = NULL, *pooltoken = NULL;
	const char *only = NULL;
	struct tally tally = {0, 0, 0, 0};
	size_t i;
	int list = 0;

	for (i = 1; i < (size_t)argc; i++) {
		const char *a = argv[i], *v = i + 1 < (size_t)argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--list") == 0 || strcmp(a, "-v") == 0) {
			list |= a[1] == '-';
			verbose |= a[1] == 'v';
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--device") == 0)
			devmod = v;
		else if (strcmp(a, "--token") == 0)
			token = v;
		else if (strcmp(a, "--pool") == 0)
			poolmod = v;
		else if (strcmp(a, "--pool-token") == 0)
			pooltoken = v;
		else if (strcmp(a, "--pin") == 0)
			user_pin = v;
		else if (strcmp(a, "--so-pin") == 0)
			so_pin = v;
		else if (strcmp(a, "--doc") == 0)
			doc = slurp(v);
		else if (strcmp(a, "--row") == 0)
			only = v;
		else
			usage();
	}
	if (list) {
		for (i = 0; i < NROWS; i++)
			printf("%-24s %s\n", rows[i].name, rows[i].rule);
		return 0;
	}
	if (dev == NULL || pool == NULL || devmod == NULL || token == NULL || poolmod == NULL ||
	    user_pin == NULL || so_pin == NULL)
		usage();
	memset(data300, 0x5a, sizeof(data300));
	dev->name = "device";
	pool->name = "pool";
	if (load(dev, devmod) != 0 || load(pool, poolmod) != 0 || find_slot(dev, token) != 0 ||
	    find_slot(pool, pooltoken != NULL ? pooltoken : token) != 0)
		return 2;
	run_rows(dev, pool, only, &tally);
	printf("p11diff: %zu rows (%zu steps), %zu PKCS#11 functions of %zu covered: %zu the same "
	       "as the device, %zu documented deviations, %zu failures\n",
	       only != NULL ? tally.same + tally.documented + tally.bad : NROWS, tally.steps,
	       ncovered, NFUNCTIONS, tally.same, tally.documented, tally.bad);
	printf("p11diff: not called:");
	for (i = 0; i < NFUNCTIONS; i++) {
		size_t k;

		for (k = 0; k < ncovered && strcmp(covered[k], all_functions[i]) != 0; k++)
			;
		if (k == ncovered)
			printf(" %s", all_functions[i]);
	}
	printf("\n");
	dev->f->C_Finalize(NULL);
	pool->f->C_Finalize(NULL);
	free(dev);
	free(pool);
	free(doc);
	return tally.bad == 0 ? 0 : 1;
}
