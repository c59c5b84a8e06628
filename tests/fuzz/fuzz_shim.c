/*
 * libFuzzer target: the shim's handling of the daemon's replies (issue 14).
 *
 * The shim (p11mux_shim_fuzz) is driven through the function list C_GetFunctionList gives, by a
 * sequence of PKCS#11 calls that the input chooses. It talks to a fake daemon over a real Unix
 * socket in a temporary directory, so its own connect, peer check and framing code run. The
 * fake daemon runs in the fuzzing thread: the target is linked with
 *   --wrap=p11mux_unix_connect  every connection the shim makes is accepted at once;
 *   --wrap=p11mux_frame_recv    when the shim waits for a reply, the fake daemon first reads
 *                               the request from its end, checks that it decodes, and answers.
 * The answer comes from the input: mostly a well-formed reply to the call (slots with
 * mechanisms, a ticket, handles, objects, outputs of chosen lengths), sometimes another call's
 * reply, a mutated, cut or oversized frame, garbage, or a closed connection. Each request is
 * answered, or its connection closed, before the shim reads: no thread and no wait, so nothing
 * can hang.
 *
 * Besides ASan and UBSan, it checks that every request decodes as the call table says, and
 * that what the shim returns obeys PKCS#11: lengths and bytes of outputs are the reply's, a
 * size query or a short buffer keeps the operation and costs no round trip, any other error
 * ends it, lists hold only what the daemon sent.
 */
#include "module.h"
#include "err.h"
#include "log.h"
#include "proto.h"
#include "sigcodec.h"
#include "transport.h"
#include "fuzz_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_STEPS 40
#define MAX_CONNS 32
#define RND_MAX   (2 * 65536 + 64)

/* The decisions the seeds script (fuzz_stream.h); every other byte of a seed is 0. */
enum { S_ACTION = FS_FIRST, S_RV, S_KIND, S_MECH, S_OBJ, S_PARTS, S_LEN, S_CONNECT };
#define S_STEP FS_STEP
#define take   fs_take
#define u8     fs_u8
#define u16    fs_u16
#define u64    fs_u64
#define fill   fs_fill

/* --- what the mechanisms, objects and error codes look like --- */

static const CK_RV rvs[] = {
        CKR_DEVICE_ERROR,
        CKR_PIN_INCORRECT,
        CKR_PIN_LOCKED,
        CKR_USER_ALREADY_LOGGED_IN,
        CKR_USER_NOT_LOGGED_IN,
        CKR_BUFFER_TOO_SMALL,
        CKR_OBJECT_HANDLE_INVALID,
        CKR_KEY_HANDLE_INVALID,
        CKR_SLOT_ID_INVALID,
        CKR_SIGNATURE_INVALID,
        CKR_DATA_LEN_RANGE,
        CKR_MECHANISM_INVALID,
        CKR_FUNCTION_FAILED,
        CKR_GENERAL_ERROR,
        CKR_VENDOR_DEFINED | 0x5031UL,
        CKR_CRYPTOKI_NOT_INITIALIZED,
};

/* The CK_RV of a reply: mostly CKR_OK. */
static CK_RV
pick_rv(void)
{
	return FS_RV(take(S_RV), 208, rvs);
}

/* Lengths of outputs, data and attribute values: small ones mostly, some large. */
static size_t
pick_len(size_t dflt)
{
	static const size_t lens[] = {0, 1, 20, 32, 64, 256, 512, 4096};
	uint8_t b = u8();

	if (b == 0)
		return dflt;
	if (b < 0xf0)
		return lens[b % 8];
	return u16() % 20000;
}

/* --- the fake daemon --- */

static struct {
	int listen_fd;
	char dir[64], path[128], params[256];
	struct {
		int client, server; /* server -1: closed by the daemon */
	} conns[MAX_CONNS];
	size_t nconns;
	struct p11mux_buf *req, *rep;
	uint64_t requests; /* requests answered */
	/* What the replies said, for the checks. A reply that was not sent as built (mutated,
	 * another call's, garbage) makes its call dirty: its checks are off for the input. */
	int dirty[P11MUX_CALL_COUNT];
	CK_SLOT_ID slots[256];
	size_t nslots;
	CK_OBJECT_HANDLE handles[1024];
	size_t nhandles;
	int slots_lost, handles_lost; /* more sent than remembered: their checks are off */
	size_t max_object_frame;      /* largest frame sent with objects */
	uint8_t *out;                 /* the last output of an operation, sent with CKR_OK */
	size_t outlen;
	uint8_t rnd[RND_MAX]; /* the random bytes sent with CKR_OK since the last reset */
	size_t nrnd;
	/* The daemon's instance in the CLIENT replies sent as built: another one than before
	 * means the shim must forget the session objects it cached. */
	CK_ULONG instance, sent_instance;
	int have_instance;
	unsigned epoch; /* how many times the instance changed */
} fake = {.listen_fd = -1};

static void
fake_cleanup(void)
{
	if (fake.listen_fd >= 0)
		close(fake.listen_fd);
	unlink(fake.path);
	rmdir(fake.dir);
}

/* The listening socket in a directory of our own: the shim's peer check passes (same uid,
 * nothing writable by others). */
