/*
 * Test helper: builds, encodes, decodes and walks the fields of any message by following the
 * signature letters of the call table, so that the tests and the fuzz target cover every call
 * without one hand-written encoder per call. Values come from a seeded generator: the same seed
 * gives the same message on every run.
 */
#ifndef P11MUX_TEST_SIGCODEC_H
#define P11MUX_TEST_SIGCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* splitmix64: small, deterministic, good enough to vary test data. */
struct sc_rng {
	uint64_t s;
};

uint64_t sc_rand(struct sc_rng *r);
/* A value in [0, n); n must be > 0. */
uint64_t sc_below(struct sc_rng *r, uint64_t n);
void sc_fill(struct sc_rng *r, void *p, size_t n);

/* What kind of parameter a generated mechanism carries; sc_gen() picks variant % SC_MECH_KINDS. */
enum sc_mech_kind {
	SC_MECH_NONE,        /* no parameter */
	SC_MECH_NONE_PTR,    /* a pointer with length 0: travels as "no parameter" */
	SC_MECH_PSS,         /* CKM_RSA_PKCS_PSS with CK_RSA_PKCS_PSS_PARAMS */
	SC_MECH_PSS_HASHED,  /* CKM_SHA*_RSA_PKCS_PSS */
	SC_MECH_OAEP_SOURCE, /* CKM_RSA_PKCS_OAEP with a label (source data) */
	SC_MECH_OAEP_PLAIN,  /* CKM_RSA_PKCS_OAEP without source data */
	SC_MECH_AES_CBC_IV,  /* CKM_AES_CBC with a 16-byte IV */
	SC_MECH_AES_CTR,     /* CKM_AES_CTR with CK_AES_CTR_PARAMS (pointer-free) */
	SC_MECH_KINDS
};

/* The value of one field. Generated values own their memory (see sc_fields_free); decoded ones
 * point into the message's arena and buffer and live until p11mux_msg_clear(). */
struct sc_field {
	char letter;
	CK_ULONG ul; /* u */
	const uint8_t *bytes;
	size_t len; /* y */
	CK_ULONG *ulongs;
	size_t n; /* U */
	CK_ATTRIBUTE *attrs;
	CK_RV *status; /* NULL: every attribute CKR_OK (only when generated) */
	size_t nattrs; /* A */
	CK_MECHANISM *mech;
	enum sc_mech_kind mech_kind; /* M (generated only) */
	struct p11mux_slot *slots;
	size_t nslots; /* P */
};

#define SC_MAX_FIELDS 8

struct sc_fields {
	struct sc_field f[SC_MAX_FIELDS];
	size_t n;
	void **mem; /* allocations of generated values */
	size_t nmem, capmem;
};

/* Fills out with values for every letter of sig; variant steers the choice of shapes (empty
 * lists, mechanism kind, ...) so that consecutive variants cover every shape. Returns 0, or -1
 * when out of memory. Free with sc_fields_free(). */
int sc_gen(struct sc_fields *out, const char *sig, uint64_t seed, unsigned variant);
void sc_fields_free(struct sc_fields *f);

/* Puts every field of f into m (begun as request or reply); returns the first error. */
int sc_encode(struct p11mux_msg *m, const struct sc_fields *f);
/* Gets every field the message's remaining signature names into out (out->n counts the ones
 * decoded); returns the first error. Nothing in out needs freeing. */
int sc_decode(struct p11mux_msg *m, struct sc_fields *out);
/* Reads every byte a decoded value points to (so a sanitizer sees any bad pointer) and returns
 * a checksum of them. */
uint64_t sc_touch(const struct sc_fields *f);

/* Whether two decoded field lists carry the same values (byte strings and parameters compared
 * by content, a value's absence distinguished from an empty value). 1 if so. */
int sc_equal(const struct sc_fields *a, const struct sc_fields *b);

/* Whether the codec sends this mechanism's parameter as an RSA-PSS structure. */
int sc_mech_is_pss(CK_MECHANISM_TYPE t);

#endif
