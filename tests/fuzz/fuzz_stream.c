#include "fuzz_stream.h"

#include <string.h>
#include <sys/socket.h>

int fs_trace;

static struct {
	const uint8_t *p;
	size_t n, off;
	/* Writing a seed: its script, and the bytes handed out. */
	int writing;
	const uint8_t (*script)[2];
	size_t nscript, pos;
	uint8_t rec[16384];
	size_t nrec;
} in;

void
fs_begin(const uint8_t *data, size_t size)
{
	in.p = data;
	in.n = size;
	in.off = 0;
}

uint8_t
fs_take(int site)
{
	uint8_t v = 0;

	if (!in.writing)
		return in.off < in.n ? in.p[in.off++] : 0;
	if (in.pos < in.nscript && in.script[in.pos][0] == site)
		v = in.script[in.pos++][1];
	CHECK(in.nrec < sizeof(in.rec));
	in.rec[in.nrec++] = v;
	return v;
}

uint8_t
fs_u8(void)
{
	return fs_take(FS_ANY);
}

uint32_t
fs_u16(void)
{
	uint32_t v = fs_u8();

	return v << 8 | fs_u8();
}

uint64_t
fs_u64(void)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | fs_u8();
	return v;
}

int
fs_more(void)
{
	if (!in.writing)
		return in.off < in.n;
	/* Values whose site never came up in their step are dropped. */
	while (in.pos < in.nscript && in.script[in.pos][0] != FS_STEP)
		in.pos++;
	return in.pos < in.nscript;
}

void
fs_fill(uint8_t *p, size_t n, uint32_t salt)
{
	size_t i, done;

	/* A pattern of 251 bytes, then copies of what is there: few loop rounds, so that large
	 * outputs cost the instrumented harness little. */
	for (i = 0; i < n && i < 251; i++)
		p[i] = (uint8_t)(salt * 131u + i * 7u);
	for (done = i; done < n; done += i) {
		i = done < n - done ? done : n - done;
		memcpy(p + done, p, i);
	}
}

void
fs_write_seeds_if_asked(int argc, char **argv, const struct fs_seed *seeds, size_t n,
                        void (*run)(void))
{
	const char *dir = NULL;
	char path[512];
	size_t i;
	FILE *f;
	int k;

	for (k = 1; k < argc; k++)
		if (strncmp(argv[k], "--write-seeds=", 14) == 0)
			dir = argv[k] + 14;
	if (dir == NULL)
		return;
	for (i = 0; i < n; i++) {
		in.writing = 1;
		in.script = seeds[i].script;
		in.nscript = seeds[i].n;
		in.pos = in.nrec = 0;
		run();
		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		CHECK((f = fopen(path, "wb")) != NULL);
		CHECK(fwrite(in.rec, 1, in.nrec, f) == in.nrec && fclose(f) == 0);
	}
	exit(0);
}

CK_RV
fs_rv(uint8_t b, uint8_t ok_below, const CK_RV *table, size_t n)
{
	if (b < ok_below)
		return CKR_OK;
	return b == 255 ? fs_u64() : table[b % n];
}

const struct fs_mech_info fs_mechs[FS_NMECHS] = {
        {CKM_RSA_PKCS, CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_SHA256_RSA_PKCS, CKF_SIGN | CKF_VERIFY},
        {CKM_RSA_PKCS_PSS, CKF_SIGN | CKF_VERIFY},
        {CKM_RSA_PKCS_OAEP, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_ECDSA, CKF_SIGN | CKF_VERIFY},
        {CKM_SHA256, CKF_DIGEST},
        {CKM_AES_CBC, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_AES_CTR, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_SHA_1, CKF_DIGEST},
        {CKM_SHA256_RSA_PKCS_PSS, CKF_SIGN | CKF_VERIFY},
        {CKM_AES_KEY_GEN, CKF_GENERATE},
        {CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR},
};