static void
fake_setup(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *tmp = getenv("TMPDIR");

	/* A socket's path has room for 107 bytes. */
	if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(fake.dir, sizeof(fake.dir), "%s/fuzz_shim.XXXXXX", tmp);
	CHECK(mkdtemp(fake.dir) != NULL);
	snprintf(fake.path, sizeof(fake.path), "%s/p11mux.sock", fake.dir);
	snprintf(fake.params, sizeof(fake.params), "socket=\"%s\" reconnect_ms=0", fake.path);
	memcpy(sa.sun_path, fake.path, strlen(fake.path) + 1);
	CHECK((fake.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0);
	CHECK(bind(fake.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(chmod(fake.path, 0600) == 0);
	CHECK(listen(fake.listen_fd, 64) == 0);
	CHECK((fake.req = p11mux_buf_new(P11MUX_FRAME_MAX)) != NULL);
	CHECK((fake.rep = p11mux_buf_new(P11MUX_FRAME_MAX)) != NULL);
	atexit(fake_cleanup);
}

static void
fake_close_server(size_t i)
{
	if (fake.conns[i].server >= 0)
		close(fake.conns[i].server);
	fake.conns[i].server = -1;
}

/* Forgets every connection (the shim has closed its ends, at C_Finalize). */
static void
fake_reset(void)
{
	size_t i;

	for (i = 0; i < fake.nconns; i++)
		fake_close_server(i);
	fake.nconns = 0;
	fake.requests = 0;
	memset(fake.dirty, 0, sizeof(fake.dirty));
	fake.nslots = fake.nhandles = fake.max_object_frame = fake.nrnd = 0;
	fake.slots_lost = fake.handles_lost = 0;
	fake.have_instance = 0;
	free(fake.out);
	fake.out = NULL;
	fake.outlen = 0;
}

int __real_p11mux_unix_connect(const char *path);
int __real_p11mux_frame_recv(int fd, struct p11mux_buf *b, size_t max);

/* The shim connects: the daemon accepts at once, or (input's choice) is not there. */
int
__wrap_p11mux_unix_connect(const char *path)
{
	int fd, srv, size = 1 << 20;
	size_t i;

	if (take(S_CONNECT) == 0xff) {
		errno = ECONNREFUSED;
		return -1;
	}
	CHECK((fd = __real_p11mux_unix_connect(path)) >= 0);
	CHECK((srv = accept4(fake.listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0);
	setsockopt(srv, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	/* A descriptor number the shim closed and got again is a new connection. */
	for (i = 0; i < fake.nconns && fake.conns[i].client != fd; i++)
		;
	if (i == fake.nconns) {
		CHECK(fake.nconns < MAX_CONNS);
		fake.conns[fake.nconns++].server = -1;
	}
	fake_close_server(i);
	fake.conns[i].client = fd;
	fake.conns[i].server = srv;
	TRACE("fuzz_shim:   connection %d (daemon's end %d)\n", fd, srv);
	return fd;
}

/* --- building replies --- */

/* Whether v is one of the n values of list. */
static int
listed(const CK_ULONG *list, size_t n, CK_ULONG v)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (list[i] == v)
			return 1;
	return 0;
}

/* Remembers v once in list; 0 when the list is full (the checks on it are then off). */
static int
remember(CK_ULONG *list, size_t *n, size_t cap, CK_ULONG v)
{
	if (listed(list, *n, v))
		return 1;
	if (*n == cap)
		return 0;
	list[(*n)++] = v;
	return 1;
}

#define slot_sent(id)  listed(fake.slots, fake.nslots, (id))
#define handle_sent(h) listed(fake.handles, fake.nhandles, (h))
#define remember_handle(h)                                                                         \
	(fake.handles_lost |= !remember(fake.handles, &fake.nhandles,                              \
	                                sizeof(fake.handles) / sizeof(fake.handles[0]), (h)))

static void
put_slots_reply(struct p11mux_msg *m)
{
	struct p11mux_slot s[20];
	CK_MECHANISM_TYPE types[20][FS_NMECHS];
	CK_MECHANISM_INFO infos[20][FS_NMECHS];
	size_t n = (1 + u8()) % 20, i, j, nm, first;

	memset(s, 0, sizeof(s));
	for (i = 0; i < n; i++) {
		uint8_t b = u8();

		s[i].id = b < 0xf0 ? (CK_SLOT_ID)(i + b % 4) : (CK_SLOT_ID)u64();
		memset(s[i].slot.slotDescription, ' ', sizeof(s[i].slot.slotDescription));
		memset(s[i].token.label, 'L', sizeof(s[i].token.label));
		s[i].slot.flags = CKF_TOKEN_PRESENT;
		s[i].token.flags = CKF_TOKEN_INITIALIZED | CKF_LOGIN_REQUIRED |
		                   CKF_USER_PIN_INITIALIZED | CKF_RNG;
		if ((b = u8()) != 0)
			s[i].token.flags ^= (CK_FLAGS)1 << (b % 24);
		s[i].token.ulMaxPinLen = 255;
		nm = FS_NMECHS - u8() % (FS_NMECHS + 1);
		first = u8() % FS_NMECHS;
		for (j = 0; j < nm; j++) {
			types[i][j] = fs_mechs[(first + j) % FS_NMECHS].type;
			infos[i][j].ulMinKeySize = 256;
			infos[i][j].ulMaxKeySize = 4096;
			infos[i][j].flags = fs_mechs[(first + j) % FS_NMECHS].flags;
		}
		s[i].nmechs = nm;
		s[i].mechs = types[i];
		s[i].infos = infos[i];
		if (!remember(fake.slots, &fake.nslots, sizeof(fake.slots) / sizeof(fake.slots[0]),
		              s[i].id))
			fake.slots_lost = 1;
	}
	p11mux_msg_put_slots(m, s, n);
}

static void
put_find_reply(struct p11mux_msg *m, int versioned)
{
	CK_ULONG h[16];
	size_t n = (2 + u8()) % 16, i;

	for (i = 0; i < n; i++) {
		h[i] = 0x100 + i + u8() % 8;
		remember_handle(h[i]);
	}
	p11mux_msg_put_ulongs(m, h, n);
	/* The view's version: mostly the same, sometimes another (a rescan: the shim drops
	 * the token objects it cached). */
	if (versioned)
		p11mux_msg_put_ulong(m, u8() < 0xe0 ? 1 : u8());
}

/* An object for handle h: a private, public or secret key or a certificate (h % 4), each
 * attribute as a device would give it unless the input says otherwise. */
static void
put_object_reply(struct p11mux_msg *m, CK_OBJECT_HANDLE h)
{
	static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY,
	                                          CKO_CERTIFICATE};
	CK_OBJECT_CLASS cls = classes[h % 4];
	CK_KEY_TYPE kt = cls == CKO_SECRET_KEY ? CKK_AES : CKK_RSA;
	CK_BBOOL yes = CK_TRUE, priv = cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
	uint8_t label[16], id[8], value[2048], junk[16];
	CK_ATTRIBUTE a[16] = {
	        {CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, 1},
	        {CKA_PRIVATE, &priv, 1},        {CKA_LABEL, label, sizeof(label)},
	        {CKA_ID, id, sizeof(id)},       {CKA_SIGN, &yes, 1},
	        {CKA_DECRYPT, &yes, 1},         {CKA_VERIFY, &yes, 1},
	        {CKA_ENCRYPT, &yes, 1},         {CKA_KEY_TYPE, &kt, sizeof(kt)},
	        {CKA_MODULUS, value, 256},
	};
	CK_RV st[16] = {0};
	size_t n = 11, i, k;
	uint8_t b;

	fill(label, sizeof(label), (uint32_t)h);
	fill(id, sizeof(id), (uint32_t)h + 1);
	fill(value, sizeof(value), (uint32_t)h + 2);
	fill(junk, sizeof(junk), 99);
	for (i = 0; i < n; i++) {
		switch ((b = u8()) >> 5) {
		case 5: /* sensitive: no value */
			st[i] = CKR_ATTRIBUTE_SENSITIVE;
			a[i].pValue = NULL;
			break;
		case 6: /* another length */
			if (a[i].type == CKA_MODULUS) {
				a[i].ulValueLen = pick_len(256) % sizeof(value);
			} else {
				a[i].pValue = junk;
				a[i].ulValueLen = b % 12;
			}
			break;
		case 7: /* absent */
			a[i] = a[--n];
			st[i] = st[n];
			i--;
			break;
		default:
			break;
		}
	}
	/* Some more, of any type. */
	for (k = u8() % 8 / 5 * 4; k > 0 && n < 16; k--, n++) {
		a[n].type = (CK_ATTRIBUTE_TYPE)u16();
		a[n].pValue = junk;
		a[n].ulValueLen = u8() % sizeof(junk);
		st[n] = CKR_OK;
	}
	p11mux_msg_put_attrs(m, a, st, n);
}

/* An operation's output; kept for the checks (record) when it answers the request. */
static void
put_output(struct p11mux_msg *m, uint32_t call, size_t want, int record)
{
	size_t len = call == P11MUX_CALL_RANDOM ? want : pick_len(256);
	uint8_t *p;
	uint8_t b;

	if (call == P11MUX_CALL_RANDOM && (b = u8()) >= 0xf0)
		len = b == 0xff ? u16() : want + (b & 1 ? 1 : (size_t)-1);
	if (len > 65536 + 1)
		len = 65536 + 1;
	CHECK((p = malloc(len + 1)) != NULL);
	fill(p, len, (uint32_t)fake.requests);
	p11mux_msg_put_bytes(m, p, len);
	if (record && call == P11MUX_CALL_RANDOM && len == want && fake.nrnd + len <= RND_MAX) {
		memcpy(fake.rnd + fake.nrnd, p, len);
		fake.nrnd += len;
	}
	if (record && call != P11MUX_CALL_RANDOM) {
		free(fake.out);
		fake.out = p;
		fake.outlen = len;
		return;
	}
	free(p);
}

/* The reply to call with rv, built in fake.rep; req is the request's fields, record says
 * whether the reply is for the request's own call. */
static void
build_reply(uint32_t call, CK_RV rv, const struct sc_fields *req, int record)
{
	struct p11mux_msg m = {0};
	uint8_t ticket[SHIM_TICKET_LEN + 8];
	size_t tlen;

	p11mux_msg_begin_reply(&m, fake.rep, call, rv);
	if (rv == CKR_OK) {
		switch (call) {
		case P11MUX_CALL_HELLO:
			p11mux_msg_put_ulong(&m, u8() < 0xf8 ? P11MUX_PROTO_VERSION : u8() % 4);
			p11mux_msg_put_bytes(&m, "p11muxd", 7);
			break;
		case P11MUX_CALL_GET_SLOTS:
			put_slots_reply(&m);
			break;
		case P11MUX_CALL_LOGIN:
			tlen = u8() < 0xf0 ? SHIM_TICKET_LEN : u8() % sizeof(ticket);
			fill(ticket, sizeof(ticket), 7);
			p11mux_msg_put_bytes(&m, ticket, tlen);
			break;
		case P11MUX_CALL_FIND: /* (version 3's, as a reply of the wrong call) */
		case P11MUX_CALL_FIND_VERSIONED:
			put_find_reply(&m, call == P11MUX_CALL_FIND_VERSIONED);
			break;
		case P11MUX_CALL_GET_OBJECT:
			put_object_reply(&m, req->n > 1 ? req->f[1].ul : 0);
			break;
		case P11MUX_CALL_SIGN:
		case P11MUX_CALL_ENCRYPT:
		case P11MUX_CALL_DECRYPT:
		case P11MUX_CALL_DIGEST:
		case P11MUX_CALL_RANDOM:
			put_output(&m, call, req->n > 1 ? req->f[1].ul : 0, record);
			break;
		case P11MUX_CALL_CREATE:
		case P11MUX_CALL_GENERATE:
		case P11MUX_CALL_GENERATE_PAIR: {
			/* Session objects: usually a session object's handle (of a new number each,
			 * its class as put_object_reply() reads h % 4: a secret key made or
			 * generated, a pair's public then private key, another object), now and
			 * then not. */
			int k, n = call == P11MUX_CALL_GENERATE_PAIR ? 2 : 1, cls = 3;
			size_t a;

			for (a = 0;
			     call == P11MUX_CALL_CREATE && req->n > 2 && a < req->f[2].nattrs; a++)
				if (req->f[2].attrs[a].type == CKA_KEY_TYPE)
					cls = 2;
			if (call == P11MUX_CALL_GENERATE)
				cls = 2;
			for (k = 0; k < n; k++) {
				CK_OBJECT_HANDLE h =
				        u8() < 0xf0
				                ? P11MUX_SESSION_OBJECT |
				                          (fake.requests & 0xfffff) << 4 |
				                          (CK_OBJECT_HANDLE)k << 2 |
				                          (CK_OBJECT_HANDLE)(n == 2 ? 1 - k : cls)
				                : u8();

				if (record)
					remember_handle(h);
				p11mux_msg_put_ulong(&m, h);
				put_object_reply(&m, h);
			}
			break;
		}
		case P11MUX_CALL_CLIENT: /* the daemon's instance: now and then another one */
			fake.sent_instance = u8() < 0xf0 ? 7 : u8();
			p11mux_msg_put_ulong(&m, fake.sent_instance);
			break;
		default: /* LOGOUT, VERIFY, DESTROY, DROP: no fields */
			break;
		}
	}
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
}

/* --- answering --- */

/* Answers the request in fake.req, from connection i, as the input says. */
static void
answer(size_t i, uint32_t call, const struct sc_fields *req)
{
	int fd = fake.conns[i].server;
	uint8_t action = take(S_ACTION) % 32;
	uint32_t as = call;
	const uint8_t *p;
	size_t len, cut;

	CK_RV rv;

	fake.requests++;
	if (action == 22)
		as = 1 + (call + u8() % 11) % 12;
	rv = pick_rv();
	TRACE("fuzz_shim:   daemon: %s -> action %u, %s %s\n", p11mux_calls[call].name, action,
	      p11mux_calls[as].name, p11mux_rv_name(rv));
	build_reply(as, rv, req, as == call);
	p = p11mux_buf_data(fake.rep);
	len = p11mux_buf_len(fake.rep);
	/* (Objects come with GET_OBJECT, and with the calls that make session objects.) */
	if ((call == P11MUX_CALL_GET_OBJECT || call == P11MUX_CALL_CREATE ||
	     call == P11MUX_CALL_GENERATE || call == P11MUX_CALL_GENERATE_PAIR) &&
	    len + 4096 > fake.max_object_frame)
		fake.max_object_frame = len + 4096;
	if (action >= 22)
		fake.dirty[call] = 1;
	if (call == P11MUX_CALL_CLIENT && action < 22 && rv == CKR_OK) {
		if (fake.have_instance && fake.instance != fake.sent_instance)
			fake.epoch++;
		fake.instance = fake.sent_instance;
		fake.have_instance = 1;
	}
	/* 23: cut short, in a whole frame; 24: bytes after the message; 25: one byte changed;
	 * 26: announced longer than it is; 27: larger than a frame may be; 28: garbage from the
	 * input; 29: the daemon goes away instead of answering; 30: answers, then goes away;
	 * 31: an empty frame. */
	if (action != 29) {
		cut = action == 23 && len > 0 ? u16() % len : 0;
		fs_send_reply(fd, p, len,
		              action >= 23 && action <= 28 ? FS_SEND_CUT + (action - 23)
		              : action == 31               ? FS_SEND_EMPTY
		                                           : FS_SEND_AS_BUILT,
		              cut, P11MUX_FRAME_MAX, 0);
	}
	if (action == 29 || action == 30)
		fake_close_server(i);
}

/* The request the shim sent on fd must decode as the call table says; then it is answered. */
static void
serve(int fd)
{
	struct p11mux_msg m = {0};
	struct sc_fields f;
	size_t i;
	int srv, avail = 0;

	for (i = 0; i < fake.nconns && fake.conns[i].client != fd; i++)
		;
	CHECK(i < fake.nconns);
	if ((srv = fake.conns[i].server) < 0)
		return; /* closed: the shim reads the end of the stream */
	/* The shim's send returned: the whole request is there, and reading it waits for nothing
	 * (a deadline could pass in a stall of the machine, with the bytes there). */
	CHECK(ioctl(srv, FIONREAD, &avail) == 0 && avail >= 4);
	CHECK(__real_p11mux_frame_recv(srv, fake.req, P11MUX_FRAME_MAX) == 0);
	CHECK(p11mux_msg_read_request(&m, fake.req) == 0);
	CHECK(sc_decode(&m, &f) == 0);
	CHECK(p11mux_msg_end(&m) == 0);
	switch (m.call->code) {
	case P11MUX_CALL_HELLO:
		CHECK(f.f[0].ul == P11MUX_PROTO_MAGIC);
		break;
	case P11MUX_CALL_LOGIN:
		CHECK(f.f[2].len <= SHIM_MAX_PIN);
		CHECK(f.f[3].len == 0 || f.f[3].len == SHIM_TICKET_LEN);
		break;
	case P11MUX_CALL_RANDOM:
		CHECK(f.f[1].ul <= 65536);
		break;
	default:
		break;
	}
	answer(i, m.call->code, &f);
	p11mux_msg_clear(&m);
}

/* The shim waits for a reply: the daemon answers first. */
int
__wrap_p11mux_frame_recv(int fd, struct p11mux_buf *b, size_t max)
{
	serve(fd);
	return __real_p11mux_frame_recv(fd, b, max);
}

/* --- the application --- */

static struct {
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slots[SHIM_MAX_SLOTS];
	CK_ULONG nslots;
	CK_SESSION_HANDLE sess[8];
	size_t nsess;
	CK_OBJECT_HANDLE objs[16];
	size_t nobjs;
	/* Session objects C_CreateObject, C_GenerateKey, C_GenerateKeyPair made: the session and
	 * slot, and whether the shim must have forgotten what it cached of them (destroyed,
	 * dropped with their session, or the daemon restarted; 2: checked, and no longer
	 * followed: a real daemon would not give it again, this one might). */
	struct {
		CK_OBJECT_HANDLE h;
		CK_SESSION_HANDLE s;
		CK_SLOT_ID slot;
		int forgotten;
		unsigned epoch; /* the daemon's instance it was made in (fake.epoch) */
	} made[8];
	size_t nmade;
} app;

static CK_RV
app_init(void)
{
	CK_C_INITIALIZE_ARGS args = {0};

	args.flags = CKF_OS_LOCKING_OK;
	args.pReserved = fake.params;
	app.nslots = app.nsess = app.nobjs = app.nmade = 0;
	return app.f->C_Initialize(&args);
}

static void
app_finalize(void)
{
	app.f->C_Finalize(NULL);
	/* Tickets are kept across C_Finalize for a forked child: not across inputs. */
	explicit_bzero(shim.kept, sizeof(shim.kept));
	shim.nkept = 0;
	shim.reached = 0;
	fake_reset();
}

static CK_SLOT_ID
pick_slot(void)
{
	uint8_t b = u8();

	if (app.nslots > 0 && b < 0xf0)
		return app.slots[b % app.nslots];
	return b & 7;
}

static CK_SESSION_HANDLE
pick_session(void)
{
	uint8_t b = u8();

	if (app.nsess > 0 && b < 0xf0)
		return app.sess[b % app.nsess];
	return b & 15;
}

static CK_OBJECT_HANDLE
pick_object(void)
{
	uint8_t b = take(S_OBJ);

	if (app.nobjs > 0 && b < 0xc0)
		return app.objs[b % app.nobjs];
	if (app.nmade > 0 && b >= 0xe0 && b < 0xf0)
		return app.made[b % app.nmade].h;
	return 0x100 + (b & 15);
}

static void
step_slot_list(void)
{
	CK_SLOT_ID *list;
	CK_ULONG n = 0, m, i;
	CK_RV rv;

	if ((rv = app.f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK)
		return;
	CHECK(n <= SHIM_MAX_SLOTS);
	CHECK((list = calloc(n + 1, sizeof(*list))) != NULL);
	if (n > 0) {
		m = n - 1;
		CHECK(app.f->C_GetSlotList(CK_TRUE, list, &m) == CKR_BUFFER_TOO_SMALL && m == n);
	}
	m = n;
	CHECK(app.f->C_GetSlotList(CK_TRUE, list, &m) == CKR_OK && m == n);
	for (i = 0; i < n; i++)
		CHECK(fake.dirty[P11MUX_CALL_GET_SLOTS] || fake.slots_lost || slot_sent(list[i]));
	memcpy(app.slots, list, n * sizeof(*list));
	app.nslots = n;
	free(list);
}

static void
step_slot_info(void)
{
	CK_SLOT_ID id = pick_slot();
	CK_MECHANISM_TYPE *types;
	CK_MECHANISM_INFO mi;
	CK_TOKEN_INFO ti;
	CK_SLOT_INFO si;
	CK_ULONG n = 0, m, i;

	app.f->C_GetSlotInfo(id, &si);
	app.f->C_GetTokenInfo(id, &ti);
	if (app.f->C_GetMechanismList(id, NULL, &n) != CKR_OK)
		return;
	CHECK((types = calloc(n + 1, sizeof(*types))) != NULL);
	m = n;
	CHECK(app.f->C_GetMechanismList(id, types, &m) == CKR_OK && m == n);
	for (i = 0; i < n; i++)
		CHECK(app.f->C_GetMechanismInfo(id, types[i], &mi) == CKR_OK);
	free(types);
}

static void
step_open(void)
{
	CK_SESSION_HANDLE h;
	CK_SESSION_INFO info;
	CK_SLOT_ID id = pick_slot();
	CK_FLAGS flags = CKF_SERIAL_SESSION | (u8() & 1 ? CKF_RW_SESSION : 0);

	if (app.f->C_OpenSession(id, flags, NULL, NULL, &h) != CKR_OK)
		return;
	CHECK(app.f->C_GetSessionInfo(h, &info) == CKR_OK && info.slotID == id);
	if (app.nsess < sizeof(app.sess) / sizeof(app.sess[0]))
		app.sess[app.nsess++] = h;
}

static void
step_close(void)
{
	CK_SESSION_HANDLE h = pick_session();
	CK_SESSION_INFO info;

	size_t i;

	if (app.f->C_CloseSession(h) == CKR_OK) {
		CHECK(app.f->C_GetSessionInfo(h, &info) == CKR_SESSION_HANDLE_INVALID);
		/* Its session objects end with it (DROP). */
		for (i = 0; i < app.nmade; i++)
			if (app.made[i].s == h)
				app.made[i].forgotten += app.made[i].forgotten == 0;
	}
}

static int
user_state(CK_SESSION_HANDLE h)
{
	CK_SESSION_INFO info;

	if (app.f->C_GetSessionInfo(h, &info) != CKR_OK)
		return -1;
	return info.state == CKS_RO_USER_FUNCTIONS || info.state == CKS_RW_USER_FUNCTIONS;
}

static void
step_login(void)
{
	static const CK_USER_TYPE users[] = {CKU_USER, CKU_SO, CKU_CONTEXT_SPECIFIC, 7};
	CK_SESSION_HANDLE h = pick_session();
	uint8_t u = u8(), pin[300], b = u8();
	CK_USER_TYPE user = users[u < 0xf0 ? 0 : u % 4];
	CK_ULONG len = b < 0xf0 ? 4 : b == 0xf0 ? 0 : b == 0xf1 ? sizeof(pin) : b % 40;

	memset(pin, '1', sizeof(pin));
	if (app.f->C_Login(h, user, b == 0xf2 ? NULL : pin, len) == CKR_OK)
		CHECK(user_state(h) == 1);
}

static void
step_logout(void)
{
	CK_SESSION_HANDLE h = pick_session();

	if (app.f->C_Logout(h) == CKR_OK)
		CHECK(user_state(h) == 0);
}

static void
step_find(void)
{
	CK_SESSION_HANDLE h = pick_session();
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, "key", 3}};
	CK_OBJECT_HANDLE found[5];
	CK_ULONG n, max, i, rounds;

	if (app.f->C_FindObjectsInit(h, tmpl, u8() % 3) != CKR_OK)
		return;
	CHECK(app.f->C_FindObjectsInit(h, tmpl, 0) == CKR_OPERATION_ACTIVE);
	for (rounds = 0; rounds < 20; rounds++) {
		max = (u8() + 2) % 6;
		CHECK(app.f->C_FindObjects(h, found, max, &n) == CKR_OK);
		CHECK(n <= max);
		for (i = 0; i < n; i++) {
			CHECK(fake.dirty[P11MUX_CALL_FIND_VERSIONED] || fake.handles_lost ||
			      handle_sent(found[i]));
			if (app.nobjs < sizeof(app.objs) / sizeof(app.objs[0]))
				app.objs[app.nobjs++] = found[i];
		}
		if (n == 0 && max > 0)
			break;
	}
	CHECK(app.f->C_FindObjectsFinal(h) == CKR_OK);
	CHECK(app.f->C_FindObjects(h, found, 1, &n) == CKR_OPERATION_NOT_INITIALIZED);
}

/* A size query, the values in buffers of the sizes it gave, and a buffer one byte short. (The
 * calls after the first read the object the shim cached: a session object is cached only as it
 * is made, so one that is not, read again from the daemon at each call, may change between
 * them, and is checked by its first call only.) */
static void
step_attributes(void)
{
	static const CK_ATTRIBUTE_TYPE types[] = {CKA_CLASS,    CKA_LABEL, CKA_ID,
	                                          CKA_MODULUS,  CKA_SIGN,  CKA_PRIVATE,
	                                          CKA_KEY_TYPE, CKA_VALUE, 0x1234};
	CK_SESSION_HANDLE h = pick_session();
	CK_OBJECT_HANDLE o = pick_object();
	CK_ATTRIBUTE t[4], one;
	CK_ULONG lens[4], n = 1 + u8() % 4, i;
	uint64_t before = fake.requests;
	uint8_t *shorter;
	CK_RV rv;

	for (i = 0; i < n; i++) {
		t[i].type = types[u8() % (sizeof(types) / sizeof(types[0]))];
		t[i].pValue = NULL;
		t[i].ulValueLen = 0;
	}
	rv = app.f->C_GetAttributeValue(h, o, t, n);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_SENSITIVE && rv != CKR_ATTRIBUTE_TYPE_INVALID)
		return;
	for (i = 0; i < n; i++)
		CHECK(t[i].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
		      t[i].ulValueLen <= fake.max_object_frame);
	if ((o & P11MUX_SESSION_OBJECT) && fake.requests != before)
		return;
	for (i = 0; i < n; i++) {
		lens[i] = t[i].ulValueLen;
		if (lens[i] != CK_UNAVAILABLE_INFORMATION)
			CHECK((t[i].pValue = malloc(lens[i] ? lens[i] : 1)) != NULL);
	}
	app.f->C_GetAttributeValue(h, o, t, n);
	for (i = 0; i < n; i++) {
		if (t[i].pValue == NULL)
			continue;
		CHECK(t[i].ulValueLen == lens[i]);
		if (lens[i] > 0) {
			CHECK((shorter = malloc(lens[i] - 1 ? lens[i] - 1 : 1)) != NULL);
			one.type = t[i].type;
			one.pValue = shorter;
			one.ulValueLen = lens[i] - 1;
			CHECK(app.f->C_GetAttributeValue(h, o, &one, 1) == CKR_BUFFER_TOO_SMALL);
			CHECK(one.ulValueLen == CK_UNAVAILABLE_INFORMATION);
			free(shorter);
		}
		free(t[i].pValue);
	}
}

static void
step_object_size(void)
{
	CK_ULONG size;

	app.f->C_GetObjectSize(pick_session(), pick_object(), &size);
}

/* A mechanism of the table (or any), with a parameter as it wants one. */
static void
pick_mech(struct fs_mech *mc)
{
	uint8_t b = take(S_MECH);

	fs_mech_param(mc, b);
	if ((b = u8()) >= 0xf8 && mc->m.pParameter != NULL)
		mc->m.ulParameterLen = b & 3; /* a length the codec refuses */
}

/* The signature of the operations that produce output: sign, encrypt, decrypt, digest. */
typedef CK_RV (*run_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*update_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
typedef CK_RV (*final_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);

/* One call of an operation: single-part (data) or the final of a multi-part one. */
struct opcall {
	uint32_t call;
	CK_SESSION_HANDLE h;
	run_fn run;
	final_fn final;
	uint8_t *data;
	size_t len;
};

static CK_RV
op_call(const struct opcall *oc, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	if (oc->final != NULL)
		return oc->final(oc->h, out, outlen);
	return oc->run(oc->h, oc->data, oc->len, out, outlen);
}

/* Runs an initialised operation as an application does: a size query, a buffer one byte short,
 * then one of the right size. Checks that the length is the reply's, that neither the query nor
 * the short buffer ends the operation or costs a round trip, that the output is the reply's, and
 * that any other error, or the output's delivery, ends the operation. */
static void
op_collect(const struct opcall *oc)
{
	uint64_t before = fake.requests;
	CK_ULONG n = 0, m;
	uint8_t *buf;
	CK_RV rv;

	fake.dirty[oc->call] = 0;
	rv = op_call(oc, NULL, &n);
	/* A NULL buffer asks for the length: never "too small". */
	CHECK(rv != CKR_BUFFER_TOO_SMALL);
	if (rv != CKR_OK) {
		m = 1;
		CHECK(op_call(oc, NULL, &m) == CKR_OPERATION_NOT_INITIALIZED);
		return;
	}
	CHECK(fake.requests > before);
	/* The length is the reply's, unless the reply was not sent as built. */
	CHECK(fake.dirty[oc->call] || n == fake.outlen);
	before = fake.requests;
	CHECK((buf = malloc(n + 1)) != NULL);
	if (n > 0) {
		m = n - 1;
		CHECK(op_call(oc, buf, &m) == CKR_BUFFER_TOO_SMALL && m == n);
	}
	m = n;
	CHECK(op_call(oc, buf, &m) == CKR_OK && m == n);
	CHECK(fake.requests == before);
	CHECK(fake.dirty[oc->call] || n == 0 || memcmp(buf, fake.out, n) == 0);
	m = n;
	CHECK(op_call(oc, buf, &m) == CKR_OPERATION_NOT_INITIALIZED);
	free(buf);
}

struct opkind {
	uint32_t call;
	CK_RV (*init)(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
	run_fn run;
	update_fn update;
	final_fn final;
};

static CK_RV
digest_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key)
{
	(void)key;
	return app.f->C_DigestInit(h, m);
}

static void
step_op(const struct opkind *k)
{
	struct opcall oc = {k->call, pick_session(), k->run, NULL, NULL, 0};
	CK_OBJECT_HANDLE key = pick_object();
	size_t parts = take(S_PARTS) % 4, i = 0;
	struct fs_mech mc;

	pick_mech(&mc);
	if (k->init(oc.h, &mc.m, key) != CKR_OK)
		return;
	oc.len = pick_len(32);
	CHECK((oc.data = malloc(oc.len + 1)) != NULL);
	fill(oc.data, oc.len, 3);
	/* Multi-part: updates, then the final. */
	if (parts == 3) {
		for (i = 0; i < 3; i++)
			if (k->update(oc.h, oc.data, oc.len) != CKR_OK)
				break;
		oc.final = k->final;
	}
	if (i == 3 || parts != 3)
		op_collect(&oc);
	free(oc.data);
}

static CK_RV
encrypt_update(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n)
{
	CK_ULONG out = 0;

	return app.f->C_EncryptUpdate(h, p, n, NULL, &out);
}

static CK_RV
decrypt_update(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n)
{
	CK_ULONG out = 0;

	return app.f->C_DecryptUpdate(h, p, n, NULL, &out);
}

static void
step_crypto(void)
{
	struct opkind k;

	switch (take(S_KIND) % 4) {
	case 0:
		k = (struct opkind){P11MUX_CALL_SIGN, app.f->C_SignInit, app.f->C_Sign,
		                    app.f->C_SignUpdate, app.f->C_SignFinal};
		break;
	case 1:
		k = (struct opkind){P11MUX_CALL_ENCRYPT, app.f->C_EncryptInit, app.f->C_Encrypt,
		                    encrypt_update, app.f->C_EncryptFinal};
		break;
	case 2:
		k = (struct opkind){P11MUX_CALL_DECRYPT, app.f->C_DecryptInit, app.f->C_Decrypt,
		                    decrypt_update, app.f->C_DecryptFinal};
		break;
	default:
		k = (struct opkind){P11MUX_CALL_DIGEST, digest_init, app.f->C_Digest,
		                    app.f->C_DigestUpdate, app.f->C_DigestFinal};
		break;
	}
	step_op(&k);
}

static void
step_verify(void)
{
	CK_SESSION_HANDLE h = pick_session();
	CK_OBJECT_HANDLE key = pick_object();
	uint8_t data[32], sig[256];
	struct fs_mech mc;
	CK_RV rv;

	pick_mech(&mc);
	if (app.f->C_VerifyInit(h, &mc.m, key) != CKR_OK)
		return;
	fill(data, sizeof(data), 1);
	fill(sig, sizeof(sig), 2);
	if (u8() & 1) {
		rv = app.f->C_Verify(h, data, sizeof(data), sig, u8() % sizeof(sig));
	} else {
		app.f->C_VerifyUpdate(h, data, sizeof(data));
		rv = app.f->C_VerifyFinal(h, sig, u8() % sizeof(sig));
	}
	(void)rv;
	/* Verification ends the operation, whatever its result. */
	CHECK(app.f->C_Verify(h, data, 1, sig, 1) == CKR_OPERATION_NOT_INITIALIZED);
}

static void
step_random(void)
{
	static const CK_ULONG lens[] = {0, 1, 16, 32, 4096, 65536, 65537, 100};
	CK_ULONG len = lens[take(S_LEN) % 8];
	uint8_t *buf;

	CHECK((buf = malloc(len + 1)) != NULL);
	fake.nrnd = 0;
	fake.dirty[P11MUX_CALL_RANDOM] = 0;
	if (app.f->C_GenerateRandom(pick_session(), buf, len) == CKR_OK &&
	    !fake.dirty[P11MUX_CALL_RANDOM]) {
		CHECK(fake.nrnd == len);
		CHECK(len == 0 || memcmp(buf, fake.rnd, len) == 0);
	}
	free(buf);
}

/* Calls the shim answers itself. */
static void
step_local(void)
{
	CK_SESSION_HANDLE h = pick_session();
	CK_OBJECT_HANDLE o = 0;
	CK_SESSION_INFO si;
	CK_ULONG n = 0;
	CK_INFO info;
	uint8_t b = 0;

	CHECK(app.f->C_GetInfo(&info) == CKR_OK);
	app.f->C_GetSessionInfo(h, &si);
	app.f->C_SeedRandom(h, &b, 1);
	app.f->C_CreateObject(h, NULL, 0, &o);
	app.f->C_CopyObject(h, 1, NULL, 0, &o);
	app.f->C_DestroyObject(h, 1);
	app.f->C_DigestKey(h, 1);
	app.f->C_GetOperationState(h, NULL, &n);
	app.f->C_SignRecoverInit(h, NULL, 1);
	app.f->C_GenerateKey(h, NULL, NULL, 0, &o);
}

/* --- session objects --- */

/* The shim answers what it cached of an object without asking the daemon; an object it must
 * have forgotten (destroyed, its session closed, the daemon restarted) costs a GET_OBJECT, or
 * fails. Checked once for each, from a session of its slot. */
static void
check_forgotten(void)
{
	CK_SESSION_INFO info;
	CK_ULONG size;
	uint64_t before;
	size_t i, k;
	CK_RV rv;

	for (i = 0; i < app.nmade && !fake.dirty[P11MUX_CALL_CLIENT]; i++)
		if (app.made[i].epoch != fake.epoch)
			app.made[i].forgotten += app.made[i].forgotten == 0;
	for (i = 0; i < app.nmade; i++) {
		if (app.made[i].forgotten != 1)
			continue;
		app.made[i].forgotten = 2;
		for (k = 0; k < app.nsess; k++)
			if (app.f->C_GetSessionInfo(app.sess[k], &info) == CKR_OK &&
			    info.slotID == app.made[i].slot)
				break;
		if (k == app.nsess)
			continue;
		before = fake.requests;
		rv = app.f->C_GetObjectSize(app.sess[k], app.made[i].h, &size);
		CHECK(rv != CKR_OK || fake.requests > before);
	}
}

static void
add_made(CK_OBJECT_HANDLE o, CK_SESSION_HANDLE h)
{
	CK_SESSION_INFO info;

	CHECK(fake.dirty[P11MUX_CALL_CREATE] || fake.dirty[P11MUX_CALL_GENERATE] ||
	      fake.dirty[P11MUX_CALL_GENERATE_PAIR] || fake.handles_lost || handle_sent(o));
	CHECK(o & P11MUX_SESSION_OBJECT);
	if (app.nmade == sizeof(app.made) / sizeof(app.made[0]))
		return;
	CHECK(app.f->C_GetSessionInfo(h, &info) == CKR_OK);
	app.made[app.nmade].h = o;
	app.made[app.nmade].s = h;
	app.made[app.nmade].slot = info.slotID;
	app.made[app.nmade].forgotten = 0;
	app.made[app.nmade].epoch = fake.epoch;
	app.nmade++;
}

/* C_CreateObject (a data object, an AES key), C_GenerateKey (AES) or C_GenerateKeyPair (RSA)
 * with the templates an application writes; now and then CKA_TOKEN true (refused by the shim:
 * no request) or a mechanism that cannot generate. What is made is cached: reading it costs no
 * round trip. */
static void
step_make(void)
{
	static CK_OBJECT_CLASS data = CKO_DATA, secret = CKO_SECRET_KEY;
	static CK_KEY_TYPE aes = CKK_AES;
	static CK_ULONG len32 = 32, bits = 2048;
	static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static uint8_t e65537[3] = {1, 0, 1}, key[32] = {1, 2, 3};
	CK_ATTRIBUTE create[2][6] = {
	        {{CKA_TOKEN, &no, 1},
	         {CKA_CLASS, &data, sizeof(data)},
	         {CKA_LABEL, "data", 4},
	         {CKA_APPLICATION, "app", 3},
	         {CKA_VALUE, "hello", 5},
	         {CKA_PRIVATE, &no, 1}},
	        {{CKA_TOKEN, &no, 1},
	         {CKA_CLASS, &secret, sizeof(secret)},
	         {CKA_KEY_TYPE, &aes, sizeof(aes)},
	         {CKA_VALUE, key, sizeof(key)},
	         {CKA_ENCRYPT, &yes, 1},
	         {CKA_DECRYPT, &yes, 1}},
	};
	CK_ATTRIBUTE gen[5] = {{CKA_TOKEN, &no, 1},
	                       {CKA_CLASS, &secret, sizeof(secret)},
	                       {CKA_KEY_TYPE, &aes, sizeof(aes)},
	                       {CKA_VALUE_LEN, &len32, sizeof(len32)},
	                       {CKA_ENCRYPT, &yes, 1}};
	CK_ATTRIBUTE pub[4] = {{CKA_TOKEN, &no, 1},
	                       {CKA_MODULUS_BITS, &bits, sizeof(bits)},
	                       {CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)},
	                       {CKA_VERIFY, &yes, 1}};
	CK_ATTRIBUTE priv[4] = {{CKA_TOKEN, &no, 1},
	                        {CKA_PRIVATE, &yes, 1},
	                        {CKA_SIGN, &yes, 1},
	                        {CKA_SENSITIVE, &yes, 1}};
	CK_MECHANISM m_aes = {CKM_AES_KEY_GEN, NULL, 0},
	             m_rsa = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
	CK_SESSION_HANDLE h = pick_session();
	uint8_t kind = take(S_KIND) % 4, b = take(S_LEN);
	CK_OBJECT_HANDLE o[2] = {0, 0};
	CK_ATTRIBUTE *t = kind == 2 ? gen : kind == 3 ? pub : create[kind];
	CK_ULONG nt = kind == 2 ? 5 : kind == 3 ? 4 : 6;
	uint64_t before = fake.requests;
	CK_ULONG size;
	size_t i, n = kind == 3 ? 2 : 1;
	CK_RV rv;

	if (b >= 0xf0) /* a token object: the pool's are the operator's */
		t[0].pValue = &yes;
	if (b == 0xef) { /* a mechanism that does not generate */
		m_aes.mechanism = CKM_RSA_PKCS;
		m_rsa.mechanism = CKM_AES_CBC;
	}
	if (kind <= 1)
		rv = app.f->C_CreateObject(h, t, nt, &o[0]);
	else if (kind == 2)
		rv = app.f->C_GenerateKey(h, &m_aes, t, nt, &o[0]);
	else
		rv = app.f->C_GenerateKeyPair(h, &m_rsa, pub, 4, priv, 4, &o[0], &o[1]);
	TRACE("fuzz_shim:   made: %s, %lx %lx\n", p11mux_rv_name(rv), o[0], o[1]);
	if (b >= 0xf0 || (b == 0xef && kind >= 2 && !fake.dirty[P11MUX_CALL_GET_SLOTS])) {
		/* Refused by the shim, without a request. */
		CHECK(rv != CKR_OK && fake.requests == before);
		return;
	}
	if (rv != CKR_OK)
		return;
	for (i = 0; i < n; i++) {
		add_made(o[i], h);
		/* In the cache: no round trip. */
		before = fake.requests;
		app.f->C_GetObjectSize(h, o[i], &size);
		CHECK(fake.requests == before);
		if (app.nobjs < sizeof(app.objs) / sizeof(app.objs[0]))
			app.objs[app.nobjs++] = o[i];
	}
}

/* C_DestroyObject of a session object made (or any): once destroyed, it is forgotten. */
static void
step_destroy(void)
{
	CK_SESSION_HANDLE h = pick_session();
	CK_OBJECT_HANDLE o = pick_object();
	size_t i;
	CK_RV rv;

	rv = app.f->C_DestroyObject(h, o);
	if (!(o & P11MUX_SESSION_OBJECT))
		CHECK(rv != CKR_OK); /* the pool's objects are the operator's */
	if (rv == CKR_OK || rv == CKR_OBJECT_HANDLE_INVALID)
		for (i = 0; i < app.nmade; i++)
			if (app.made[i].h == o)
				app.made[i].forgotten += app.made[i].forgotten == 0;
}

static void
step_restart(void)
{
	app_finalize();
	CHECK(app_init() == CKR_OK);
}

static void
step_close_all(void)
{
	CK_SLOT_ID id = pick_slot();
	size_t i;

	if (app.f->C_CloseAllSessions(id) == CKR_OK)
		for (i = 0; i < app.nmade; i++)
			if (app.made[i].slot == id)
				app.made[i].forgotten += app.made[i].forgotten == 0;
}

static void
step(void)
{
	uint8_t which = take(S_STEP) % 21;

	TRACE("fuzz_shim: step %u\n", which);
	switch (which) {
	case 0:
		step_slot_list();
		break;
	case 1:
		step_slot_info();
		break;
	case 2:
	case 3:
		step_open();
		break;
	case 4:
		step_close();
		break;
	case 5:
		step_login();
		break;
	case 6:
		step_logout();
		break;
	case 7:
		step_find();
		break;
	case 8:
		step_attributes();
		break;
	case 9:
		step_object_size();
		break;
	case 10:
	case 11:
	case 12:
	case 13:
		step_crypto();
		break;
	case 14:
		step_verify();
		break;
	case 15:
		step_random();
		break;
	case 16:
		step_local();
		break;
	case 17:
		step_close_all();
		break;
	case 19:
		step_make();
		break;
	case 20:
		step_destroy();
		break;
	default:
		step_restart();
		break;
	}
	check_forgotten();
}

static void
run(void)
{
	size_t steps;

	if (fake.listen_fd < 0) {
		fs_trace = getenv("FUZZ_TRACE") != NULL;
		fake_setup();
		CHECK(C_GetFunctionList(&app.f) == CKR_OK);
	}
	CHECK(app_init() == CKR_OK);
	for (steps = 0; steps < MAX_STEPS && fs_more(); steps++)
		step();
	app_finalize();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fs_begin(data, size);
	run();
	return 0;
}

/* --- the seeds: scripts of steps, with a twist here and there --- */

enum {
	SLOTS = 0,
	SLOT_INFO = 1,
	OPEN = 2,
	CLOSE = 4,
	LOGIN = 5,
	LOGOUT = 6,
	FIND = 7,
	ATTRS = 8,
	SIZE = 9,
	CRYPTO = 10,
	VERIFY = 14,
	RANDOM = 15,
	LOCAL = 16,
	CLOSE_ALL = 17,
	RESTART = 18,
	MAKE = 19,
	DESTROY = 20,
};
#define STEP(x)                                                                                    \
	{                                                                                          \
		S_STEP, x                                                                          \
	}
/* Logged in, with the objects found and the first one's attributes cached. */
#define READY STEP(OPEN), STEP(LOGIN), STEP(FIND), STEP(ATTRS)

static const struct fs_seed seeds[] = {
        FS_SEED("slots", STEP(SLOTS)),
        FS_SEED("slot-info", STEP(SLOTS), STEP(SLOT_INFO)),
        FS_SEED("session", STEP(OPEN), STEP(CLOSE)),
        FS_SEED("login-logout", STEP(OPEN), STEP(LOGIN), STEP(LOGOUT)),
        FS_SEED("find", STEP(OPEN), STEP(FIND)),
        FS_SEED("attributes", STEP(OPEN), STEP(FIND), STEP(ATTRS), STEP(SIZE)),
        FS_SEED("sign", READY, STEP(CRYPTO)),
        FS_SEED("sign-pss", READY, STEP(CRYPTO), {S_MECH, 2}),
        FS_SEED("sign-multipart", READY, STEP(CRYPTO), {S_PARTS, 3}),
        FS_SEED("encrypt-public", STEP(OPEN), STEP(FIND), STEP(CRYPTO), {S_KIND, 1}, {S_OBJ, 1}),
        FS_SEED("encrypt-aes", STEP(OPEN), STEP(LOGIN), STEP(CRYPTO), {S_KIND, 1}, {S_OBJ, 0xc2},
                {S_MECH, 6}),
        FS_SEED("decrypt-oaep", READY, STEP(CRYPTO), {S_KIND, 2}, {S_MECH, 3}),
        FS_SEED("decrypt-multipart", READY, STEP(CRYPTO), {S_KIND, 2}, {S_PARTS, 3}),
        FS_SEED("digest", STEP(OPEN), STEP(CRYPTO), {S_KIND, 3}, {S_MECH, 5}),
        FS_SEED("digest-multipart", STEP(OPEN), STEP(CRYPTO), {S_KIND, 3}, {S_MECH, 5},
                {S_PARTS, 3}),
        FS_SEED("verify", STEP(OPEN), STEP(FIND), STEP(VERIFY), {S_OBJ, 1}),
        FS_SEED("random", STEP(OPEN), STEP(RANDOM), {S_LEN, 6}),
        FS_SEED("local", STEP(OPEN), STEP(LOCAL), STEP(CLOSE_ALL), STEP(RESTART), STEP(SLOTS)),
        FS_SEED("restart-login", STEP(OPEN), STEP(LOGIN), STEP(RESTART), STEP(OPEN), STEP(LOGIN)),
        /* The daemon misbehaves at the operation (the key is cached: the SIGN request is the
         * step's first). */
        FS_SEED("sign-buffer-too-small", READY, STEP(CRYPTO), {S_RV, 208 + 5}),
        FS_SEED("sign-daemon-gone", READY, STEP(CRYPTO), {S_ACTION, 29}),
        FS_SEED("sign-then-gone", READY, STEP(CRYPTO), {S_ACTION, 30}, STEP(CRYPTO)),
        FS_SEED("sign-wrong-call", READY, STEP(CRYPTO), {S_ACTION, 22}),
        FS_SEED("sign-cut", READY, STEP(CRYPTO), {S_ACTION, 23}),
        FS_SEED("sign-trailing", READY, STEP(CRYPTO), {S_ACTION, 24}),
        FS_SEED("sign-flipped", READY, STEP(CRYPTO), {S_ACTION, 25}),
        FS_SEED("sign-short-frame", READY, STEP(CRYPTO), {S_ACTION, 26}),
        FS_SEED("sign-huge-frame", READY, STEP(CRYPTO), {S_ACTION, 27}),
        FS_SEED("sign-garbage", READY, STEP(CRYPTO), {S_ACTION, 28}),
        /* Regression: a reply whose call code does not decode (an empty frame) made the shim
         * read the name of a NULL call while logging (module/conn.c, roundtrip). */
        FS_SEED("empty-reply", STEP(SLOTS), {S_ACTION, 31}),
        FS_SEED("login-pin-incorrect", STEP(OPEN), STEP(LOGIN), {S_RV, 208 + 1}),
        FS_SEED("connect-refused", STEP(SLOTS), {S_CONNECT, 0xff}, STEP(SLOTS)),
        FS_SEED("attributes-gone", STEP(OPEN), STEP(FIND), STEP(ATTRS), {S_ACTION, 29}),
        /* Session objects: made (S_KIND: 0 a data object, 1 an AES key, 2 generated AES,
         * 3 an RSA pair), used (S_OBJ 0xe0 + the how-manieth made), destroyed, dropped. */
        FS_SEED("create", STEP(OPEN), STEP(MAKE), STEP(ATTRS), {S_OBJ, 0xe0}),
        FS_SEED("create-aes-encrypt", STEP(OPEN), STEP(LOGIN), STEP(MAKE), {S_KIND, 1},
                STEP(CRYPTO), {S_KIND, 1}, {S_OBJ, 0xe0}, {S_MECH, 6}),
        FS_SEED("generate-decrypt", STEP(OPEN), STEP(LOGIN), STEP(MAKE), {S_KIND, 2}, STEP(CRYPTO),
                {S_KIND, 2}, {S_OBJ, 0xe0}, {S_MECH, 7}),
        FS_SEED("generate-pair-sign", STEP(OPEN), STEP(LOGIN), STEP(MAKE), {S_KIND, 3},
                STEP(CRYPTO), {S_OBJ, 0xe1}, STEP(VERIFY), {S_OBJ, 0xe0}),
        FS_SEED("generate-pair-find", STEP(OPEN), STEP(LOGIN), STEP(MAKE), {S_KIND, 3}, STEP(FIND),
                STEP(ATTRS), {S_OBJ, 0xe1}),
        FS_SEED("destroy", STEP(OPEN), STEP(MAKE), STEP(DESTROY), {S_OBJ, 0xe0}, STEP(DESTROY),
                {S_OBJ, 0xe0}),
        FS_SEED("destroy-token-object", STEP(OPEN), STEP(FIND), STEP(DESTROY)),
        FS_SEED("create-token", STEP(OPEN), STEP(MAKE), {S_LEN, 0xf0}),
        FS_SEED("generate-cannot", STEP(OPEN), STEP(MAKE), {S_KIND, 2}, {S_LEN, 0xef}),
        FS_SEED("make-close-session", STEP(OPEN), STEP(OPEN), STEP(MAKE), {S_KIND, 1}, STEP(CLOSE),
                STEP(ATTRS), {S_OBJ, 0xe0}),
        FS_SEED("make-close-all", STEP(OPEN), STEP(MAKE), STEP(CLOSE_ALL), STEP(OPEN)),
        FS_SEED("make-logout", STEP(OPEN), STEP(LOGIN), STEP(MAKE), {S_KIND, 3}, STEP(LOGOUT)),
        FS_SEED("make-restart", STEP(OPEN), STEP(MAKE), STEP(RESTART), STEP(OPEN), STEP(MAKE)),
        FS_SEED("make-daemon-gone", STEP(OPEN), STEP(MAKE), STEP(SLOTS), {S_ACTION, 29},
                STEP(ATTRS), {S_OBJ, 0xe0}),
        FS_SEED("make-cut", STEP(OPEN), STEP(MAKE), {S_KIND, 3}, {S_ACTION, 23}),
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fs_write_seeds_if_asked(*argc, *argv, seeds, sizeof(seeds) / sizeof(seeds[0]), run);
	return 0;
}
