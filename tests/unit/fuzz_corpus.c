/*
 * Runs the fuzz target's body (fuzz_proto.c) over deterministic inputs, so that CTest exercises
 * it under ASan and UBSan with any compiler:
 *   - every call's valid request and reply (several shapes each), bare and framed: all accepted;
 *   - those messages mutated (bit flips, interesting counts and lengths, truncation, insertion,
 *     deletion, splicing, another call code);
 *   - pseudo-random bytes, some behind a valid call code or reply header.
 * Usage: fuzz_corpus [ITERATIONS]       (default 20000)
 *        fuzz_corpus --write-seeds DIR  (writes the valid messages, as libFuzzer seeds)
 */
#include "fuzz_proto.h"
#include "../fuzz/check.h"
#include "proto.h"
#include "sigcodec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VARIANTS 24 /* shapes per call and direction */
#define MAX_LEN  (64 * 1024)

struct input {
	uint8_t *p;
	size_t n;
	int want; /* FUZZ_REQUEST_OK or FUZZ_REPLY_OK */
};

struct inputs {
	struct input *v;
	size_t n, cap;
};

static void
add_input(struct inputs *in, const uint8_t *p, size_t n, int want)
{
	if (in->n == in->cap) {
		in->cap = in->cap ? in->cap * 2 : 256;
		CHECK((in->v = realloc(in->v, in->cap * sizeof(*in->v))) != NULL);
	}
	CHECK((in->v[in->n].p = malloc(n ? n : 1)) != NULL);
	memcpy(in->v[in->n].p, p, n);
	in->v[in->n].n = n;
	in->v[in->n].want = want;
	in->n++;
}

/* Every call's request and reply in VARIANTS shapes, and an error reply for each call. */
static void
build_valid(struct inputs *in)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);
	struct p11mux_msg m = {0};
	struct sc_fields f;
	unsigned v;
	uint32_t c;
	int is_reply;

	CHECK(b != NULL);
	for (c = 1; c < P11MUX_CALL_COUNT; c++) {
		for (is_reply = 0; is_reply < 2; is_reply++)
			for (v = 0; v < VARIANTS; v++) {
				const char *sig =
				        is_reply ? p11mux_calls[c].reply : p11mux_calls[c].request;

				CHECK(sc_gen(&f, sig, 1000 + c, v) == 0);
				if (is_reply)
					CHECK(p11mux_msg_begin_reply(&m, b, c, CKR_OK) == 0);
				else
					CHECK(p11mux_msg_begin_request(&m, b, c) == 0);
				CHECK(sc_encode(&m, &f) == 0);
				CHECK(p11mux_msg_end(&m) == 0);
				/* Keep the fuzzer's inputs short: skip the largest byte strings. */
				if (p11mux_buf_len(b) <= 4096)
					add_input(in, p11mux_buf_data(b), p11mux_buf_len(b),
					          is_reply ? FUZZ_REPLY_OK : FUZZ_REQUEST_OK);
				p11mux_msg_clear(&m);
				sc_fields_free(&f);
			}
		CHECK(p11mux_msg_begin_reply(&m, b, c, CKR_DEVICE_ERROR) == 0);
		CHECK(p11mux_msg_end(&m) == 0);
		add_input(in, p11mux_buf_data(b), p11mux_buf_len(b), FUZZ_REPLY_OK);
		p11mux_msg_clear(&m);
	}
	p11mux_buf_free(b);
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

/* Applies one random mutation to p[0..*n) (room for MAX_LEN bytes). */
static void
mutate(struct sc_rng *r, uint8_t *p, size_t *n, const struct inputs *valid)
{
	static const uint64_t u64s[] = {0,
	                                CKR_OK,
	                                UINT64_MAX,
	                                0xffffffffull,
	                                CKM_RSA_PKCS_PSS,
	                                CKM_RSA_PKCS_OAEP,
	                                CKM_AES_CBC,
	                                CKM_AES_GCM,
	                                CKA_CLASS};
	size_t pos = *n ? (size_t)sc_below(r, *n) : 0, len, k;

	switch (sc_below(r, 11)) {
	case 0:
		if (*n)
			p[pos] ^= (uint8_t)(1u << sc_below(r, 8));
		break;
	case 1:
		if (*n)
			p[pos] = (uint8_t)sc_rand(r);
		break;
	case 2:
		if (*n)
			p[pos] = sc_below(r, 2) ? 0x00 : 0xff;
		break;
	case 3:
		*n = *n ? (size_t)sc_below(r, *n) : 0;
		break;
	case 4: /* insert random bytes */
		len = 1 + (size_t)sc_below(r, 16);
		if (*n + len > MAX_LEN)
			break;
		memmove(p + pos + len, p + pos, *n - pos);
		sc_fill(r, p + pos, len);
		*n += len;
		break;
	case 5: /* delete a range */
		len = (size_t)sc_below(r, *n - pos + 1);
		memmove(p + pos, p + pos + len, *n - pos - len);
		*n -= len;
		break;
	case 6: /* duplicate a range at its end */
		len = (size_t)sc_below(r, *n - pos + 1);
		if (*n + len > MAX_LEN)
			break;
		memmove(p + pos + 2 * len, p + pos + len, *n - pos - len);
		memcpy(p + pos + len, p + pos, len);
		*n += len;
		break;
	case 7: { /* an interesting u32: a count or length */
		uint32_t rest = (uint32_t)(*n - pos);
		uint32_t u32s[] = {
		        0,           1,           2,           0x7f, 0x80,     0xff,
		        0x7fffffffu, 0x80000000u, 0xffffffffu, rest, rest - 3, rest + 1,
		};

		if (*n >= 4) {
			pos = (size_t)sc_below(r, *n - 3);
			put32(p + pos, u32s[sc_below(r, sizeof(u32s) / sizeof(u32s[0]))]);
		}
		break;
	}
	case 8: /* an interesting u64: a type, status or CK_RV */
		if (*n >= 8) {
			pos = (size_t)sc_below(r, *n - 7);
			put64(p + pos, u64s[sc_below(r, sizeof(u64s) / sizeof(u64s[0]))]);
		}
		break;
	case 9: /* another call code */
		if (*n >= 4)
			put32(p, (uint32_t)sc_below(r, P11MUX_CALL_COUNT + 1));
		break;
	default: { /* splice: the tail of another valid message */
		const struct input *o = &valid->v[sc_below(r, valid->n)];

		k = (size_t)sc_below(r, o->n + 1);
		len = o->n - k;
		if (pos + len > MAX_LEN)
			break;
		memcpy(p + pos, o->p + k, len);
		*n = pos + len;
		break;
	}
	}
}

