/*
 * libFuzzer target: the helper protocol, in both directions (issue 14). The input's first byte
 * picks the side.
 *
 * The helper's side (even): request frames, mostly well-formed (TOKENS, INIT, LOGIN, FIND,
 * READ, OP, RANDOM, CREATE, GENERATE, GENERATE_PAIR, DESTROY), sometimes mutated, garbage or on the
 * wrong channel, go to the helper's dispatcher (helper_answer(): what serve() does with each frame)
 * on its control channel and two operation channels, over a stub PKCS#11 module whose answers come
 * from the input: return codes, slots that come and go between two calls, tokens, mechanisms,
 * objects whose attributes are sensitive, missing or change length between the size query and the
 * read, outputs of any length. The stub keeps the PKCS#11 contract (it never writes past a buffer):
 * what the helper does with legal answers is under test, not what a broken module does to the
 * process it runs in. Checks: every answer decodes as a reply to its request, INIT's holds one
 * token, an operation's output is the module's; session objects are made in a read-only session,
 * and an object the module made is in a CKR_OK answer (CKA_TOKEN false, asked) or destroyed, a
 * token object (CKA_TOKEN true, or not said) with CKR_TOKEN_WRITE_PROTECTED; a well-formed request
 * on its channel is always answered; one on the wrong channel, before the module is loaded, or that
 * does not decode stops the channel; the helper makes up none of the daemon's own result codes.
 *
 * The daemon's side (odd): replies, mostly well-formed, sometimes mutated, cut, oversized, of
 * another call, garbage or missing, wait on a fresh socketpair (a fake helper's channel,
 * closed for writing after them) for each of the daemon's calls on a member that is up:
 * TOKENS (pool_got_tokens), INIT (member_got_token), LOGIN (member_login), FIND and READ
 * (member_read_objects, then mobjects_fingerprint and view_build or view_remap), OP and RANDOM
 * (member_run, the member brought back up when a reply took it down), CREATE, GENERATE and
 * GENERATE_PAIR (get_make, take_object) and DESTROY (pinned to a helper generation). Nothing waits:
 * the replies are there before the call, and the stream ends after them. Checks: every request the
 * daemon writes decodes; a reply sent as built gives its result (the token, the objects, the
 * output, the objects made, the CK_RV); a reply that does not decode never gives CKR_OK, and takes
 * the member down; a helper cannot pass one of the daemon's own result codes.
 */
#include "device.h"
#include "err.h"
#include "fuzz_stream.h"
#include "helper.h"
#include "hproto.h"
#include "log.h"
#include "member.h"
#include "pool.h"
#include "proto.h"
#include "sigcodec.h"
#include "transport.h"
#include "view.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_STEPS 32
/* The daemon's time-out for a helper's answer. No call waits (the replies are there before it,
 * and the stream ends after them), but the daemon looks at the clock before it polls: a short
 * one could pass while the machine stalls the fuzzer, with the bytes there. */
#define TIMEOUT_MS 60000

/* Buffers kept from one input to the next: freeing one wipes all it ever held. */
static struct p11mux_buf *bufs[6];

static struct p11mux_buf *
buf(int i)
{
	if (bufs[i] == NULL)
		CHECK((bufs[i] = p11mux_buf_new(HELPER_FRAME_MAX)) != NULL);
	p11mux_buf_reset(bufs[i]);
	return bufs[i];
}

/* The decisions the seeds script (fuzz_stream.h); every other byte of a seed is 0. */
enum { S_SIDE = FS_FIRST, S_ACTION, S_RV, S_MOD, S_CALL, S_LEN, S_CHAN, S_TOKEN };
#define u8  fs_u8
#define u16 fs_u16
#define u64 fs_u64

/* The daemon logs through p11mux_log (wrapped at link time): quiet unless FUZZ_TRACE. */
void
__wrap_p11mux_log(enum p11mux_log_level level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	if (!fs_trace)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Output lengths: what a signature or a block is, and more than the helper's first buffer. */
static size_t
pick_out_len(void)
{
	static const size_t lens[] = {256, 0, 1, 32, 64, 512, 128, 20};
	uint8_t b = fs_take(S_LEN);

	if (b < 0xf0)
		return lens[b % 8];
	/* Larger than the helper's first buffer (4096 bytes and the input's). */
	return b == 0xff ? u16() : b & 1 ? 70000 : 5000;
}

/* A mechanism of the table (or any), with a parameter as it wants one. */
static void
pick_mech(struct fs_mech *mc)
{
	uint8_t b = u8();

	fs_mech_param(mc, b);
}

/* =========================== the helper's side =========================== */

/* --- the stub module: answers from the input, within the PKCS#11 contract --- */

static struct {
	CK_ULONG nslots, nmechs, nobjs; /* what the module holds, per input */
	CK_SESSION_HANDLE next;
	CK_ULONG find_left;
	size_t outlen;  /* the output of the operation initialised last */
	size_t written; /* the last output written with CKR_OK */
	int own_rv;     /* returned a code of the daemon's own range */
	uint8_t rw[64]; /* by session handle % 64: opened with CKF_RW_SESSION */
	/* Session objects: made by the request being answered (handle, whether the module
	 * holds it as a token object, what the helper's CKA_TOKEN query got: -1 not asked, 0
	 * CK_FALSE, 1 anything else, whether C_DestroyObject was called on it). */
	struct {
		CK_OBJECT_HANDLE h;
		int token, said, destroyed;
	} made[2];
	size_t nmade;
	CK_OBJECT_HANDLE next_obj; /* made objects are 0x100 and up: h % 4 says the class */
	CK_OBJECT_HANDLE last_made[4];
} mod;

static const CK_RV stub_rvs[] = {
        CKR_DEVICE_ERROR,
        CKR_DEVICE_REMOVED,
        CKR_TOKEN_NOT_PRESENT,
        CKR_SESSION_HANDLE_INVALID,
        CKR_USER_ALREADY_LOGGED_IN,
        CKR_PIN_INCORRECT,
        CKR_PIN_LOCKED,
        CKR_BUFFER_TOO_SMALL,
        CKR_ATTRIBUTE_SENSITIVE,
        CKR_ATTRIBUTE_TYPE_INVALID,
        CKR_KEY_HANDLE_INVALID,
        CKR_MECHANISM_INVALID,
        CKR_FUNCTION_FAILED,
        CKR_GENERAL_ERROR,
        CKR_SIGNATURE_INVALID,
        CKR_VENDOR_DEFINED | 0x5032UL,
};

/* The result of a module call: CKR_OK mostly. */
static CK_RV
stub_rv(void)
{
	CK_RV rv = FS_RV(fs_take(S_MOD), 232, stub_rvs);

	if (p11muxd_own_rv(rv))
		mod.own_rv = 1;
	return rv;
}

/* PKCS#11's rule for an output of n: its length alone (out NULL), or CKR_BUFFER_TOO_SMALL
 * with the length needed; either way *count becomes n. 1 when the caller writes the output. */
static int
fits(const void *out, CK_ULONG_PTR count, CK_ULONG n, CK_RV *rv)
{
	*rv = out != NULL && *count < n ? CKR_BUFFER_TOO_SMALL : CKR_OK;
	*count = n;
	return out != NULL && *rv == CKR_OK;
}

static CK_RV
stub_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	CK_RV rv = stub_rv();
	CK_ULONG n = mod.nslots, i;
	uint8_t g = u8();

	(void)present;
	if (rv != CKR_OK)
		return rv;
	if (g >= 0xf0) /* a token came or went since the last call */
		n = g % 5;
	if (!fits(list, count, n, &rv))
		return rv;
	for (i = 0; i < n; i++)
		list[i] = 10 + i;
	return CKR_OK;
}

static CK_RV
stub_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	CK_RV rv = stub_rv();

	(void)slot;
	if (rv != CKR_OK)
		return rv;
	memset(info, ' ', sizeof(*info));
	info->flags = CKF_TOKEN_PRESENT | CKF_HW_SLOT;
	return CKR_OK;
}

