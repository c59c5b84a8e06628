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

#include "check.h"

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
/* A return code from b: CKR_OK below ok_below, any (the next eight bytes) at 255, else one of
 * the n of table. */
CK_RV fs_rv(uint8_t b, uint8_t ok_below, const CK_RV *table, size_t n);
#define FS_RV(b, ok_below, table)                                                                  \
	fs_rv((b), (ok_below), (table), sizeof(table) / sizeof((table)[0]))

/* The mechanisms the fake peers offer, with their flags. */
struct fs_mech_info {
	CK_MECHANISM_TYPE type;
	CK_FLAGS flags;
};
#define FS_NMECHS 12
extern const struct fs_mech_info fs_mechs[FS_NMECHS];
/* mc for the mechanism b says (b < 0xf0: fs_mechs[b % FS_NMECHS]; else any, the next two
 * bytes), with its parameter; an OAEP label of fs_u8() % 17 bytes (none: NULL). */
void fs_mech_param(struct fs_mech *mc, uint8_t b);

/* How a fake peer (fuzz_shim's daemon, fuzz_hproto's helper) sends a reply it built. */
enum fs_send {
	FS_SEND_AS_BUILT,
	FS_SEND_CUT,       /* a whole frame of the reply's first `cut` bytes */
	FS_SEND_TRAILING,  /* bytes after the message */
	FS_SEND_FLIPPED,   /* one byte changed */
	FS_SEND_LONGER,    /* announced longer than it is: the stream ends inside it */
	FS_SEND_TOO_LARGE, /* announced larger than `max`, a frame's largest */
	FS_SEND_GARBAGE,   /* up to 64 bytes from the input */
	FS_SEND_EMPTY,     /* an empty frame */
};
/* Sends the reply p, len on fd as `how` says, taking what it needs from the input. strict:
 * every send must be taken whole (the reader is known to read it); else a frame the socket
 * cannot take whole, or one announced longer than it is, ends with fd's write side closed (the
 * reader sees a cut frame, never waits). */
void fs_send_reply(int fd, const uint8_t *p, size_t len, enum fs_send how, size_t cut, uint32_t max,
                   int strict);

#endif
