/*
 * A growable byte buffer with a hard size cap, in the manner of OpenSSH's sshbuf.
 * Writers append big-endian integers and length-prefixed byte strings; readers consume
 * from an offset. The first failure is sticky: every later call returns the same error,
 * so a chain of puts or gets can be checked once at the end.
 */
#ifndef P11MUX_BUFFER_H
#define P11MUX_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct p11mux_buf;

/* New empty buffer that never grows beyond max bytes. NULL when out of memory. */
struct p11mux_buf *p11mux_buf_new(size_t max);
/* Frees the buffer (wiping its bytes, which may hold PINs or plaintext); NULL is fine. */
void p11mux_buf_free(struct p11mux_buf *b);
/* Empties the buffer and clears its sticky error; keeps the allocation. */
void p11mux_buf_reset(struct p11mux_buf *b);

/* Bytes written so far, and the number not yet read. */
size_t p11mux_buf_len(const struct p11mux_buf *b);
size_t p11mux_buf_remaining(const struct p11mux_buf *b);
/* Pointer to the first byte written (valid until the next put). */
const uint8_t *p11mux_buf_data(const struct p11mux_buf *b);
/* The sticky error, 0 if none. */
int p11mux_buf_error(const struct p11mux_buf *b);

/* Makes room for len more bytes at the end and returns a pointer to them in *p;
 * the caller fills them. Fails with P11MUX_ERR_TOO_BIG past the cap. */
int p11mux_buf_reserve(struct p11mux_buf *b, size_t len, uint8_t **p);

int p11mux_buf_put_u8(struct p11mux_buf *b, uint8_t v);
int p11mux_buf_put_u32(struct p11mux_buf *b, uint32_t v);
int p11mux_buf_put_u64(struct p11mux_buf *b, uint64_t v);
/* Raw bytes, no length prefix. */
int p11mux_buf_put(struct p11mux_buf *b, const void *p, size_t len);
/* u32 length, then the bytes; p may be NULL when len is 0. */
int p11mux_buf_put_bytes(struct p11mux_buf *b, const void *p, size_t len);

int p11mux_buf_get_u8(struct p11mux_buf *b, uint8_t *v);
int p11mux_buf_get_u32(struct p11mux_buf *b, uint32_t *v);
int p11mux_buf_get_u64(struct p11mux_buf *b, uint64_t *v);
/* Exactly len raw bytes; *p points into the buffer (valid until it changes). */
int p11mux_buf_get(struct p11mux_buf *b, size_t len, const uint8_t **p);
/* A u32-length-prefixed byte string; *p points into the buffer, *len is its length.
 * The length is checked against what remains before anything else happens. */
int p11mux_buf_get_bytes(struct p11mux_buf *b, const uint8_t **p, size_t *len);

#endif
