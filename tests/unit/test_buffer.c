/* Unit tests of common/buffer.c: widths, byte order, the cap, the sticky error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buffer.h"
#include "err.h"

static void
buffer_new_is_empty(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	uint8_t v = 0x5a;

	(void)state;
	assert_non_null(b);
	assert_int_equal(p11mux_buf_len(b), 0);
	assert_int_equal(p11mux_buf_remaining(b), 0);
	assert_int_equal(p11mux_buf_error(b), 0);
	/* Nothing to read: the first get fails. */
	assert_int_equal(p11mux_buf_get_u8(b, &v), P11MUX_ERR_SHORT);
	assert_int_equal(v, 0x5a);
	p11mux_buf_free(b);
	p11mux_buf_free(NULL);
}

/* Every width is written big-endian; checked byte by byte, then read back. */
static void
buffer_big_endian_layout(void **state)
{
	static const uint8_t want[] = {
	        0xab,                                           /* u8 */
	        0x01, 0x02, 0x03, 0x04,                         /* u32 */
	        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, /* u64 */
	        0x00, 0x00, 0x00, 0x03, 'x',  'y',  'z',        /* bytes */
	        'r',  'a',  'w',                                /* raw */
	        0x00, 0x00, 0x00, 0x00,                         /* empty bytes */
	};
	struct p11mux_buf *b = p11mux_buf_new(1024);
	const uint8_t *p = NULL;
	uint64_t v64 = 0;
	uint32_t v32 = 0;
	uint8_t v8 = 0;
	size_t len = 99;

	(void)state;
	assert_int_equal(p11mux_buf_put_u8(b, 0xab), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 0x01020304u), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 0x1122334455667788ull), 0);
	assert_int_equal(p11mux_buf_put_bytes(b, "xyz", 3), 0);
	assert_int_equal(p11mux_buf_put(b, "raw", 3), 0);
	assert_int_equal(p11mux_buf_put_bytes(b, NULL, 0), 0);
	assert_int_equal(p11mux_buf_len(b), sizeof(want));
	assert_memory_equal(p11mux_buf_data(b), want, sizeof(want));
	assert_int_equal(p11mux_buf_remaining(b), sizeof(want));

	assert_int_equal(p11mux_buf_get_u8(b, &v8), 0);
	assert_int_equal(v8, 0xab);
	assert_int_equal(p11mux_buf_get_u32(b, &v32), 0);
	assert_int_equal(v32, 0x01020304u);
	assert_int_equal(p11mux_buf_get_u64(b, &v64), 0);
	assert_int_equal(v64, 0x1122334455667788ull);
	assert_int_equal(p11mux_buf_get_bytes(b, &p, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(p, "xyz", 3);
	assert_int_equal(p11mux_buf_get(b, 3, &p), 0);
	assert_memory_equal(p, "raw", 3);
	assert_int_equal(p11mux_buf_get_bytes(b, &p, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(p11mux_buf_remaining(b), 0);
	assert_int_equal(p11mux_buf_error(b), 0);
	p11mux_buf_free(b);
}

/* Extreme values of each width survive a round trip, with the high bit set or not. */
static void
buffer_width_extremes(void **state)
{
	static const uint64_t v64s[] = {
	        0, 1, 0x80, 0xffffffffull, 0x100000000ull, 0x8000000000000000ull, UINT64_MAX};
	static const uint32_t v32s[] = {0, 1, 0x7fffffffu, 0x80000000u, UINT32_MAX};
	static const uint8_t v8s[] = {0, 1, 0x7f, 0x80, 0xff};
	struct p11mux_buf *b = p11mux_buf_new(4096);
	uint64_t g64;
	uint32_t g32;
	uint8_t g8;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v64s) / sizeof(v64s[0]); i++)
		assert_int_equal(p11mux_buf_put_u64(b, v64s[i]), 0);
	for (i = 0; i < sizeof(v32s) / sizeof(v32s[0]); i++)
		assert_int_equal(p11mux_buf_put_u32(b, v32s[i]), 0);
	for (i = 0; i < sizeof(v8s); i++)
		assert_int_equal(p11mux_buf_put_u8(b, v8s[i]), 0);
	assert_int_equal(p11mux_buf_len(b), 7 * 8 + 5 * 4 + 5);
	/* UINT64_MAX is eight 0xff bytes, 0x80000000 is 80 00 00 00. */
	assert_memory_equal(p11mux_buf_data(b) + 6 * 8, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	assert_memory_equal(p11mux_buf_data(b) + 7 * 8 + 3 * 4, "\x80\x00\x00\x00", 4);
	for (i = 0; i < sizeof(v64s) / sizeof(v64s[0]); i++) {
		assert_int_equal(p11mux_buf_get_u64(b, &g64), 0);
		assert_int_equal(g64, v64s[i]);
	}
	for (i = 0; i < sizeof(v32s) / sizeof(v32s[0]); i++) {
		assert_int_equal(p11mux_buf_get_u32(b, &g32), 0);
		assert_int_equal(g32, v32s[i]);
	}
	for (i = 0; i < sizeof(v8s); i++) {
		assert_int_equal(p11mux_buf_get_u8(b, &g8), 0);
		assert_int_equal(g8, v8s[i]);
	}
	assert_int_equal(p11mux_buf_remaining(b), 0);
	p11mux_buf_free(b);
}

/* The cap is a hard limit; the first failure sticks for puts and gets alike. */
static void
buffer_cap_and_sticky_error(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(10);
	uint8_t v8 = 0x77;

	(void)state;
	assert_int_equal(p11mux_buf_put_u64(b, 42), 0);
	/* 8 + 4 > 10: refused, and nothing of it is written. */
	assert_int_equal(p11mux_buf_put_u32(b, 7), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 8);
	assert_int_equal(p11mux_buf_error(b), P11MUX_ERR_TOO_BIG);
	/* A byte would fit, but the error is sticky. */
	assert_int_equal(p11mux_buf_put_u8(b, 1), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_put_bytes(b, NULL, 0), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 8);
	/* Gets see the same error and do not consume or write anything. */
	assert_int_equal(p11mux_buf_get_u8(b, &v8), P11MUX_ERR_TOO_BIG);
	assert_int_equal(v8, 0x77);
	assert_int_equal(p11mux_buf_remaining(b), 8);
	p11mux_buf_free(b);
}

/* Filling the buffer to exactly its cap is allowed; one byte more is not. */
static void
buffer_cap_exact(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(16);
	uint8_t *p = NULL;

	(void)state;
	assert_int_equal(p11mux_buf_put_u64(b, 1), 0);
	assert_int_equal(p11mux_buf_put_u64(b, 2), 0);
	assert_int_equal(p11mux_buf_len(b), 16);
	assert_int_equal(p11mux_buf_reserve(b, 0, &p), 0);
	assert_int_equal(p11mux_buf_put_u8(b, 3), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 16);
	p11mux_buf_free(b);

	/* A buffer with a cap of 0 takes nothing. */
	b = p11mux_buf_new(0);
	assert_int_equal(p11mux_buf_put_u8(b, 1), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 0);
	p11mux_buf_free(b);
}

/* Sizes near SIZE_MAX must not wrap around the cap check. */
static void
buffer_cap_no_overflow(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(SIZE_MAX);
	uint8_t *p = NULL;
	char small[4] = "abc";

	(void)state;
	assert_int_equal(p11mux_buf_put_u32(b, 1), 0);
	assert_int_equal(p11mux_buf_reserve(b, SIZE_MAX, &p), P11MUX_ERR_TOO_BIG);
	assert_null(p);
	assert_int_equal(p11mux_buf_len(b), 4);
	p11mux_buf_free(b);

	/* A byte string longer than its u32 prefix can say is refused before it is read. */
	b = p11mux_buf_new(SIZE_MAX);
	assert_int_equal(p11mux_buf_put_bytes(b, small, (size_t)UINT32_MAX + 1),
	                 P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 0);
	p11mux_buf_free(b);

	b = p11mux_buf_new(100);
	assert_int_equal(p11mux_buf_reserve(b, 101, &p), P11MUX_ERR_TOO_BIG);
	assert_int_equal(p11mux_buf_len(b), 0);
	p11mux_buf_free(b);
}

/* Reading past the end fails with SHORT, consumes nothing, and sticks. */
static void
buffer_get_past_end(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	const uint8_t *p = NULL;
	uint64_t v64 = 0x1234;
	uint32_t v32 = 0;

	(void)state;
	/* Three bytes: a u32 does not fit and nothing is consumed. */
	assert_int_equal(p11mux_buf_put(b, "\x01\x02\x03", 3), 0);
	assert_int_equal(p11mux_buf_get_u32(b, &v32), P11MUX_ERR_SHORT);
	assert_int_equal(v32, 0);
	assert_int_equal(p11mux_buf_remaining(b), 3);
	assert_int_equal(p11mux_buf_error(b), P11MUX_ERR_SHORT);
	/* The bytes are there, but the buffer has failed. */
	assert_int_equal(p11mux_buf_get(b, 1, &p), P11MUX_ERR_SHORT);
	assert_null(p);
	p11mux_buf_free(b);

	/* Four bytes: a u64 fails (its first half may have been consumed; the error sticks). */
	b = p11mux_buf_new(64);
	assert_int_equal(p11mux_buf_put_u32(b, 0xdeadbeef), 0);
	assert_int_equal(p11mux_buf_get_u64(b, &v64), P11MUX_ERR_SHORT);
	assert_int_equal(v64, 0x1234);
	assert_int_equal(p11mux_buf_error(b), P11MUX_ERR_SHORT);
	assert_int_equal(p11mux_buf_get_u32(b, &v32), P11MUX_ERR_SHORT);
	assert_int_equal(v32, 0);
	p11mux_buf_free(b);

	/* Exactly the bytes present can be read; the next one cannot. */
	b = p11mux_buf_new(64);
	assert_int_equal(p11mux_buf_put(b, "abcd", 4), 0);
	assert_int_equal(p11mux_buf_get(b, 4, &p), 0);
	assert_memory_equal(p, "abcd", 4);
	assert_int_equal(p11mux_buf_get(b, 0, &p), 0);
	assert_int_equal(p11mux_buf_get(b, 1, &p), P11MUX_ERR_SHORT);
	p11mux_buf_free(b);
}

/* A length prefix larger than what follows fails before any byte is handed out. */
static void
buffer_get_bytes_prefix_too_long(void **state)
{
	static const uint32_t lens[] = {11, 100, 0x7fffffffu, UINT32_MAX};
	const uint8_t sentinel = 0;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct p11mux_buf *b = p11mux_buf_new(64);
		const uint8_t *p = &sentinel;
		size_t len = 12345;

		assert_int_equal(p11mux_buf_put_u32(b, lens[i]), 0);
		assert_int_equal(p11mux_buf_put(b, "0123456789", 10), 0);
		assert_int_equal(p11mux_buf_get_bytes(b, &p, &len), P11MUX_ERR_SHORT);
		assert_ptr_equal(p, &sentinel);
		assert_int_equal(len, 12345);
		/* Only the prefix was consumed; the payload was not touched. */
		assert_int_equal(p11mux_buf_remaining(b), 10);
		assert_int_equal(p11mux_buf_error(b), P11MUX_ERR_SHORT);
		p11mux_buf_free(b);
	}

	/* A prefix equal to what remains is fine. */
	{
		struct p11mux_buf *b = p11mux_buf_new(64);
		const uint8_t *p = NULL;
		size_t len = 0;

		assert_int_equal(p11mux_buf_put_u32(b, 10), 0);
		assert_int_equal(p11mux_buf_put(b, "0123456789", 10), 0);
		assert_int_equal(p11mux_buf_get_bytes(b, &p, &len), 0);
		assert_int_equal(len, 10);
		assert_memory_equal(p, "0123456789", 10);
		p11mux_buf_free(b);
	}
}

/* A truncated prefix is SHORT too. */
static void
buffer_get_bytes_truncated_prefix(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	const uint8_t *p = NULL;
	size_t len = 7;

	(void)state;
	assert_int_equal(p11mux_buf_put(b, "\x00\x00\x01", 3), 0);
	assert_int_equal(p11mux_buf_get_bytes(b, &p, &len), P11MUX_ERR_SHORT);
	assert_null(p);
	assert_int_equal(len, 7);
	p11mux_buf_free(b);
}

/* Reset empties the buffer and clears the error; the buffer is usable again. */
static void
buffer_reset_clears_error(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(8);
	uint32_t v = 0;

	(void)state;
	assert_int_equal(p11mux_buf_put_u64(b, 1), 0);
	assert_int_equal(p11mux_buf_put_u8(b, 1), P11MUX_ERR_TOO_BIG);
	p11mux_buf_reset(b);
	assert_int_equal(p11mux_buf_error(b), 0);
	assert_int_equal(p11mux_buf_len(b), 0);
	assert_int_equal(p11mux_buf_remaining(b), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 0xcafef00d), 0);
	assert_int_equal(p11mux_buf_get_u32(b, &v), 0);
	assert_int_equal(v, 0xcafef00d);

	/* A read error is cleared the same way, and the read offset goes back to 0. */
	assert_int_equal(p11mux_buf_get_u32(b, &v), P11MUX_ERR_SHORT);
	p11mux_buf_reset(b);
	assert_int_equal(p11mux_buf_error(b), 0);
	assert_int_equal(p11mux_buf_put_u32(b, 5), 0);
	assert_int_equal(p11mux_buf_get_u32(b, &v), 0);
	assert_int_equal(v, 5);
	p11mux_buf_free(b);
}