static CK_RV
stub_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR ti)
{
	CK_RV rv = stub_rv();
	char s[32];
	uint8_t g = u8();

	if (rv != CKR_OK)
		return rv;
	memset(ti, 0, sizeof(*ti));
	snprintf(s, sizeof(s), "TOKEN%lu", (unsigned long)slot);
	p11mux_pad(ti->label, sizeof(ti->label), s);
	p11mux_pad(ti->manufacturerID, sizeof(ti->manufacturerID), "stub");
	p11mux_pad(ti->model, sizeof(ti->model), "fuzz");
	snprintf(s, sizeof(s), "SERIAL%lu", (unsigned long)slot);
	p11mux_pad(ti->serialNumber, sizeof(ti->serialNumber), s);
	ti->flags = CKF_TOKEN_INITIALIZED | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_RNG;
	if (g >= 0xf0)
		ti->flags ^= (CK_FLAGS)1 << (g % 20);
	ti->ulMaxPinLen = 64;
	ti->ulMinPinLen = 4;
	return CKR_OK;
}

static CK_RV
stub_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	CK_RV rv = stub_rv();
	CK_ULONG n = mod.nmechs, i;
	uint8_t g = u8();

	(void)slot;
	if (rv != CKR_OK)
		return rv;
	if (g >= 0xf0)
		n = g % 9;
	if (!fits(list, count, n, &rv))
		return rv;
	for (i = 0; i < n; i++)
		list[i] = fs_mechs[i % FS_NMECHS].type;
	return CKR_OK;
}

static CK_RV
stub_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	CK_RV rv = stub_rv();
	size_t i;

	(void)slot;
	if (rv != CKR_OK)
		return rv;
	memset(info, 0, sizeof(*info));
	for (i = 0; i < FS_NMECHS; i++)
		if (fs_mechs[i].type == type)
			info->flags = fs_mechs[i].flags;
	info->ulMinKeySize = 256;
	info->ulMaxKeySize = 4096;
	return CKR_OK;
}

static CK_RV
stub_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                 CK_SESSION_HANDLE_PTR ph)
{
	CK_RV rv = stub_rv();

	(void)slot;
	(void)app;
	(void)notify;
	if (rv == CKR_OK) {
		*ph = ++mod.next;
		mod.rw[*ph % 64] = (flags & CKF_RW_SESSION) != 0;
	}
	return rv;
}

/* --- session objects --- */

/* The helper makes objects in a read-only session of its own: no token object can be made. */
static void
check_objects_session(CK_SESSION_HANDLE s)
{
	CHECK(s != CK_INVALID_HANDLE && !mod.rw[s % 64]);
}

/* A new object of class index cls (as attr_shape() reads h % 4); the input says whether the
 * module made it a token object (ignoring the template's CKA_TOKEN false). */
static CK_OBJECT_HANDLE
stub_new_object(int cls)
{
	CK_OBJECT_HANDLE h = 0x100 + 4 * (mod.next_obj++ % 0x1000) + (CK_OBJECT_HANDLE)cls;

	CHECK(mod.nmade < 2);
	mod.made[mod.nmade].h = h;
	mod.made[mod.nmade].token = fs_take(S_TOKEN) >= 0xf0;
	mod.made[mod.nmade].said = -1;
	mod.made[mod.nmade].destroyed = 0;
	mod.nmade++;
	mod.last_made[h % 4] = h;
	return h;
}

static CK_RV
stub_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR ph)
{
	CK_RV rv = stub_rv();

	(void)t;
	(void)n;
	check_objects_session(s);
	if (rv == CKR_OK)
		*ph = stub_new_object(3);
	return rv;
}

static CK_RV
stub_GenerateKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                 CK_OBJECT_HANDLE_PTR ph)
{
	CK_RV rv = stub_rv();

	(void)m;
	(void)t;
	(void)n;
	check_objects_session(s);
	if (rv == CKR_OK)
		*ph = stub_new_object(2);
	return rv;
}

static CK_RV
stub_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t1, CK_ULONG n1,
                     CK_ATTRIBUTE_PTR t2, CK_ULONG n2, CK_OBJECT_HANDLE_PTR pub,
                     CK_OBJECT_HANDLE_PTR priv)
{
	CK_RV rv = stub_rv();

	(void)m;
	(void)t1;
	(void)n1;
	(void)t2;
	(void)n2;
	check_objects_session(s);
	if (rv == CKR_OK) {
		*pub = stub_new_object(1);
		*priv = stub_new_object(0);
	}
	return rv;
}

static CK_RV
stub_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h)
{
	size_t i;

	check_objects_session(s);
	for (i = 0; i < mod.nmade; i++)
		if (mod.made[i].h == h)
			mod.made[i].destroyed = 1;
	return stub_rv();
}

static CK_RV
stub_CloseSession(CK_SESSION_HANDLE s)
{
	(void)s;
	return CKR_OK;
}

static CK_RV
stub_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
	(void)s;
	(void)user;
	(void)pin;
	(void)len;
	return stub_rv();
}

static CK_RV
stub_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	CK_RV rv = stub_rv();

	(void)s;
	(void)t;
	(void)n;
	mod.find_left = mod.nobjs;
	return rv;
}

static CK_RV
stub_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR ph, CK_ULONG max, CK_ULONG_PTR count)
{
	CK_RV rv = stub_rv();
	CK_ULONG n, i;
	uint8_t g = u8();

	(void)s;
	if (rv != CKR_OK)
		return rv;
	n = mod.find_left < max ? mod.find_left : max;
	mod.find_left -= n;
	if (g >= 0xf8) /* more than it said at first */
		n = (g & 7) < max ? (g & 7) : max;
	for (i = 0; i < n; i++)
		ph[i] = 0x10 + (mod.find_left + i) % 8;
	*count = n;
	return CKR_OK;
}

static CK_RV
stub_FindObjectsFinal(CK_SESSION_HANDLE s)
{
	(void)s;
	return CKR_OK;
}

/* Object h (a private, public or secret key or a certificate: h % 4): whether it has
 * attribute type (0), holds it sensitive (1) or lacks it (2), and its length. */
static int
attr_shape(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, size_t *len)
{
	int key = h % 4 != 3, secret = h % 4 == 2, private = h % 4 == 0;

	*len = 1;
	switch (type) {
	case CKA_CLASS:
		*len = sizeof(CK_ULONG);
		return 0;
	case CKA_KEY_TYPE:
	case CKA_MODULUS_BITS:
		*len = sizeof(CK_ULONG);
		return key ? 0 : 2;
	case CKA_TOKEN:
	case CKA_PRIVATE:
	case CKA_SIGN:
	case CKA_VERIFY:
	case CKA_DECRYPT:
	case CKA_ENCRYPT:
	case CKA_SENSITIVE:
		return 0;
	case CKA_LABEL:
		*len = 6;
		return 0;
	case CKA_ID:
		*len = 4;
		return 0;
	case CKA_MODULUS:
		*len = 64;
		return key && !secret ? 0 : 2;
	case CKA_PUBLIC_EXPONENT:
		*len = 3;
		return key && !secret ? 0 : 2;
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
		return private ? 1 : 2;
	case CKA_VALUE:
		*len = 100;
		return secret ? 1 : key ? 2 : 0;
	default:
		return 2;
	}
}

static void
attr_value(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, void *p, size_t len)
{
	static const CK_ULONG classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY,
	                                   CKO_CERTIFICATE};
	CK_ULONG v;

	switch (type) {
	case CKA_CLASS:
	case CKA_KEY_TYPE:
	case CKA_MODULUS_BITS:
		v = type == CKA_CLASS      ? classes[h % 4]
		    : type == CKA_KEY_TYPE ? (h % 4 == 2 ? CKK_AES : CKK_RSA)
		                           : 512;
		memcpy(p, &v, len < sizeof(v) ? len : sizeof(v));
		break;
	case CKA_ID:
	case CKA_LABEL:
		/* A private and a public key share label and ID: a key pair. */
		fs_fill(p, len, (uint32_t)(h / 2));
		break;
	case CKA_TOKEN:
		/* The pool's objects are token objects; a made one as the module made it. */
		*(CK_BBOOL *)p = CK_TRUE;
		for (size_t i = 0; i < mod.nmade && len == 1; i++)
			if (mod.made[i].h == h)
				*(CK_BBOOL *)p = mod.made[i].token ? CK_TRUE : CK_FALSE;
		break;
	default:
		if (len == 1)
			*(CK_BBOOL *)p = CK_TRUE;
		else
			fs_fill(p, len, (uint32_t)type);
		break;
	}
}

