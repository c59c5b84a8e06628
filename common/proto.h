/*
 * The p11mux wire protocol: one table of calls, and a message codec that follows it.
 *
 * A message is a frame (see transport.h) whose payload starts with the u32 call code.
 * A request continues with the fields of the call's request signature; a reply with a
 * u64 CK_RV and, only when that is CKR_OK, the fields of the reply signature.
 * Signature letters:
 *   u  CK_ULONG as u64             y  byte string (u32 length + bytes)
 *   U  array of CK_ULONG           A  attribute list (type, status, value)
 *   M  mechanism (type + encoded parameter)
 *   P  array of slot descriptors (slot info, token info, mechanisms)
 * The codec checks every put and get against the signature, so an encoder or decoder that
 * strays from the table fails loudly instead of producing a frame the peer misreads.
 */
#ifndef P11MUX_PROTO_H
#define P11MUX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "buffer.h"

#define P11MUX_PROTO_MAGIC 0x50313158u /* "P11X" */
/* The version this build speaks; a daemon still answers clients down to
 * P11MUX_PROTO_LOWEST (docs/protocol.md, "Versioning"). */
#define P11MUX_PROTO_VERSION 4u
#define P11MUX_PROTO_LOWEST  3u
/* Hard cap on a frame's payload, checked before any allocation. */
#define P11MUX_FRAME_MAX (1024u * 1024u)
/* Session objects' handles have this bit set; token objects' never do (31 bits). */
#define P11MUX_SESSION_OBJECT 0x80000000ul
/* DROP's session for "the private objects of every session": the application logged out. */
#define P11MUX_DROP_PRIVATE (~0ul)
/* Largest data a client may send for one operation (multi-part data included). */
#define P11MUX_DATA_MAX (P11MUX_FRAME_MAX - 4096u)

enum p11mux_call {
	P11MUX_CALL_HELLO = 1,
	P11MUX_CALL_GET_SLOTS,
	P11MUX_CALL_LOGIN,
	P11MUX_CALL_LOGOUT,
	P11MUX_CALL_FIND,
	P11MUX_CALL_GET_OBJECT,
	P11MUX_CALL_SIGN,
	P11MUX_CALL_VERIFY,
	P11MUX_CALL_ENCRYPT,
	P11MUX_CALL_DECRYPT,
	P11MUX_CALL_DIGEST,
	P11MUX_CALL_RANDOM,
	P11MUX_CALL_CLIENT,
	P11MUX_CALL_CREATE,
	P11MUX_CALL_GENERATE,
	P11MUX_CALL_GENERATE_PAIR,
	P11MUX_CALL_DESTROY,
	P11MUX_CALL_DROP,
	P11MUX_CALL_FIND_VERSIONED, /* version 4 */
	P11MUX_CALL_COUNT           /* one past the last */
};

struct p11mux_call_desc {
	uint32_t code;
	const char *name;
	const char *request; /* signature of the request fields */
	const char *reply;   /* signature of the reply fields after the CK_RV */
	const char *doc;     /* one line: what the call does */
};

/* A protocol: its call table, and whether its messages carry a tag. */
struct p11mux_proto {
	const char *name;
	const struct p11mux_call_desc *calls; /* indexed by code; entry 0 unused */
	uint32_t ncalls;                      /* one past the last code */
	/* Tagged messages carry a u64 after the call code, which a reply repeats: several
	 * requests can be in flight on one connection (the daemon and its member helpers). */
	int tagged;
};

/* The client protocol: the shim and the daemon. Untagged. */
extern const struct p11mux_proto p11mux_client_proto;
/* The client protocol's call table, indexed by code (entry 0 unused). */
extern const struct p11mux_call_desc p11mux_calls[P11MUX_CALL_COUNT];
/* The description of a call code of the protocol, or NULL when it is unknown. */
const struct p11mux_call_desc *p11mux_proto_call(const struct p11mux_proto *p, uint32_t code);
/* The same for the client protocol. */
const struct p11mux_call_desc *p11mux_call_find(uint32_t code);

/* A slot as the daemon describes it to shims. */
struct p11mux_slot {
	CK_SLOT_ID id;
	CK_SLOT_INFO slot;
	CK_TOKEN_INFO token;
	CK_ULONG nmechs;
	CK_MECHANISM_TYPE *mechs; /* nmechs entries */
	CK_MECHANISM_INFO *infos; /* nmechs entries */
};

/* A decoded attribute list: status[i] is CKR_OK or the error the device gave for that
 * attribute (e.g. CKR_ATTRIBUTE_SENSITIVE), in which case attrs[i] has no value. */
struct p11mux_attrs {
	CK_ATTRIBUTE *attrs;
	CK_RV *status;
	size_t n;
};

struct p11mux_alloc;

/* A message being built or read. Decoded arrays live in the message's arena and in its
 * buffer; both stay valid until p11mux_msg_clear().
 *
 * Errors are sticky, as in p11-kit's buffer and OpenSSH's sshbuf: the first put or get that
 * fails marks the message failed, every later one returns the same error without touching
 * the buffer, and p11mux_msg_end() reports it. So a caller may put (or get) every field and
 * check once, at the end: a message that lost a field is never sent or acted on. */
struct p11mux_msg {
	struct p11mux_buf *buf;
	const struct p11mux_proto *proto;
	const struct p11mux_call_desc *call;
	uint64_t tag;    /* tagged protocols: the message's tag */
	const char *sig; /* fields still to come */
	int reading;     /* decoding a received message */
	int err;         /* the first error, sticky (0: none) */
	struct p11mux_alloc *arena;
};