void
fs_mech_param(struct fs_mech *mc, uint8_t b)
{
	CK_MECHANISM_TYPE t = b < 0xf0 ? fs_mechs[b % FS_NMECHS].type : (CK_MECHANISM_TYPE)fs_u16();

	memset(mc, 0, sizeof(*mc));
	mc->m.mechanism = t;
	switch (t) {
	case CKM_RSA_PKCS_PSS:
	case CKM_SHA256_RSA_PKCS_PSS:
		mc->u.pss.hashAlg = CKM_SHA256;
		mc->u.pss.mgf = CKG_MGF1_SHA256;
		mc->u.pss.sLen = 32;
		mc->m.pParameter = &mc->u.pss;
		mc->m.ulParameterLen = sizeof(mc->u.pss);
		break;
	case CKM_RSA_PKCS_OAEP:
		mc->u.oaep.hashAlg = CKM_SHA256;
		mc->u.oaep.mgf = CKG_MGF1_SHA256;
		mc->u.oaep.source = CKZ_DATA_SPECIFIED;
		mc->u.oaep.ulSourceDataLen = fs_u8() % (sizeof(mc->label) + 1);
		mc->u.oaep.pSourceData = mc->u.oaep.ulSourceDataLen > 0 ? mc->label : NULL;
		mc->m.pParameter = &mc->u.oaep;
		mc->m.ulParameterLen = sizeof(mc->u.oaep);
		break;
	case CKM_AES_CBC:
		mc->m.pParameter = mc->u.iv;
		mc->m.ulParameterLen = sizeof(mc->u.iv);
		break;
	case CKM_AES_CTR:
		mc->u.ctr.ulCounterBits = 128;
		mc->m.pParameter = &mc->u.ctr;
		mc->m.ulParameterLen = sizeof(mc->u.ctr);
		break;
	default:
		break;
	}
}

/* Sends a frame of len bytes announced as `announced` (see fs_send_reply for strict). */
static void
send_frame(int fd, const uint8_t *p, size_t len, uint32_t announced, int strict)
{
	uint8_t hdr[4] = {announced >> 24, announced >> 16, announced >> 8, announced};
	ssize_t n;
	int whole;

	n = send(fd, hdr, 4, MSG_NOSIGNAL | MSG_DONTWAIT);
	whole = n == 4;
	if (whole && len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		whole = n == (ssize_t)len;
	}
	if (strict)
		CHECK(whole);
	else if (!whole || len < announced)
		shutdown(fd, SHUT_WR);
}

void
fs_send_reply(int fd, const uint8_t *p, size_t len, enum fs_send how, size_t cut, uint32_t max,
              int strict)
{
	uint8_t junk[64], *mut;
	size_t k;

	CHECK((mut = malloc(len + sizeof(junk))) != NULL);
	if (len > 0)
		memcpy(mut, p, len);
	fs_fill(junk, sizeof(junk), how);
	switch (how) {
	case FS_SEND_CUT:
		send_frame(fd, mut, cut < len ? cut : len, (uint32_t)(cut < len ? cut : len),
		           strict);
		break;
	case FS_SEND_TRAILING:
		k = 1 + fs_u8() % sizeof(junk);
		memcpy(mut + len, junk, k);
		send_frame(fd, mut, len + k, (uint32_t)(len + k), strict);
		break;
	case FS_SEND_FLIPPED:
		if (len > 0)
			mut[fs_u16() % len] ^= 1 + fs_u8() % 255;
		send_frame(fd, mut, len, (uint32_t)len, strict);
		break;
	case FS_SEND_LONGER:
		send_frame(fd, mut, len, (uint32_t)len + 1 + fs_u8(), strict);
		break;
	case FS_SEND_TOO_LARGE:
		send_frame(fd, NULL, 0, max + 1 + fs_u8(), strict);
		break;
	case FS_SEND_GARBAGE:
		for (k = 0; k < 64 && k < len + 8; k++)
			mut[k] = fs_u8();
		send_frame(fd, mut, k, (uint32_t)k, strict);
		break;
	case FS_SEND_EMPTY:
		send_frame(fd, NULL, 0, 0, strict);
		break;
	default:
		send_frame(fd, mut, len, (uint32_t)len, strict);
		break;
	}
	free(mut);
}