/* Reserve hands out room at the end; what is written there is part of the buffer, and growth
 * keeps earlier bytes. */
static void
buffer_reserve(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(1u << 20);
	uint8_t *p = NULL;
	const uint8_t *q;
	uint32_t v;
	size_t i;

	(void)state;
	assert_int_equal(p11mux_buf_put_u32(b, 0x01020304), 0);
	assert_int_equal(p11mux_buf_reserve(b, 5, &p), 0);
	assert_ptr_equal(p, p11mux_buf_data(b) + 4);
	memcpy(p, "hello", 5);
	assert_int_equal(p11mux_buf_len(b), 9);
	assert_int_equal(p11mux_buf_reserve(b, 0, &p), 0);
	assert_int_equal(p11mux_buf_len(b), 9);
	/* Far past the first allocation: everything before is kept. */
	assert_int_equal(p11mux_buf_reserve(b, 300000, &p), 0);
	for (i = 0; i < 300000; i++)
		p[i] = (uint8_t)(i * 7);
	assert_int_equal(p11mux_buf_len(b), 300009);
	assert_int_equal(p11mux_buf_get_u32(b, &v), 0);
	assert_int_equal(v, 0x01020304);
	assert_int_equal(p11mux_buf_get(b, 5, &q), 0);
	assert_memory_equal(q, "hello", 5);
	assert_int_equal(p11mux_buf_get(b, 300000, &q), 0);
	for (i = 0; i < 300000; i++)
		assert_int_equal(q[i], (uint8_t)(i * 7));
	/* Up to the cap, not beyond. */
	assert_int_equal(p11mux_buf_reserve(b, (1u << 20) - 300009, &p), 0);
	assert_int_equal(p11mux_buf_len(b), 1u << 20);
	assert_int_equal(p11mux_buf_reserve(b, 1, &p), P11MUX_ERR_TOO_BIG);
	p11mux_buf_free(b);
}

