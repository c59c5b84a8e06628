#include "buffer.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

struct p11mux_buf {
	uint8_t *d;
	size_t len;   /* bytes written */
	size_t off;   /* bytes read */
	size_t alloc; /* bytes allocated */
	size_t max;   /* hard cap on len */
	int err;      /* sticky error */
};

static void
wipe(void *p, size_t n)
{
	volatile uint8_t *v = p;

	while (n-- > 0)
		*v++ = 0;
}

struct p11mux_buf *
p11mux_buf_new(size_t max)
{
	struct p11mux_buf *b;

	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	b->max = max;
	return b;
}

void
p11mux_buf_free(struct p11mux_buf *b)
{
	if (b == NULL)
		return;
	if (b->d != NULL) {
		wipe(b->d, b->alloc);
		free(b->d);
	}
	free(b);
}

void
p11mux_buf_reset(struct p11mux_buf *b)
{
	if (b->d != NULL)
		wipe(b->d, b->len);
	b->len = b->off = 0;
	b->err = 0;
}

size_t
p11mux_buf_len(const struct p11mux_buf *b)
{
	return b->len;
}

size_t
p11mux_buf_remaining(const struct p11mux_buf *b)
{
	return b->len - b->off;
}

const uint8_t *
p11mux_buf_data(const struct p11mux_buf *b)
{
	return b->d;
}

int
p11mux_buf_error(const struct p11mux_buf *b)
{
	return b->err;
}

static int
fail(struct p11mux_buf *b, int err)
{
	if (b->err == 0)
		b->err = err;
	return b->err;
}

int
p11mux_buf_reserve(struct p11mux_buf *b, size_t len, uint8_t **p)
{
	size_t want, nalloc;
	uint8_t *nd;

	if (b->err != 0)
		return b->err;
	if (len > b->max || b->len > b->max - len)
		return fail(b, P11MUX_ERR_TOO_BIG);
	want = b->len + len;
	if (want > b->alloc) {
		nalloc = b->alloc < 256 ? 256 : b->alloc;
		while (nalloc < want)
			nalloc = nalloc > b->max / 2 ? b->max : nalloc * 2;
		/* Grow by copying so that freed memory never keeps secrets. */
		if ((nd = malloc(nalloc)) == NULL)
			return fail(b, P11MUX_ERR_NOMEM);
		if (b->d != NULL) {
			memcpy(nd, b->d, b->len);
			wipe(b->d, b->alloc);
			free(b->d);
		}
		b->d = nd;
		b->alloc = nalloc;
	}
	/* Nothing to point at in an empty, never-allocated buffer (and NULL + 0 is undefined). */
	*p = b->d != NULL ? b->d + b->len : NULL;
	b->len = want;
	return 0;
}

int
p11mux_buf_put(struct p11mux_buf *b, const void *p, size_t len)
{
	uint8_t *dst;
	int r;

	if ((r = p11mux_buf_reserve(b, len, &dst)) != 0)
		return r;
	if (len > 0)
		memcpy(dst, p, len);
	return 0;
}

int
p11mux_buf_put_u8(struct p11mux_buf *b, uint8_t v)
{
	return p11mux_buf_put(b, &v, 1);
}

int
p11mux_buf_put_u32(struct p11mux_buf *b, uint32_t v)
{
	uint8_t s[4];

	s[0] = v >> 24;
	s[1] = v >> 16;
	s[2] = v >> 8;
	s[3] = v;
	return p11mux_buf_put(b, s, sizeof(s));
}

int
p11mux_buf_put_u64(struct p11mux_buf *b, uint64_t v)
{
	int r;

	if ((r = p11mux_buf_put_u32(b, (uint32_t)(v >> 32))) != 0)
		return r;
	return p11mux_buf_put_u32(b, (uint32_t)v);
}

int
p11mux_buf_put_bytes(struct p11mux_buf *b, const void *p, size_t len)
{
	int r;

	if (len > UINT32_MAX)
		return fail(b, P11MUX_ERR_TOO_BIG);
	if ((r = p11mux_buf_put_u32(b, (uint32_t)len)) != 0)
		return r;
	return p11mux_buf_put(b, p, len);
}

int
p11mux_buf_get(struct p11mux_buf *b, size_t len, const uint8_t **p)
{
	if (b->err != 0)
		return b->err;
	if (len > b->len - b->off)
		return fail(b, P11MUX_ERR_SHORT);
	*p = b->d != NULL ? b->d + b->off : NULL;
	b->off += len;
	return 0;
}

int
p11mux_buf_get_u8(struct p11mux_buf *b, uint8_t *v)
{
	const uint8_t *p;
	int r;

	if ((r = p11mux_buf_get(b, 1, &p)) != 0)
		return r;
	*v = p[0];
	return 0;
}

int
p11mux_buf_get_u32(struct p11mux_buf *b, uint32_t *v)
{
	const uint8_t *p;
	int r;

	if ((r = p11mux_buf_get(b, 4, &p)) != 0)
		return r;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return 0;
}

int
p11mux_buf_get_u64(struct p11mux_buf *b, uint64_t *v)
{
	uint32_t hi, lo;
	int r;

	if ((r = p11mux_buf_get_u32(b, &hi)) != 0 || (r = p11mux_buf_get_u32(b, &lo)) != 0)
		return r;
	*v = (uint64_t)hi << 32 | lo;
	return 0;
}

int
p11mux_buf_get_bytes(struct p11mux_buf *b, const uint8_t **p, size_t *len)
{
	uint32_t n;
	int r;

	if ((r = p11mux_buf_get_u32(b, &n)) != 0)
		return r;
	if (n > b->len - b->off)
		return fail(b, P11MUX_ERR_SHORT);
	if ((r = p11mux_buf_get(b, n, p)) != 0)
		return r;
	*len = n;
	return 0;
}