static CK_RV
stub_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	CK_RV rv = stub_rv(), ret = CKR_OK;
	uint8_t g = u8();
	CK_ULONG i;
	size_t len;
	int shape;

	(void)s;
	if (rv != CKR_OK)
		return rv;
	for (i = 0; i < n; i++) {
		shape = attr_shape(h, t[i].type, &len);
		/* One attribute answers otherwise this time: other length, sensitive, absent. */
		if (g >= 0xe0 && n > 0 && i == g % n) {
			shape = g % 3 == 0 ? 0 : (int)(g % 3);
			len = g & 0x0f;
		}
		if (shape != 0) {
			t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			ret = shape == 1 ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID;
		} else if (t[i].pValue == NULL) {
			t[i].ulValueLen = len;
		} else if (t[i].ulValueLen < len) {
			t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			ret = CKR_BUFFER_TOO_SMALL;
		} else {
			attr_value(h, t[i].type, t[i].pValue, len);
			t[i].ulValueLen = len;
		}
	}
	/* The helper's question about a new object: is it a token object? */
	for (i = 0; n == 1 && t[0].type == CKA_TOKEN && i < mod.nmade; i++)
		if (mod.made[i].h == h && mod.made[i].said < 0)
			mod.made[i].said =
			        !(ret == CKR_OK && t[0].pValue != NULL && t[0].ulValueLen == 1 &&
			          *(CK_BBOOL *)t[0].pValue == CK_FALSE);
	return ret;
}

static CK_RV
stub_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key)
{
	CK_RV rv = stub_rv();

	(void)s;
	(void)m;
	(void)key;
	mod.outlen = pick_out_len();
	return rv;
}

static CK_RV
stub_digest_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m)
{
	return stub_init(s, m, 0);
}

static CK_RV
stub_run(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	CK_RV rv = stub_rv();
	uint8_t g = u8();

	(void)s;
	(void)in;
	(void)inlen;
	if (rv != CKR_OK)
		return rv;
	if (g >= 0xf8) /* too small, without saying how much is needed */
		return CKR_BUFFER_TOO_SMALL;
	if (!fits(out, outlen, mod.outlen, &rv))
		return rv;
	fs_fill(out, mod.outlen, 5);
	mod.written = mod.outlen;
	return CKR_OK;
}

static CK_RV
stub_Verify(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR sig, CK_ULONG siglen)
{
	(void)s;
	(void)in;
	(void)inlen;
	(void)sig;
	(void)siglen;
	return stub_rv();
}

static CK_RV
stub_GenerateRandom(CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG len)
{
	CK_RV rv = stub_rv();

	(void)s;
	if (rv == CKR_OK)
		fs_fill(out, len, 9);
	return rv;
}

static CK_FUNCTION_LIST stub = {
        .version = {2, 40},
        .C_GetSlotList = stub_GetSlotList,
        .C_GetSlotInfo = stub_GetSlotInfo,
        .C_GetTokenInfo = stub_GetTokenInfo,
        .C_GetMechanismList = stub_GetMechanismList,
        .C_GetMechanismInfo = stub_GetMechanismInfo,
        .C_OpenSession = stub_OpenSession,
        .C_CloseSession = stub_CloseSession,
        .C_Login = stub_Login,
        .C_FindObjectsInit = stub_FindObjectsInit,
        .C_FindObjects = stub_FindObjects,
        .C_FindObjectsFinal = stub_FindObjectsFinal,
        .C_GetAttributeValue = stub_GetAttributeValue,
        .C_SignInit = stub_init,
        .C_Sign = stub_run,
        .C_VerifyInit = stub_init,
        .C_Verify = stub_Verify,
        .C_EncryptInit = stub_init,
        .C_Encrypt = stub_run,
        .C_DecryptInit = stub_init,
        .C_Decrypt = stub_run,
        .C_DigestInit = stub_digest_init,
        .C_Digest = stub_run,
        .C_GenerateRandom = stub_GenerateRandom,
        .C_CreateObject = stub_CreateObject,
        .C_GenerateKey = stub_GenerateKey,
        .C_GenerateKeyPair = stub_GenerateKeyPair,
        .C_DestroyObject = stub_DestroyObject,
};

/* --- requests, and what their answers must be --- */

/* A channel of the helper. */
struct hchan {
	int op; /* an operation channel */
	CK_SESSION_HANDLE s;
	int stopped; /* the helper stopped serving it */
};

/* A request as built, and what its answer must show. */
struct request {
	uint32_t call;
	int refused; /* decodes, but the helper must refuse it (a name too long, too many bytes) */
	int mutated; /* changed after it was built: only its call is known */
	CK_ULONG op_call, random_len;
};

static const uint32_t op_calls[] = {P11MUX_CALL_SIGN, P11MUX_CALL_VERIFY, P11MUX_CALL_ENCRYPT,
                                    P11MUX_CALL_DECRYPT, P11MUX_CALL_DIGEST};

static void
put_op_request(struct p11mux_msg *m, struct request *rq)
{
	uint8_t data[300], sig[64];
	struct fs_mech mc;
	uint8_t b = fs_take(S_CALL);

	rq->op_call = b < 0xf0 ? op_calls[b % 5] : b;
	pick_mech(&mc);
	p11mux_msg_put_ulong(m, rq->op_call);
	p11mux_msg_put_mech(m, &mc.m);
	p11mux_msg_put_ulong(m, 0x10 + u8() % 8);
	fs_fill(data, sizeof(data), 1);
	fs_fill(sig, sizeof(sig), 2);
	p11mux_msg_put_bytes(m, data, u8() % (sizeof(data) + 1));
	p11mux_msg_put_bytes(m, sig, rq->op_call == P11MUX_CALL_VERIFY ? u8() % sizeof(sig) : 0);
}

/* A template for CREATE, GENERATE or a key pair's half: what the daemon lets through, mostly
 * with CKA_TOKEN false (the helper passes it on; the module may ignore it). */
