/*
 * fuzz_rpc's input format, shared by the target (fuzz_rpc.c) and its seed writer
 * (rpc_seeds.c). An input is a list of records separated by RPC_DELIM; a record is a tag byte
 * and the bytes up to the next delimiter (a delimiter, not a length, so that the fuzzer's
 * insertions and deletions inside a record leave the others whole):
 *   RPC_REC_FRAME    a request frame's payload, for rpc_handle()
 *   RPC_REC_ANSWERS  what the stub members answer from now on, one byte per member call
 *                    (RPC_ANS_*); once they are used up, every call succeeds
 *   RPC_REC_CONNECT  a new connection (the old one ends); 4 bytes: its uid
 *   RPC_REC_TICKET   a LOGIN with the last ticket a LOGIN was answered with in this input:
 *                    1 byte, the pool's index; then the PIN (may be empty). With
 *                    RPC_REC_FLIP in the tag, one bit of the ticket is flipped.
 *   RPC_REC_BUILT    a request built from choice bytes (rpc_build.c): the call, then its
 *                    pool, object (a session object a reply returned too), mechanism, PIN,
 *                    ticket, application id, session, template... among the stub daemon's,
 *                    and data
 * The record's kind is (tag & ~RPC_REC_FLIP) % RPC_REC_KINDS.
 * An empty record is skipped. A connection the daemon closes is followed by a new one of the
 * same uid.
 */
#ifndef P11MUX_FUZZ_RPC_H
#define P11MUX_FUZZ_RPC_H

#include "stubd.h"

/* Between records: four bytes no request of the seeds holds. */
#define RPC_DELIM     "\xffREC"
#define RPC_DELIM_LEN 4

#define RPC_REC_FRAME   0
#define RPC_REC_ANSWERS 1
#define RPC_REC_CONNECT 2
#define RPC_REC_TICKET  3
#define RPC_REC_BUILT   4
#define RPC_REC_KINDS   5
#define RPC_REC_FLIP    0x80

/* A member's answer: the low 4 bits say what, the high 4 bits how long the output of a
 * success is (rpc_out_len; for RANDOM, 15 means one byte more than asked). For a success of
 * CREATE, GENERATE or GENERATE_PAIR the high bits say what the device adds to the template's
 * attributes: RPC_MADE_PUBLIC, CKA_PRIVATE false where the template does not say it (else
 * true); RPC_MADE_BARE, nothing (no class, key type or CKA_PRIVATE the template lacks). */
#define RPC_ANS_OK              0 /* 0..5 */
#define RPC_ANS_RETRY           6 /* the device failed: the member goes down */
#define RPC_ANS_RETRY_COST      7 /* the helper died running it */
#define RPC_ANS_GENERAL_ERROR   8 /* 8..11: the ambiguous ones (member_ambiguous) */
#define RPC_ANS_DEVICE_ERROR    9
#define RPC_ANS_FUNCTION_FAILED 10
#define RPC_ANS_DEVICE_MEMORY   11
#define RPC_ANS_SIG_INVALID     12
#define RPC_ANS_DATA_LEN_RANGE  13
#define RPC_ANS_ENC_INVALID     14
#define RPC_ANS_RAW             15 /* the next 4 answer bytes are the CK_RV, big-endian */
#define RPC_MADE_PUBLIC         0x10
#define RPC_MADE_BARE           0x40

/* The first uid of every input. */
#define RPC_UID 1000

/* What a built request may name: the stub daemon's pools and objects, the last ticket, and
 * the session objects' handles the replies of this input returned. */
struct rpc_build {
	struct stubd *sd;
	const uint8_t *ticket;
	size_t ticketlen;
	const CK_OBJECT_HANDLE *handles;
	size_t nhandles;
};

/* Writes into b the request that the choice bytes p[0..n) describe (rpc_build.c). 0, or -1
 * when the codec refuses it (then b holds nothing to send). */
int rpc_build(const struct rpc_build *x, struct p11mux_buf *b, const uint8_t *p, size_t n);

/* Writes fuzz_rpc's seed corpus into dir (which must exist). 0, or -1 with a message. */
int rpc_write_seeds(struct stubd *s, const char *dir);
/* Writes fuzz_rpc's dictionary (call codes, slots, the objects' handles, ...) to path. */
int rpc_write_dict(struct stubd *s, const char *path);

#endif
