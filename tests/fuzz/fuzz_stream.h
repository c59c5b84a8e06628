/*
 * The input of fuzz_shim and fuzz_hproto, read as a stream of bytes by the harness as it goes:
 * each decision (the next step, a reply's fate, a length) takes the next byte, and past the
 * end every byte is 0, which each target makes its well-formed default. So a short input runs
 * the happy path, and libFuzzer's mutations become decisions.
 *
 * Seeds are written by the targets themselves (--write-seeds=DIR): a seed is a script of
 * (site, value) pairs; the harness runs with every byte 0 except those the script gives for a
 * site (the kind of decision: a step, a reply's action, ...), and the bytes it took are the
 * seed. Rerun, a seed does exactly what its script said.
 */
#ifndef P11MUX_FUZZ_STREAM_H
#define P11MUX_FUZZ_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <p11-kit/pkcs11.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Sites common to the targets; each adds its own from FS_FIRST on. */
enum { FS_ANY, FS_STEP, FS_FIRST };

/* FUZZ_TRACE in the environment: what each input does, on stderr (to read a crash). */
extern int fs_trace;
#define TRACE(...)                                                                                 \
	do {                                                                                       \
		if (fs_trace)                                                                      \
			fprintf(stderr, __VA_ARGS__);                                              \
	} while (0)

/* A seed: a name and a script of (site, value) pairs. A value goes to the first decision of
 * its site after the step before it; the script ends after its last step. */
struct fs_seed {
	const char *name;
	const uint8_t (*script)[2];
	size_t n;
};
#define FS_SEED(name, ...)                                                                         \
	{                                                                                          \
		name, (const uint8_t[][2]){__VA_ARGS__},                                           \
		        sizeof((const uint8_t[][2]){__VA_ARGS__}) / 2                              \
	}
#define FS_STEP_(x)                                                                                \
	{                                                                                          \
		FS_STEP, x                                                                         \
	}

/* Starts reading data (the input of one run). */
void fs_begin(const uint8_t *data, size_t size);
/* The next byte, for a decision of the given site. */
uint8_t fs_take(int site);
uint8_t fs_u8(void);
uint32_t fs_u16(void);
uint64_t fs_u64(void);
/* Whether the input (or the seed's script) has another step. */
int fs_more(void);
/* Deterministic filler for data the harness makes (the input is kept for decisions). */
void fs_fill(uint8_t *p, size_t n, uint32_t salt);

/* Writes each seed's bytes to dir/NAME, running run() once per seed; then exit(0). Called
 * from LLVMFuzzerInitialize when argv holds --write-seeds=DIR. */
void fs_write_seeds_if_asked(int argc, char **argv, const struct fs_seed *seeds, size_t n,
                             void (*run)(void));

/* A mechanism with the parameter it wants (PSS, OAEP, an AES IV or counter block). */
struct fs_mech {
	CK_MECHANISM m;
	union {
		CK_RSA_PKCS_PSS_PARAMS pss;
		CK_RSA_PKCS_OAEP_PARAMS oaep;
		CK_AES_CTR_PARAMS ctr;
		uint8_t iv[16];
	} u;
	uint8_t label[16];
};
/* mc for mechanism t, with its parameter; an OAEP label of fs_u8() % 17 bytes (none: NULL). */
void fs_mech_param(struct fs_mech *mc, CK_MECHANISM_TYPE t);

#endif