static void
put_template(struct p11mux_msg *m)
{
	static CK_OBJECT_CLASS data = CKO_DATA;
	static CK_ULONG len32 = 32, bits = 2048;
	static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	const CK_ATTRIBUTE all[7] = {
	        {CKA_TOKEN, &no, 1},     {CKA_CLASS, &data, sizeof(data)},
	        {CKA_LABEL, "obj", 3},   {CKA_VALUE_LEN, &len32, sizeof(len32)},
	        {CKA_SIGN, &yes, 1},     {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	        {CKA_VALUE, "value", 5},
	};
	uint8_t g = u8();

	p11mux_msg_put_attrs(m, all + (g >= 0xf0 ? 1 : 0), NULL, g >= 0xf0 ? g % 7 : 3 + g % 5);
}

/* A key generation mechanism, or another. */
static void
put_gen_mech(struct p11mux_msg *m, int pair)
{
	static const CK_MECHANISM gens[4] = {{CKM_AES_KEY_GEN, NULL, 0},
	                                     {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0},
	                                     {CKM_EC_KEY_PAIR_GEN, NULL, 0},
	                                     {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0}};
	struct fs_mech mc;
	uint8_t g = u8();

	if (g >= 0xf0) {
		pick_mech(&mc);
		p11mux_msg_put_mech(m, &mc.m);
	} else {
		p11mux_msg_put_mech(m, &gens[(g + (pair ? 1 : 0)) % 4]);
	}
}

/* Builds a well-formed request for call into b. */
static void
build_request(struct p11mux_buf *b, struct request *rq)
{
	static const char *const idents[] = {"SERIAL10", "TOKEN11", "SERIAL12", "NOSUCH"};
	struct p11mux_msg m = {0};
	char ident[80];
	uint8_t pin[80], g;

	p11mux_msg_request(&m, b, &helper_proto, rq->call, 0);
	switch (rq->call) {
	case HELPER_TOKENS:
		p11mux_msg_put_bytes(&m, "stub.so", 7);
		break;
	case HELPER_INIT:
		g = u8();
		snprintf(ident, sizeof(ident), "%s", idents[g % 4]);
		if (g >= 0xf0) { /* longer than a token's label or serial can be */
			memset(ident, 'x', 64);
			ident[64] = '\0';
			rq->refused = 1;
		}
		p11mux_msg_put_bytes(&m, "stub.so", 7);
		p11mux_msg_put_bytes(&m, ident, strlen(ident));
		p11mux_msg_put_ulong(&m, 10 + u8() % 4);
		p11mux_msg_put_ulong(&m, 1);
		break;
	case HELPER_LOGIN:
		memset(pin, '1', sizeof(pin));
		p11mux_msg_put_bytes(&m, pin, (4 + u8()) % sizeof(pin));
		break;
	case HELPER_READ:
		p11mux_msg_put_ulong(&m, 0x10 + u8() % 8);
		break;
	case HELPER_OP:
		put_op_request(&m, rq);
		break;
	case HELPER_RANDOM:
		g = fs_take(S_LEN);
		rq->random_len = g < 0xf0 ? 32 + g : g == 0xff ? 65537 : 65536;
		rq->refused = rq->random_len > 65536;
		p11mux_msg_put_ulong(&m, rq->random_len);
		break;
	case HELPER_CREATE:
		put_template(&m);
		break;
	case HELPER_GENERATE:
	case HELPER_GENERATE_PAIR:
		put_gen_mech(&m, rq->call == HELPER_GENERATE_PAIR);
		put_template(&m);
		if (rq->call == HELPER_GENERATE_PAIR)
			put_template(&m);
		break;
	case HELPER_DESTROY: /* an object made before (by class), or a token object */
		g = u8();
		p11mux_msg_put_ulong(&m, g < 0xf0 && mod.last_made[g % 4] != 0
		                                 ? mod.last_made[g % 4]
		                                 : 0x10 + g % 8);
		break;
	default: /* FIND: no fields */
		break;
	}
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
}

/* What CREATE, GENERATE or GENERATE_PAIR left: the objects the module made are in a CKR_OK
 * answer (handle, as the module said; CKA_TOKEN false, asked), or all destroyed; one the module
 * says is a token object (or will not say) is destroyed and the answer is
 * CKR_TOKEN_WRITE_PROTECTED. Nothing is left on the device behind a failure. */
static void
check_made(const struct request *rq, CK_RV rv, const struct sc_fields *f)
{
	size_t i, n = rq->call == HELPER_GENERATE_PAIR ? 2 : 1;

	if (rv == CKR_OK) {
		CHECK(mod.nmade == n && f->n == 4 * n);
		for (i = 0; i < n; i++) {
			CHECK(f->f[4 * i].ul == mod.made[i].h);
			CHECK(mod.made[i].said == 0 && !mod.made[i].token);
			CHECK(!mod.made[i].destroyed);
		}
		return;
	}
	for (i = 0; i < mod.nmade; i++) {
		CHECK(mod.made[i].destroyed);
		if (mod.made[i].said == 1 && (i == 0 || mod.made[0].said == 0))
			CHECK(rv == CKR_TOKEN_WRITE_PROTECTED);
	}
}

/* The answer in out to a request of call: it must decode, and say what the module said. */
static void
check_answer(struct p11mux_buf *out, const struct request *rq)
{
	struct p11mux_msg m = {0};
	struct sc_fields f;
	CK_RV rv = 0;
	size_t i;

	CHECK(p11mux_msg_read_any_reply(&m, out, &helper_proto, &rv) == 0);
	CHECK(m.call->code == rq->call);
	CHECK(sc_decode(&m, &f) == 0 && p11mux_msg_end(&m) == 0);
	CHECK(!p11muxd_own_rv(rv) || mod.own_rv);
	TRACE("fuzz_hproto:   helper: %s -> %s\n", helper_calls[rq->call].name, p11mux_rv_name(rv));
	if (rv == CKR_OK && !rq->mutated) {
		switch (rq->call) {
		case HELPER_INIT:
			CHECK(f.f[0].nslots == 1);
			break;
		case HELPER_TOKENS:
			for (i = 0; i < f.f[0].nslots; i++)
				CHECK(f.f[0].slots[i].token.flags & CKF_TOKEN_INITIALIZED);
			break;
		case HELPER_OP:
			if (rq->op_call != P11MUX_CALL_VERIFY)
				CHECK(f.f[0].len == mod.written);
			break;
		case HELPER_RANDOM:
			CHECK(f.f[0].len == rq->random_len);
			break;
		default:
			break;
		}
	}
	if (!rq->mutated && (rq->call == HELPER_CREATE || rq->call == HELPER_GENERATE ||
	                     rq->call == HELPER_GENERATE_PAIR))
		check_made(rq, rv, &f);
	p11mux_msg_clear(&m);
}

/* Changes a frame's payload: cut, a byte changed, bytes added, or garbage. */
static void
mutate(struct p11mux_buf *b)
{
	uint8_t copy[1024], kind = u8() % 4;
	size_t len = p11mux_buf_len(b), k;

	if (len > sizeof(copy))
		len = sizeof(copy);
	memcpy(copy, p11mux_buf_data(b), len);
	switch (kind) {
	case 0:
		len = len > 0 ? u16() % len : 0;
		break;
	case 1:
		if (len > 0)
			copy[u16() % len] ^= 1 + u8() % 255;
		break;
	case 2:
		for (k = 1 + u8() % 16; k > 0 && len < sizeof(copy); k--)
			copy[len++] = u8();
		break;
	default:
		for (len = 0, k = u8() % 48; len < k; len++)
			copy[len] = u8();
		break;
	}
	p11mux_buf_reset(b);
	if (len > 0)
		CHECK(p11mux_buf_put(b, copy, len) == 0);
}

/* The call a request in b decodes to (0: none); b is left as it is. */
static uint32_t
request_call(const struct p11mux_buf *b)
{
	struct p11mux_buf *copy = p11mux_buf_new(HELPER_FRAME_MAX);
	struct p11mux_msg m = {0};
	uint32_t call = 0;

	CHECK(copy != NULL);
	if (p11mux_buf_len(b) > 0)
		CHECK(p11mux_buf_put(copy, p11mux_buf_data(b), p11mux_buf_len(b)) == 0);
	if (p11mux_msg_read(&m, copy, &helper_proto) == 0)
		call = m.call->code;
	p11mux_msg_clear(&m);
	p11mux_buf_free(copy);
	return call;
}

struct helper_run {
	struct helper *h;
	struct hchan ctl, op[2];
	struct p11mux_buf *in, *out;
	int loaded; /* a TOKENS or INIT made the helper take its module */
};

/* One request to the helper, as the input says. */
static void
helper_step(struct helper_run *hr)
{
	static const uint32_t calls[] = {HELPER_TOKENS,        HELPER_INIT,   HELPER_LOGIN,
	                                 HELPER_FIND,          HELPER_READ,   HELPER_OP,
	                                 HELPER_RANDOM,        HELPER_CREATE, HELPER_GENERATE,
	                                 HELPER_GENERATE_PAIR, HELPER_DESTROY};
	uint8_t which = fs_take(FS_STEP) % 14, c = fs_take(S_CHAN);
	/* Steps 0 to 6 and 10 to 13 are the calls, 7 and 8 a mutated one, 9 one on the wrong
	 * channel. */
	struct request rq = {calls[which < 7     ? which
	                           : which >= 10 ? which - 3
	                                         : u8() % 11],
	                     0, 0, 0, 0};
	int op = rq.call == HELPER_OP || rq.call == HELPER_RANDOM || rq.call == HELPER_CREATE ||
	         rq.call == HELPER_GENERATE || rq.call == HELPER_GENERATE_PAIR ||
	         rq.call == HELPER_DESTROY,
	    wrong = which == 9, r, well = which < 7 || which >= 9, early;
	struct hchan *ch = (op != wrong) ? &hr->op[c % 2] : &hr->ctl;

	if (ch->stopped)
		return;
	build_request(hr->in, &rq);
	if (which == 7 || which == 8) {
		mutate(hr->in);
		rq.call = request_call(hr->in);
		rq.mutated = 1;
	}
	/* Before the module is loaded, nothing but TOKENS and INIT. */
	early = !hr->loaded && rq.call != HELPER_TOKENS && rq.call != HELPER_INIT;
	mod.own_rv = 0;
	mod.written = (size_t)-1;
	mod.nmade = 0;
	TRACE("fuzz_hproto: helper step %u: %s on %s\n", which,
	      rq.call != 0 ? helper_calls[rq.call].name : "?",
	      ch->op ? "an operation channel" : "the control channel");
	r = helper_answer(hr->h, ch->op, &ch->s, hr->in, hr->out);
	if (r == 0 && rq.call != 0)
		check_answer(hr->out, &rq);
	/* A well-formed request is answered, whatever the module said (a code of the daemon's
	 * own range included: it once stopped the helper). */
	if (well && !wrong && !rq.refused && !early)
		CHECK(r == 0);
	if (wrong || (well && (rq.refused || early)))
		CHECK(r != 0);
	if (r == 0 && (rq.call == HELPER_TOKENS || rq.call == HELPER_INIT))
		hr->loaded = 1;
	if (r != 0)
		ch->stopped = 1;
	p11mux_buf_reset(hr->in);
	p11mux_buf_reset(hr->out);
}

static void
helper_side(void)
{
	struct helper_run hr = {0};
	size_t steps;

	memset(&mod, 0, sizeof(mod));
	mod.nslots = (2 + u8()) % 5;
	mod.nmechs = (4 + u8()) % 9;
	mod.nobjs = (3 + u8()) % 70;
	CHECK((hr.h = helper_new(&stub)) != NULL);
	hr.in = buf(0);
	hr.out = buf(1);
	hr.ctl.s = hr.op[0].s = hr.op[1].s = CK_INVALID_HANDLE;
	hr.op[0].op = hr.op[1].op = 1;
	/* The control channel stopping ends the helper. */
	for (steps = 0; steps < MAX_STEPS && fs_more() && !hr.ctl.stopped; steps++)
		helper_step(&hr);
	helper_free(hr.h);
}

/* =========================== the daemon's side =========================== */

/* What a reply was made to show; checked against what the daemon made of it. */
struct reply {
	uint32_t call;
	CK_RV rv;
	int exact;  /* sent as built */
	int broken; /* cannot be read as a reply to the call */
	size_t n;   /* slots, mechanisms, handles, attributes, output bytes */
	CK_SLOT_ID id;
	CK_OBJECT_HANDLE made[2]; /* CREATE, GENERATE, GENERATE_PAIR: the objects' handles */
	size_t nattrs[2];         /* ... and their attributes */
};

static const CK_RV daemon_rvs[] = {
        CKR_DEVICE_ERROR,
        CKR_DEVICE_REMOVED,
        CKR_SESSION_HANDLE_INVALID,
        CKR_PIN_INCORRECT,
        CKR_PIN_LOCKED,
        CKR_FUNCTION_FAILED,
        CKR_GENERAL_ERROR,
        CKR_DATA_LEN_RANGE,
        CKR_SIGNATURE_INVALID,
        CKR_KEY_HANDLE_INVALID,
        CKR_USER_NOT_LOGGED_IN,
        CKR_VENDOR_DEFINED | 0x5031UL, /* P11MUX_RV_RETRY */
        CKR_VENDOR_DEFINED | 0x5032UL, /* once the helper's RV_MALFORMED */
        CKR_VENDOR_DEFINED | 0x5033UL, /* LINK_RV_GONE */
        CKR_VENDOR_DEFINED | 0x5034UL, /* LINK_RV_TIMEOUT */
        CKR_TOKEN_NOT_PRESENT,
};

static CK_RV
reply_rv(void)
{
	return FS_RV(fs_take(S_RV), 208, daemon_rvs);
}

static void
put_slot_reply(struct p11mux_msg *m, struct reply *rp, int init)
{
	struct p11mux_slot s[4];
	CK_MECHANISM_TYPE types[4][9];
	CK_MECHANISM_INFO infos[4][9];
	size_t n = init ? 1 : (1 + u8()) % 5, i, j;
	uint8_t g = u8();
	char name[32];

	if (init && g >= 0xf0) /* INIT's answer holds exactly one token */
		n = g & 1 ? 2 : 0;
	memset(s, 0, sizeof(s));
	for (i = 0; i < n; i++) {
		s[i].id = 10 + i + u8() % 4;
		memset(&s[i].slot, ' ', sizeof(s[i].slot));
		snprintf(name, sizeof(name), "TOKEN%zu", i);
		p11mux_pad(s[i].token.label, sizeof(s[i].token.label), name);
		snprintf(name, sizeof(name), "SERIAL%zu", i);
		p11mux_pad(s[i].token.serialNumber, sizeof(s[i].token.serialNumber), name);
		if ((g = u8()) >= 0xf0) /* not blank-padded */
			memset(s[i].token.serialNumber, g, sizeof(s[i].token.serialNumber));
		s[i].token.flags = CKF_TOKEN_INITIALIZED | CKF_RNG | CKF_LOGIN_REQUIRED;
		s[i].nmechs = (3 + u8()) % 9;
		for (j = 0; j < s[i].nmechs; j++) {
			types[i][j] = fs_mechs[j % FS_NMECHS].type;
			infos[i][j].flags = fs_mechs[j % FS_NMECHS].flags;
			infos[i][j].ulMinKeySize = 256;
			infos[i][j].ulMaxKeySize = 4096;
		}
		s[i].mechs = types[i];
		s[i].infos = infos[i];
	}
	rp->n = init ? (n == 1 ? s[0].nmechs : (size_t)-1) : n;
	rp->id = s[0].id;
	p11mux_msg_put_slots(m, s, n);
}

/* READ's answer: an object as a helper reads it (a key pair shares label, ID and modulus). */
static void
put_object_reply(struct p11mux_msg *m, struct reply *rp, size_t index)
{
	static const CK_ULONG classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY,
	                                   CKO_CERTIFICATE};
	CK_ULONG cls = classes[index % 4], kt = index % 4 == 2 ? CKK_AES : CKK_RSA;
	CK_BBOOL yes = CK_TRUE;
	uint8_t label[6], id[4], modulus[64], exp[3] = {1, 0, 1}, junk[16];
	CK_ATTRIBUTE a[12] = {
	        {CKA_CLASS, &cls, sizeof(cls)},
	        {CKA_TOKEN, &yes, 1},
	        {CKA_PRIVATE, &yes, 1},
	        {CKA_LABEL, label, sizeof(label)},
	        {CKA_ID, id, sizeof(id)},
	        {CKA_KEY_TYPE, &kt, sizeof(kt)},
	        {CKA_SIGN, &yes, 1},
	        {CKA_MODULUS, modulus, sizeof(modulus)},
	        {CKA_PUBLIC_EXPONENT, exp, sizeof(exp)},
	        {CKA_PRIVATE_EXPONENT, NULL, 0},
	};
	CK_RV st[12] = {0};
	size_t n = 10, i;
	uint8_t b;

	st[9] = CKR_ATTRIBUTE_SENSITIVE;
	fs_fill(label, sizeof(label), (uint32_t)index / 2);
	fs_fill(id, sizeof(id), (uint32_t)index / 2);
	fs_fill(modulus, sizeof(modulus), (uint32_t)index / 2);
	fs_fill(junk, sizeof(junk), 3);
	for (i = 0; i < n; i++)
		if ((b = u8()) >= 0xf0) { /* another length, or missing */
			if (b & 1) {
				a[i] = a[--n];
				st[i] = st[n];
			} else if (a[i].pValue != NULL) {
				a[i].pValue = junk;
				a[i].ulValueLen = b % sizeof(junk);
			}
		}
	rp->n = n;
	p11mux_msg_put_ulong(m, u8() < 0xf8 ? cls : u64());
	p11mux_msg_put_ulong(m, kt);
	p11mux_msg_put_attrs(m, a, st, n);
}

