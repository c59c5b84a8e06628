/*
 * Fuzz target for every decoder of bytes that come from another process: requests (the daemon),
 * replies (the shim) and the frame layer. Fields are decoded generically, following the call
 * table, so every getter of the codec is reached. Besides "no crash, no leak", it checks:
 *   - a message that decodes cleanly, encoded again and decoded again, gives the same values;
 *   - frame_recv's result matches what the byte stream says (whole frame, too big, cut short,
 *     closed before a header), and a frame's payload comes back byte for byte.
 */
#include "fuzz_proto.h"
#include "../fuzz/check.h"
#include "err.h"
#include "proto.h"
#include "sigcodec.h"
#include "transport.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Keeps the reads of sc_touch() from being optimised away. */
static volatile uint64_t sink;

/* A buffer holding data as p11mux_frame_recv() would leave it; NULL when larger than a frame. */
static struct p11mux_buf *
load(const uint8_t *data, size_t size)
{
	struct p11mux_buf *b = p11mux_buf_new(P11MUX_FRAME_MAX);
	uint8_t *p;

	CHECK(b != NULL);
	/* An empty input stays a never-used buffer: reserving 0 bytes in one is the known NULL + 0
	 * bug (test_buffer's known-bugs group), which would otherwise stop every fuzzing run at
	 * its first input. */
	if (size > 0) {
		if (p11mux_buf_reserve(b, size, &p) != 0) {
			p11mux_buf_free(b);
			return NULL;
		}
		memcpy(p, data, size);
	}
	return b;
}

/* Encodes decoded values again, decodes the result, and checks that nothing changed. */
static void
reencode(uint32_t call, int is_reply, CK_RV rv, const struct sc_fields *f)
{
	struct p11mux_buf *b = p11mux_buf_new(4 * (size_t)P11MUX_FRAME_MAX);
	struct p11mux_msg m = {0};
	struct sc_fields g;
	CK_RV rv2 = 0;

	CHECK(b != NULL);
	if (is_reply)
		CHECK(p11mux_msg_begin_reply(&m, b, call, rv) == 0);
	else
		CHECK(p11mux_msg_begin_request(&m, b, call) == 0);
	CHECK(sc_encode(&m, f) == 0);
	CHECK(p11mux_msg_end(&m) == 0);
	p11mux_msg_clear(&m);
	if (is_reply) {
		CHECK(p11mux_msg_read_reply(&m, b, call, &rv2) == 0);
		CHECK(rv2 == rv);
	} else {
		CHECK(p11mux_msg_read_request(&m, b) == 0);
		CHECK(m.call->code == call);
	}
	CHECK(sc_decode(&m, &g) == 0);
	CHECK(p11mux_msg_end(&m) == 0);
	CHECK(sc_equal(f, &g));
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
}

/* As the daemon reads a request: call code, every field of the signature, nothing left. */
static int
fuzz_request(const uint8_t *data, size_t size)
{
	struct p11mux_buf *b = load(data, size);
	struct p11mux_msg m = {0};
	struct sc_fields f;
	int ok = 0, r;

	if (b == NULL)
		return 0;
	if (p11mux_msg_read_request(&m, b) == 0) {
		CHECK(m.call != NULL && m.call == p11mux_call_find(m.call->code));
		r = sc_decode(&m, &f);
		/* What was decoded before a failure is still valid memory. */
		sink += sc_touch(&f);
		if (r == 0 && p11mux_msg_end(&m) == 0) {
			CHECK(p11mux_buf_remaining(b) == 0);
			reencode(m.call->code, 0, CKR_OK, &f);
			ok = FUZZ_REQUEST_OK;
		}
	}
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
	return ok;
}

/* As the shim reads a reply to the call named by the first four bytes. */
static int
fuzz_reply(const uint8_t *data, size_t size)
{
	struct p11mux_buf *b = load(data, size);
	struct p11mux_msg m = {0};
	struct sc_fields f;
	uint32_t call = P11MUX_CALL_HELLO;
	CK_RV rv = 0;
	int ok = 0, r;

	if (b == NULL)
		return 0;
	if (size >= 4)
		call = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
		       data[3];
	if (p11mux_msg_read_reply(&m, b, call, &rv) == 0) {
		CHECK(p11mux_call_find(call) != NULL);
		r = sc_decode(&m, &f);
		sink += sc_touch(&f);
		/* An error reply has no fields. */
		CHECK(rv == CKR_OK || f.n == 0);
		if (r == 0 && p11mux_msg_end(&m) == 0) {
			reencode(call, 1, rv, &f);
			ok = FUZZ_REPLY_OK;
		}
	}
	p11mux_msg_clear(&m);
	p11mux_buf_free(b);
	return ok;
}

/* The cap frames are read with: the pipe's size. The code is the same as with the daemon's cap
 * (P11MUX_FRAME_MAX, a parameter), but a frame announced and not sent no longer costs a
 * megabyte reserved and wiped per input, which made this target 20 times slower. */
#define FRAMES_CAP 65536u

/* The bytes as a stream on a pipe: frames are read until the stream says stop, and each result
 * must be the one the bytes call for. */
static int
fuzz_frames(const uint8_t *data, size_t size)
{
	struct p11mux_buf *b;
	size_t off = 0, done, rest, before;
	uint32_t announced;
	int fds[2], r, frames = 0;
	ssize_t n;

	/* A pipe holds 64 KiB: more would block the writer. */
	if (size > 65536)
		return 0;
	CHECK(pipe2(fds, O_CLOEXEC) == 0);
	for (done = 0; done < size; done += (size_t)n)
		CHECK((n = write(fds[1], data + done, size - done)) > 0);
	close(fds[1]);
	CHECK((b = p11mux_buf_new(FRAMES_CAP)) != NULL);
	/* The buffer has held a byte, so that a zero-length frame does not run into the known
	 * NULL + 0 bug (see load()). */
	CHECK(p11mux_buf_put_u8(b, 0xee) == 0);
	for (;;) {
		before = p11mux_buf_len(b);
		r = p11mux_frame_recv(fds[0], b, FRAMES_CAP);
		rest = size - off;
		if (rest < 4) {
			/* No whole header: closed, and the buffer is as it was. */
			CHECK(r == P11MUX_ERR_CLOSED);
			CHECK(p11mux_buf_len(b) == before);
			break;
		}
		announced = (uint32_t)data[off] << 24 | (uint32_t)data[off + 1] << 16 |
		            (uint32_t)data[off + 2] << 8 | data[off + 3];
		if (announced > FRAMES_CAP) {
			CHECK(r == P11MUX_ERR_TOO_BIG);
			break;
		}
		if (rest - 4 < announced) {
			CHECK(r == P11MUX_ERR_SHORT);
			break;
		}
		CHECK(r == 0);
		CHECK(p11mux_buf_len(b) == announced && p11mux_buf_remaining(b) == announced);
		CHECK(announced == 0 || memcmp(p11mux_buf_data(b), data + off + 4, announced) == 0);
		off += 4 + announced;
		frames++;
	}
	close(fds[0]);
	p11mux_buf_free(b);
	return frames > 0 ? FUZZ_FRAME_OK : 0;
}

int
fuzz_proto_one(const uint8_t *data, size_t size)
{
	return fuzz_request(data, size) | fuzz_reply(data, size) | fuzz_frames(data, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_proto_one(data, size);
	return 0;
}