/* Starts a request of protocol p for call into buf (which is reset); tag is written when the
 * protocol is tagged. */
int p11mux_msg_request(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p,
                       uint32_t call, uint64_t tag);
/* Starts a reply to call with rv (and the request's tag); the reply fields follow only when
 * rv is CKR_OK. */
int p11mux_msg_reply(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p,
                     uint32_t call, uint64_t tag, CK_RV rv);
/* Reads the header of a received request of protocol p: call (m->call) and tag (m->tag).
 * P11MUX_ERR_INVALID for an unknown call. */
int p11mux_msg_read(struct p11mux_msg *m, struct p11mux_buf *buf, const struct p11mux_proto *p);
/* Reads the header of a received reply of protocol p, whatever call it answers: m->call,
 * m->tag, and *rv. */
int p11mux_msg_read_any_reply(struct p11mux_msg *m, struct p11mux_buf *buf,
                              const struct p11mux_proto *p, CK_RV *rv);

/* The client protocol's four: */
/* Starts a request for call into buf (which is reset). */
int p11mux_msg_begin_request(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call);
/* Starts a reply to call with rv; the reply fields follow only when rv is CKR_OK. */
int p11mux_msg_begin_reply(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call, CK_RV rv);
/* Reads the call code of a received request; P11MUX_ERR_INVALID for an unknown call. */
int p11mux_msg_read_request(struct p11mux_msg *m, struct p11mux_buf *buf);
/* Reads a received reply's header; it must answer call. *rv gets the CK_RV. */
int p11mux_msg_read_reply(struct p11mux_msg *m, struct p11mux_buf *buf, uint32_t call, CK_RV *rv);
/* The message's sticky error, or the buffer's; then checks that every field of the
 * signature was written or read and, when reading, that no bytes are left over. */
int p11mux_msg_end(struct p11mux_msg *m);
/* The sticky error so far (0: none), without the end-of-message checks. */
int p11mux_msg_error(const struct p11mux_msg *m);
/* Frees the arena; the message may then be begun again. */
void p11mux_msg_clear(struct p11mux_msg *m);

/* Every put and get returns 0 or the message's (sticky) error. */
int p11mux_msg_put_ulong(struct p11mux_msg *m, CK_ULONG v);
int p11mux_msg_put_bytes(struct p11mux_msg *m, const void *p, size_t len);
int p11mux_msg_put_ulongs(struct p11mux_msg *m, const CK_ULONG *v, size_t n);
/* status may be NULL (all CKR_OK). An attribute with a NULL value or a non-OK status is sent
 * without a value. */
int p11mux_msg_put_attrs(struct p11mux_msg *m, const CK_ATTRIBUTE *a, const CK_RV *status,
                         size_t n);
/* Fails with P11MUX_ERR_INVALID when the parameter cannot be encoded (see
 * p11mux_mech_param_ok). */
int p11mux_msg_put_mech(struct p11mux_msg *m, const CK_MECHANISM *mech);
int p11mux_msg_put_slots(struct p11mux_msg *m, const struct p11mux_slot *s, size_t n);

int p11mux_msg_get_ulong(struct p11mux_msg *m, CK_ULONG *v);
/* *p points into the message buffer. */
int p11mux_msg_get_bytes(struct p11mux_msg *m, const uint8_t **p, size_t *len);
/* *v is in the arena. */
int p11mux_msg_get_ulongs(struct p11mux_msg *m, CK_ULONG **v, size_t *n);
int p11mux_msg_get_attrs(struct p11mux_msg *m, struct p11mux_attrs *out);
/* *mech and its parameter are in the arena and the buffer. */
int p11mux_msg_get_mech(struct p11mux_msg *m, CK_MECHANISM **mech);
/* The slot array and its mechanism arrays are in the arena. */
int p11mux_msg_get_slots(struct p11mux_msg *m, struct p11mux_slot **s, size_t *n);

/* Whether the mechanism's parameter can travel: none, a known pointer-free parameter
 * (IVs, AES-CTR) or one the codec encodes field by field (RSA-PSS, RSA-OAEP). Returns
 * CKR_OK or CKR_MECHANISM_PARAM_INVALID. */
CK_RV p11mux_mech_param_ok(const CK_MECHANISM *mech);
/* Whether a key of type kt can serve the mechanism: 0 when the mechanism belongs to a family
 * (RSA, EC, EdDSA, DES, DES3, AES) whose key type kt is not; 1 otherwise, unknown mechanisms
 * included (the device decides). */
int p11mux_mech_key_ok(CK_MECHANISM_TYPE mech, CK_KEY_TYPE kt);
/* Whether PKCS#11's mechanism table gives the mechanism single-part operations only (raw RSA,
 * RSA-OAEP, RSA-PSS without a hash, ECDSA without a hash, EdDSA): its C_*Update and
 * C_*Final are not offered. */
int p11mux_mech_single_part(CK_MECHANISM_TYPE mech);
/* Whether attribute values of this type are CK_ULONGs (sent as u64). */
int p11mux_attr_is_ulong(CK_ATTRIBUTE_TYPE type);
/* A PKCS#11 blank-padded field of n bytes as a C string in dst (n + 1 bytes), trailing blanks
 * dropped. */
void p11mux_field(char *dst, const unsigned char *src, size_t n);
/* The reverse: s copied into a blank-padded field of n bytes (cut at n). */
void p11mux_pad(unsigned char *dst, size_t n, const char *s);
/* Wipes n bytes at p (a signature, a plaintext, a key's value), then frees it; NULL is fine. */
void p11mux_free_secret(void *p, size_t n);

#endif