/* Builds the reply to call (index: the how-manieth of its kind in the action) into b. */
static void
build_reply(struct p11mux_buf *b, uint32_t call, struct reply *rp, size_t index)
{
	struct p11mux_msg m = {0};
	CK_ULONG handles[16];
	uint8_t *out;
	size_t i;

	p11mux_msg_reply(&m, b, &helper_proto, call, 0, rp->rv);
	if (rp->rv == CKR_OK) {
		switch (call) {
		case HELPER_TOKENS:
		case HELPER_INIT:
			put_slot_reply(&m, rp, call == HELPER_INIT);
			break;
		case HELPER_FIND:
			rp->n = (2 + u8()) % 16;
			for (i = 0; i < rp->n; i++)
				handles[i] = 0x10 + i;
			p11mux_msg_put_ulongs(&m, handles, rp->n);
			break;
		case HELPER_READ:
			put_object_reply(&m, rp, index);
			break;
		case HELPER_CREATE:
		case HELPER_GENERATE:
		case HELPER_GENERATE_PAIR:
			/* As READ's answer, after the handle (a pair: public, then private). */
			for (i = 0; i < (call == HELPER_GENERATE_PAIR ? 2u : 1u); i++) {
				rp->made[i] = 0x100 + 4 * index +
				              (call == HELPER_CREATE     ? 3
				               : call == HELPER_GENERATE ? 2
				                                         : 1 - i);
				p11mux_msg_put_ulong(&m, rp->made[i]);
				put_object_reply(&m, rp, (size_t)rp->made[i]);
				rp->nattrs[i] = rp->n;
			}
			break;
		case HELPER_OP:
		case HELPER_RANDOM:
			rp->n = pick_out_len();
			CHECK((out = malloc(rp->n + 1)) != NULL);
			fs_fill(out, rp->n, 7);
			p11mux_msg_put_bytes(&m, out, rp->n);
			free(out);
			break;
		default: /* LOGIN: no fields */
			break;
		}
	}
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
}