/* Many small puts across several growths, read back in order. */
static void
buffer_growth_keeps_order(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(1u << 20);
	uint32_t i, v;

	(void)state;
	for (i = 0; i < 20000; i++)
		assert_int_equal(p11mux_buf_put_u32(b, i * 2654435761u), 0);
	assert_int_equal(p11mux_buf_len(b), 80000);
	for (i = 0; i < 20000; i++) {
		assert_int_equal(p11mux_buf_get_u32(b, &v), 0);
		assert_int_equal(v, i * 2654435761u);
	}
	assert_int_equal(p11mux_buf_remaining(b), 0);
	p11mux_buf_free(b);
}

/*
 * KNOWN BUG (run with the argument "known-bugs"; fails only when built with clang, whose
 * UBSan checks pointer arithmetic on NULL): p11mux_buf_reserve() and p11mux_buf_get() compute
 * b->d + b->len / b->d + b->off while b->d is still NULL (a buffer that never held a byte), which
 * is undefined behaviour ("applying zero offset to null pointer", buffer.c reserve and get).
 * It is reachable from the network: p11mux_frame_recv() of a zero-length frame into a fresh
 * buffer calls p11mux_buf_reserve(b, 0, &p).
 */
static void
bug_buffer_zero_length_on_fresh_buffer(void **state)
{
	struct p11mux_buf *b = p11mux_buf_new(64);
	const uint8_t *q = NULL;
	uint8_t *p = NULL;

	(void)state;
	assert_int_equal(p11mux_buf_reserve(b, 0, &p), 0);
	assert_int_equal(p11mux_buf_get(b, 0, &q), 0);
	assert_int_equal(p11mux_buf_len(b), 0);
	p11mux_buf_free(b);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(buffer_new_is_empty),
	        cmocka_unit_test(buffer_big_endian_layout),
	        cmocka_unit_test(buffer_width_extremes),
	        cmocka_unit_test(buffer_cap_and_sticky_error),
	        cmocka_unit_test(buffer_cap_exact),
	        cmocka_unit_test(buffer_cap_no_overflow),
	        cmocka_unit_test(buffer_get_past_end),
	        cmocka_unit_test(buffer_get_bytes_prefix_too_long),
	        cmocka_unit_test(buffer_get_bytes_truncated_prefix),
	        cmocka_unit_test(buffer_reset_clears_error),
	        cmocka_unit_test(buffer_reserve),
	        cmocka_unit_test(buffer_growth_keeps_order),
	};
	const struct CMUnitTest known_bugs[] = {
	        cmocka_unit_test(bug_buffer_zero_length_on_fresh_buffer),
	};

	if (argc > 1 && strcmp(argv[1], "known-bugs") == 0)
		return cmocka_run_group_tests_name("buffer_known_bugs", known_bugs, NULL, NULL);
	return cmocka_run_group_tests_name("buffer", tests, NULL, NULL);
}