static int
write_seeds(const char *dir, const struct inputs *valid)
{
	char path[4096];
	size_t i;
	FILE *f;

	for (i = 0; i < valid->n; i++) {
		snprintf(path, sizeof(path), "%s/seed-%04zu", dir, i);
		if ((f = fopen(path, "wb")) == NULL ||
		    fwrite(valid->v[i].p, 1, valid->v[i].n, f) != valid->v[i].n || fclose(f) != 0) {
			fprintf(stderr, "fuzz_corpus: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	printf("fuzz_corpus: wrote %zu seeds to %s\n", valid->n, dir);
	return 0;
}

int
main(int argc, char **argv)
{
	struct inputs valid = {0};
	struct sc_rng r = {0x5eed};
	unsigned long iterations = 20000, i;
	unsigned long nvalid = 0, nmut = 0, nrand = 0, mut_ok = 0, mut_bad = 0, rand_ok = 0;
	uint8_t *buf, *framed;
	size_t n, k;
	int mask, rc = 0;

	build_valid(&valid);
	if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
		rc = write_seeds(argv[2], &valid);
	else if (argc > 2 || (argc == 2 && (iterations = strtoul(argv[1], NULL, 10)) == 0)) {
		fprintf(stderr, "usage: fuzz_corpus [ITERATIONS] | --write-seeds DIR\n");
		rc = 2;
	}
	if (rc != 0 || argc == 3)
		goto out;
	CHECK((buf = malloc(MAX_LEN)) != NULL);
	CHECK((framed = malloc(2 * (MAX_LEN + 4))) != NULL);

	/* Valid messages are accepted; framed twice, both frames come back. */
	for (k = 0; k < valid.n; k++) {
		const struct input *v = &valid.v[k];

		mask = fuzz_proto_one(v->p, v->n);
		CHECK((mask & v->want) != 0);
		put32(framed, (uint32_t)v->n);
		memcpy(framed + 4, v->p, v->n);
		memcpy(framed + 4 + v->n, framed, 4 + v->n);
		CHECK((fuzz_proto_one(framed, 2 * (4 + v->n)) & FUZZ_FRAME_OK) != 0);
		nvalid += 2;
	}

	for (i = nvalid; i < iterations; i++) {
		if (sc_below(&r, 10) < 7) {
			/* A valid message with one to four mutations. */
			const struct input *v = &valid.v[sc_below(&r, valid.n)];
			unsigned m, nm = 1 + (unsigned)sc_below(&r, 4);

			memcpy(buf, v->p, v->n);
			n = v->n;
			for (m = 0; m < nm; m++)
				mutate(&r, buf, &n, &valid);
			mask = fuzz_proto_one(buf, n);
			if (mask & (FUZZ_REQUEST_OK | FUZZ_REPLY_OK))
				mut_ok++;
			else
				mut_bad++;
			nmut++;
		} else {
			/* Random bytes; half behind a valid call code, some with a CKR_OK header.
			 */
			n = (size_t)sc_below(&r, 600);
			sc_fill(&r, buf, n);
			if (n >= 4 && sc_below(&r, 2))
				put32(buf, 1 + (uint32_t)sc_below(&r, P11MUX_CALL_COUNT - 1));
			if (n >= 12 && sc_below(&r, 4) == 0)
				put64(buf + 4, CKR_OK);
			if (fuzz_proto_one(buf, n) & (FUZZ_REQUEST_OK | FUZZ_REPLY_OK))
				rand_ok++;
			nrand++;
		}
	}
	printf("fuzz_corpus: %lu inputs: %lu valid (all accepted), %lu mutated (%lu still valid, "
	       "%lu refused), %lu random (%lu accepted)\n",
	       nvalid + nmut + nrand, nvalid, nmut, mut_ok, mut_bad, nrand, rand_ok);
	/* The mutations must neither be all harmless nor all fatal, or they test little. */
	if (iterations >= 1000) {
		CHECK(mut_ok > 0);
		CHECK(mut_bad > nmut / 4);
	}
	free(buf);
	free(framed);
out:
	for (k = 0; k < valid.n; k++)
		free(valid.v[k].p);
	free(valid.v);
	return rc;
}