/* Writes the reply to call on the fake helper's end fd, as the input says: as built, or
 * mutated, cut, of another call, garbage, or not at all. *rp says which. */
static void
send_reply(int fd, uint32_t call, struct reply *rp, size_t index, struct p11mux_buf *b)
{
	uint8_t action = fs_take(S_ACTION) % 24;
	uint32_t as = call;
	const uint8_t *p;
	size_t len, cut;

	memset(rp, 0, sizeof(*rp));
	rp->call = call;
	if (action == 16)
		as = 1 + (call + u8() % 6) % 7;
	rp->rv = reply_rv();
	build_reply(b, as, rp, index);
	p = p11mux_buf_data(b);
	len = p11mux_buf_len(b);
	rp->exact = action < 16;
	rp->broken = action == 16 || action == 17 || action == 20 || action == 21 || action == 23 ||
	             (action == 18 && rp->rv == CKR_OK);
	/* 17: cut short, in a whole frame (the CK_RV at least is missing); 18: bytes after the
	 * message; 19: one byte changed; 20: announced longer than it is; 21: larger than a frame
	 * may be; 22: garbage; 23: nothing, the helper is gone. */
	if (action == 23)
		return;
	cut = action == 17 && len > 12 ? u16() % 12 : 0;
	fs_send_reply(fd, p, len,
	              action >= 17 && action <= 22 ? FS_SEND_CUT + (action - 17) : FS_SEND_AS_BUILT,
	              cut, HELPER_FRAME_MAX, 1);
}

/* The daemon's end of one member, with a fresh channel (a fake helper) for each action. */
struct daemon_run {
	struct pool_config pc;
	struct member_config mc;
	struct pool pool;
	struct member m;
	struct view view;
	int have_view;
	int fake; /* the fake helper's end of the channel in use */
	struct p11mux_buf *reply, *req;
	struct pobject key;
	CK_OBJECT_HANDLE key_backend[1];
	uint8_t key_holding[1];
};

/* A fresh channel for chan: the fake helper's end in dr->fake. */
static void
new_channel(struct daemon_run *dr, struct chan *c)
{
	int sv[2], size = 1 << 20;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	if (c->fd >= 0)
		close(c->fd);
	c->fd = sv[0];
	c->lost = 0;
	dr->fake = sv[1];
}

/* Every request the daemon wrote on the channel decodes as the helper protocol says; then
 * the channel ends. */
static void
end_channel(struct daemon_run *dr)
{
	struct p11mux_msg m = {0};
	struct sc_fields f;
	int avail = 0;

	/* Whole frames only: the daemon's write of a request returned before it read. */
	while (ioctl(dr->fake, FIONREAD, &avail) == 0 && avail > 0) {
		CHECK(p11mux_frame_recv(dr->fake, dr->req, HELPER_FRAME_MAX) == 0);
		CHECK(p11mux_msg_read(&m, dr->req, &helper_proto) == 0);
		CHECK(sc_decode(&m, &f) == 0 && p11mux_msg_end(&m) == 0);
		p11mux_msg_clear(&m);
	}
	close(dr->fake);
	dr->fake = -1;
}

/* Sends this action's replies, and closes the stream after them. */
static void
replies_done(struct daemon_run *dr)
{
	shutdown(dr->fake, SHUT_WR);
}

/* The CK_RV the daemon makes of a helper's rv. */
static CK_RV
as_daemon(CK_RV rv)
{
	return p11muxd_own_rv(rv) ? CKR_FUNCTION_FAILED : rv;
}

struct tokens {
	struct p11mux_slot *v;
	size_t n;
};

static void
put_module(struct p11mux_msg *m, void *arg)
{
	(void)arg;
	p11mux_msg_put_bytes(m, "stub.so", 7);
}

static CK_RV
got_tokens(struct p11mux_msg *m, void *arg)
{
	struct tokens *t = arg;

	return pool_got_tokens(m, &t->v, &t->n);
}

static void
put_init(struct p11mux_msg *m, void *arg)
{
	(void)arg;
	p11mux_msg_put_bytes(m, "stub.so", 7);
	p11mux_msg_put_bytes(m, "SERIAL0", 7);
	p11mux_msg_put_ulong(m, 10);
	p11mux_msg_put_ulong(m, 1);
}

static CK_RV
got_token(struct p11mux_msg *m, void *arg)
{
	return member_got_token(arg, m);
}

/* TOKENS, INIT or LOGIN on the control channel. */
static void
daemon_ctl_call(struct daemon_run *dr, uint32_t call)
{
	struct tokens t = {NULL, 0};
	struct p11mux_err e = {""};
	struct reply rp;
	CK_RV rv;

	new_channel(dr, &dr->m.link.ctl);
	send_reply(dr->fake, call, &rp, 0, dr->reply);
	replies_done(dr);
	if (call == HELPER_TOKENS)
		rv = chan_call(&dr->m.link.ctl, call, put_module, got_tokens, &t, TIMEOUT_MS, &e,
		               NULL);
	else if (call == HELPER_INIT)
		rv = chan_call(&dr->m.link.ctl, call, put_init, got_token, &dr->m, TIMEOUT_MS, &e,
		               NULL);
	else
		rv = member_login(&dr->m, &e);
	TRACE("fuzz_hproto:   daemon: %s -> %s (%s)\n", helper_calls[call].name, p11mux_rv_name(rv),
	      e.msg);
	CHECK(!rp.broken || rv == LINK_RV_GONE);
	CHECK(rv != CKR_OK || !rp.broken);
	if (rp.exact && rp.rv != CKR_OK)
		CHECK(rv == as_daemon(rp.rv));
	if (rp.exact && rp.rv == CKR_OK && call == HELPER_TOKENS)
		CHECK(rv == CKR_OK && t.n == rp.n);
	if (rp.exact && rp.rv == CKR_OK && call == HELPER_INIT) {
		/* Exactly one token, or the helper is not making sense. */
		CHECK(rp.n == (size_t)-1
		              ? rv == LINK_RV_GONE
		              : rv == CKR_OK && dr->m.nmechs == rp.n && dr->m.slot == rp.id);
		CHECK(strlen(dr->m.label) < sizeof(dr->m.label) &&
		      strlen(dr->m.serial) < sizeof(dr->m.serial));
	}
	free(t.v);
	end_channel(dr);
}

/* FIND, then READ for each handle, as the daemon reads a member's objects; the objects then
 * make (or are mapped onto) the pool's view. */
static void
daemon_objects(struct daemon_run *dr)
{
	struct view_member vm = {"fuzz", 1};
	struct p11mux_err e = {""};
	struct mobject **all = NULL;
	struct reply find, rp;
	size_t nall = 0, i, ok = 0, readable = 0;
	int r, exact;

	new_channel(dr, &dr->m.link.ctl);
	send_reply(dr->fake, HELPER_FIND, &find, 0, dr->reply);
	exact = find.exact;
	for (i = 0; find.rv == CKR_OK && !find.broken && i < find.n; i++) {
		send_reply(dr->fake, HELPER_READ, &rp, i, dr->reply);
		exact = exact && rp.exact;
		ok += rp.rv == CKR_OK;
		if (rp.broken) /* the daemon reads no further */
			break;
	}
	replies_done(dr);
	r = member_read_objects(&dr->m, &all, &nall, &e);
	TRACE("fuzz_hproto:   daemon: FIND/READ -> %d, %zu objects (%s)\n", r, nall, e.msg);
	for (i = 0; i < nall; i++)
		readable += !all[i]->unread;
	/* Every handle FIND gave is there; those READ refused with their handle only. */
	if (exact && find.rv == CKR_OK)
		CHECK(r == 0 && readable == ok && nall == find.n);
	if (exact && find.rv != CKR_OK)
		CHECK(r != 0 && nall == 0);
	CHECK(mobjects_fingerprint(all, nall) == 0);
	if (!dr->have_view) {
		dr->view.label = "fuzz";
		dr->view.nmembers = 1;
		dr->have_view = view_build(&dr->view, &vm, all, nall, &e) == 0;
	} else {
		struct view_change chg;
		size_t nobjects;

		/* A rescan: what it counts agrees with the view. */
		CHECK(view_remap(&dr->view, 0, "fuzz", all, nall, &chg) == 0);
		view_objects(&dr->view, &nobjects);
		CHECK(chg.held <= nobjects && chg.added <= chg.held);
	}
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
	end_channel(dr);
}

/* A member out of service is brought back, as a probe would with a fresh helper. */
static void
member_back(struct member *m)
{
	if (m->state != MEMBER_UP) {
		m->state = MEMBER_UP;
		m->lost = 0;
		m->generation++;
		m->serving = m->next_ticket;
	}
}

/* What finish_locked() makes of a helper's rv for job j. */
static CK_RV
job_rv(const struct job *j, CK_RV rv)
{
	rv = as_daemon(rv);
	if (member_device_failure(rv) &&
	    !(rv == CKR_USER_NOT_LOGGED_IN && (j->pin_gen != 0 || j->call > P11MUX_CALL_RANDOM)))
		return P11MUX_RV_RETRY;
	return rv;
}

/* An operation or random bytes, on the member's operation channel. A member its last reply
 * took down is brought back, as a probe would with a fresh helper. */
static void
daemon_op(struct daemon_run *dr, int random)
{
	struct member *m = &dr->m;
	uint8_t data[64], b = fs_take(S_CALL);
	uint32_t call = random ? P11MUX_CALL_RANDOM : op_calls[b % 5];
	struct fs_mech mc;
	struct reply rp;
	struct job *j;

	pick_mech(&mc);
	fs_fill(data, sizeof(data), 4);
	member_back(m);
	dr->key_backend[0] = 0x10 + u8() % 8;
	if (random)
		j = job_new(call, NULL, NULL, NULL, 32, NULL, 0);
	else
		j = job_new(call, &mc.m, call == P11MUX_CALL_DIGEST ? NULL : &dr->key, data,
		            u8() % sizeof(data), data, call == P11MUX_CALL_VERIFY ? 16 : 0);
	CHECK(j != NULL);
	new_channel(dr, &m->link.op[0]);
	send_reply(dr->fake, random ? HELPER_RANDOM : HELPER_OP, &rp, 0, dr->reply);
	replies_done(dr);
	member_run(m, j);
	TRACE("fuzz_hproto:   daemon: %s -> %s, %zu bytes, member %s\n", p11mux_calls[call].name,
	      p11mux_rv_name(j->rv), j->outlen, member_state_name(m->state));
	/* A reply that cannot be read costs the helper: the member goes down, the operation
	 * goes to another member. */
	if (rp.broken)
		CHECK(j->rv == P11MUX_RV_RETRY && m->state != MEMBER_UP);
	CHECK(j->rv != CKR_OK || !rp.broken);
	if (rp.exact && rp.rv == CKR_OK)
		CHECK(j->rv == CKR_OK && j->outlen == rp.n);
	if (rp.exact && rp.rv != CKR_OK)
		CHECK(j->rv == (member_device_failure(as_daemon(rp.rv)) ? P11MUX_RV_RETRY
		                                                        : as_daemon(rp.rv)));
	job_free(j);
	end_channel(dr);
}

/* A session object made (CREATE, GENERATE, GENERATE_PAIR), read by get_make() through
 * take_object(); or destroyed (DESTROY, pinned to the member's helper generation: an older one
 * is never asked). */
static void
daemon_make(struct daemon_run *dr, int destroy)
{
	static const uint32_t calls[3] = {P11MUX_CALL_CREATE, P11MUX_CALL_GENERATE,
	                                  P11MUX_CALL_GENERATE_PAIR};
	static const uint32_t hcalls[3] = {HELPER_CREATE, HELPER_GENERATE, HELPER_GENERATE_PAIR};
	static CK_BBOOL no = CK_FALSE;
	static CK_ULONG len32 = 32;
	CK_ATTRIBUTE a[2] = {{CKA_TOKEN, &no, 1}, {CKA_VALUE_LEN, &len32, sizeof(len32)}};
	struct p11mux_attrs t1 = {a, NULL, 2}, t2 = {a, NULL, 1};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	struct member *m = &dr->m;
	uint8_t b = fs_take(S_CALL);
	size_t k = b % 3, i, n = k == 2 ? 2 : 1;
	int stale = 0;
	struct reply rp;
	struct job *j;

	member_back(m);
	if (destroy) {
		dr->key_backend[0] = 0x100 + u8() % 8;
		CHECK((j = job_new(P11MUX_CALL_DESTROY, NULL, &dr->key, NULL, 0, NULL, 0)) != NULL);
		stale = b >= 0xf0;
		/* (Stale: of a helper that is not the member's now; 0 would mean none.) */
		j->pin_gen = m->generation + (stale ? 1 : 0);
	} else {
		if (k == 2)
			gen.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		CHECK((j = job_new(calls[k], k == 0 ? NULL : &gen, NULL, NULL, 0, NULL, 0)) !=
		      NULL);
		j->tmpl = &t1;
		j->tmpl2 = &t2;
	}
	new_channel(dr, &m->link.op[0]);
	send_reply(dr->fake, destroy ? HELPER_DESTROY : hcalls[k], &rp, 0, dr->reply);
	replies_done(dr);
	member_run(m, j);
	TRACE("fuzz_hproto:   daemon: %s -> %s, member %s\n", p11mux_calls[j->call].name,
	      p11mux_rv_name(j->rv), member_state_name(m->state));
	if (stale) {
		/* Its objects went with the helper: nothing is sent. */
		CHECK(j->rv == P11MUX_RV_RETRY);
	} else {
		if (rp.broken)
			CHECK(j->rv == P11MUX_RV_RETRY && m->state != MEMBER_UP);
		CHECK(j->rv != CKR_OK || !rp.broken);
		if (rp.exact && rp.rv != CKR_OK)
			CHECK(j->rv == job_rv(j, rp.rv));
		if (rp.exact && rp.rv == CKR_OK)
			CHECK(j->rv == CKR_OK);
	}
	/* What the member made, as the helper said it (get_make, take_object); nothing after a
	 * failure. */
	for (i = 0; !destroy && i < 2; i++) {
		if (j->rv != CKR_OK || i >= n) {
			CHECK(j->rv == CKR_OK || j->made[i] == NULL || !rp.exact);
			continue;
		}
		CHECK(j->made[i] != NULL);
		if (rp.exact)
			CHECK(j->made[i]->h == rp.made[i] && j->made[i]->n == rp.nattrs[i]);
	}
	job_free(j);
	end_channel(dr);
}

static void
daemon_setup(struct daemon_run *dr)
{
	struct p11mux_err e = {""};

	memset(dr, 0, sizeof(*dr));
	dr->pc.op_timeout_ms = TIMEOUT_MS;
	dr->pc.probe_interval_ms = 100;
	dr->pc.probe_max_ms = 1000;
	dr->pc.workers_per_member = 1;
	dr->pc.max_attempts = 2;
	dr->mc.token = "fuzz";
	dr->mc.module = "stub.so";
	dr->pool.cfg = &dr->pc;
	dr->pool.pin = "1234";
	dr->pool.pinlen = 4;
	snprintf(dr->pool.label, sizeof(dr->pool.label), "fuzz");
	CHECK(member_init(&dr->m, &dr->pool, 0, "fuzz", &dr->mc, &e) == 0);
	dr->m.link.nop = 1;
	dr->m.state = MEMBER_UP;
	dr->m.generation = 1;
	dr->m.link.ctl.buf = buf(2);
	dr->m.link.op[0].buf = buf(3);
	dr->reply = buf(4);
	dr->req = buf(5);
	/* The key of the operations: the member holds it as handle key_backend[0]. */
	dr->key.backend = dr->key_backend;
	dr->key.holding = dr->key_holding;
	dr->fake = -1;
}

static void
daemon_side(void)
{
	struct daemon_run dr;
	size_t steps;

	daemon_setup(&dr);
	for (steps = 0; steps < MAX_STEPS && fs_more(); steps++) {
		uint8_t which = fs_take(FS_STEP) % 9;

		TRACE("fuzz_hproto: daemon step %u\n", which);
		switch (which) {
		case 0:
			daemon_ctl_call(&dr, HELPER_TOKENS);
			break;
		case 1:
			daemon_ctl_call(&dr, HELPER_INIT);
			break;
		case 2:
			daemon_ctl_call(&dr, HELPER_LOGIN);
			break;
		case 3:
			daemon_objects(&dr);
			break;
		case 4:
			daemon_op(&dr, 1);
			break;
		case 7:
		case 8:
			daemon_make(&dr, which == 8);
			break;
		default:
			daemon_op(&dr, 0);
			break;
		}
	}
	if (dr.have_view)
		view_free(&dr.view);
	/* The buffers are kept for the next input. */
	dr.m.link.ctl.buf = dr.m.link.op[0].buf = NULL;
	member_stop(&dr.m);
}

static void
run(void)
{
	if (fs_take(S_SIDE) & 1)
		daemon_side();
	else
		helper_side();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fs_begin(data, size);
	run();
	return 0;
}

/* --- the seeds --- */

/* Helper side: the step is the request (TOKENS 0, INIT 1, LOGIN 2, FIND 3, READ 4, OP 5,
 * RANDOM 6, mutated 7 and 8, wrong channel 9, CREATE 10, GENERATE 11, GENERATE_PAIR 12,
 * DESTROY 13). Daemon side: TOKENS 0, INIT 1, LOGIN 2, FIND/READ 3, RANDOM 4, OP 5 and 6,
 * CREATE, GENERATE or GENERATE_PAIR 7 (S_CALL 0, 1, 2), DESTROY 8. */
#define HELPER_SIDE                                                                                \
	{                                                                                          \
		S_SIDE, 0                                                                          \
	}
#define DAEMON_SIDE                                                                                \
	{                                                                                          \
		S_SIDE, 1                                                                          \
	}
#define STEP FS_STEP_
/* Loaded, the token found, logged in. */
#define HREADY HELPER_SIDE, STEP(1), STEP(2)

static const struct fs_seed seeds[] = {
        FS_SEED("h-tokens", HELPER_SIDE, STEP(0)),
        FS_SEED("h-init", HELPER_SIDE, STEP(1)),
        FS_SEED("h-init-other-slot", HELPER_SIDE, STEP(1), {FS_ANY, 1}),
        FS_SEED("h-login", HREADY),
        FS_SEED("h-objects", HREADY, STEP(3), STEP(4), STEP(4)),
        FS_SEED("h-sign", HREADY, STEP(5)),
        FS_SEED("h-sign-big", HREADY, STEP(5), {S_LEN, 0xf0}, STEP(5), {S_LEN, 0xf1}),
        FS_SEED("h-verify", HREADY, STEP(5), {S_CALL, 1}),
        FS_SEED("h-decrypt", HREADY, STEP(5), {S_CALL, 3}),
        FS_SEED("h-digest", HREADY, STEP(5), {S_CALL, 4}),
        FS_SEED("h-random", HREADY, STEP(6), STEP(6), {S_CHAN, 1}),
        FS_SEED("h-random-too-much", HREADY, STEP(6), {S_LEN, 0xff}),
        FS_SEED("h-device-error", HREADY, STEP(5), {S_MOD, 240}, STEP(5)),
        FS_SEED("h-mutated", HREADY, STEP(7), STEP(8)),
        FS_SEED("h-wrong-channel", HREADY, STEP(9)),
        FS_SEED("h-before-load", HELPER_SIDE, STEP(2), STEP(3)),
        FS_SEED("h-create", HREADY, STEP(10)),
        FS_SEED("h-generate", HREADY, STEP(11), {FS_ANY, 0}),
        FS_SEED("h-generate-pair", HREADY, STEP(12), {S_CHAN, 1}),
        FS_SEED("h-destroy", HREADY, STEP(10), STEP(13), STEP(13), {FS_ANY, 0xf3}),
        FS_SEED("h-create-token", HREADY, STEP(10), {S_TOKEN, 0xf0}),
        FS_SEED("h-pair-token", HREADY, STEP(12), {S_TOKEN, 0xf0}),
        FS_SEED("h-create-no-session", HREADY, STEP(10), {S_MOD, 240}, STEP(10)),
        FS_SEED("h-create-before-load", HELPER_SIDE, STEP(10)),
        FS_SEED("d-tokens", DAEMON_SIDE, STEP(0)),
        FS_SEED("d-init", DAEMON_SIDE, STEP(1)),
        FS_SEED("d-login", DAEMON_SIDE, STEP(1), STEP(2)),
        FS_SEED("d-objects", DAEMON_SIDE, STEP(3), STEP(3)),
        FS_SEED("d-random", DAEMON_SIDE, STEP(4)),
        FS_SEED("d-sign", DAEMON_SIDE, STEP(5)),
        FS_SEED("d-verify", DAEMON_SIDE, STEP(5), {S_CALL, 1}),
        FS_SEED("d-sign-cut", DAEMON_SIDE, STEP(5), {S_ACTION, 17}, STEP(5)),
        FS_SEED("d-sign-wrong-call", DAEMON_SIDE, STEP(5), {S_ACTION, 16}, STEP(5)),
        FS_SEED("d-sign-trailing", DAEMON_SIDE, STEP(5), {S_ACTION, 18}),
        FS_SEED("d-sign-short-frame", DAEMON_SIDE, STEP(5), {S_ACTION, 20}),
        FS_SEED("d-sign-huge-frame", DAEMON_SIDE, STEP(5), {S_ACTION, 21}),
        FS_SEED("d-sign-gone", DAEMON_SIDE, STEP(5), {S_ACTION, 23}, STEP(5)),
        FS_SEED("d-sign-own-code", DAEMON_SIDE, STEP(5), {S_RV, 208 + 13}),
        FS_SEED("d-sign-device-removed", DAEMON_SIDE, STEP(5), {S_RV, 208 + 1}, STEP(5)),
        FS_SEED("d-init-two-tokens", DAEMON_SIDE, STEP(1), {FS_ANY, 0xf1}),
        FS_SEED("d-objects-garbage", DAEMON_SIDE, STEP(3), {S_ACTION, 22}),
        FS_SEED("d-create", DAEMON_SIDE, STEP(7)),
        FS_SEED("d-generate", DAEMON_SIDE, STEP(7), {S_CALL, 1}),
        FS_SEED("d-generate-pair", DAEMON_SIDE, STEP(7), {S_CALL, 2}),
        FS_SEED("d-generate-pair-cut", DAEMON_SIDE, STEP(7), {S_CALL, 2}, {S_ACTION, 17}),
        FS_SEED("d-create-trailing", DAEMON_SIDE, STEP(7), {S_ACTION, 18}),
        FS_SEED("d-create-not-logged-in", DAEMON_SIDE, STEP(7), {S_RV, 208 + 10}),
        FS_SEED("d-destroy", DAEMON_SIDE, STEP(8)),
        FS_SEED("d-destroy-stale", DAEMON_SIDE, STEP(8), {S_CALL, 0xf0}),
        FS_SEED("d-destroy-gone", DAEMON_SIDE, STEP(8), {S_ACTION, 23}, STEP(8)),
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fs_trace = getenv("FUZZ_TRACE") != NULL;
	fs_write_seeds_if_asked(*argc, *argv, seeds, sizeof(seeds) / sizeof(seeds[0]), run);
	return 0;
}
