/*
 * The calls into a backend module that a member's helper makes: reading an object's
 * attributes, and running one operation. Only helper processes load backend modules; the
 * daemon itself never calls one.
 */
#ifndef P11MUXD_DEVICE_H
#define P11MUXD_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

/* An object as the device describes it. */
/* The largest attribute value read from a device: a certificate chain fits many times, and
 * an object's values all fit a helper's frame. */
#define DEVICE_ATTR_MAX 65536u

struct device_object {
	CK_OBJECT_CLASS cls; /* (CK_ULONG)-1 when the device does not say */
	CK_KEY_TYPE ktype;   /* (CK_ULONG)-1 for objects that are not keys */
	CK_ATTRIBUTE *attrs; /* the attributes worth reading for the class, values malloc'ed */
	CK_RV *status;       /* CKR_OK, or CKR_ATTRIBUTE_SENSITIVE (then no value) */
	size_t n;
};

/* Reads object h on session s: class and key type, then every attribute worth reading for
 * them (one call for the lengths, one per value; an unavailable attribute is asked alone, to
 * tell a sensitive one from one the object lacks). CKR_OK, or the device's error. *o is to be
 * freed with device_object_free() either way. */
CK_RV device_read_object(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                         struct device_object *o);
void device_object_free(struct device_object *o);

/* One operation of the client protocol (P11MUX_CALL_SIGN, _VERIFY, _ENCRYPT, _DECRYPT,
 * _DIGEST) on the device's key handle. */
struct device_op {
	CK_ULONG call;
	CK_MECHANISM *mech;
	CK_ULONG key;
	const uint8_t *in, *sig; /* sig: VERIFY only */
	size_t inlen, siglen;
};

/* Runs a on session s: Init, then the single-part call. On CKR_OK *out is malloc'ed (NULL
 * for VERIFY). A result too large for the first buffer is asked for once more; an answer of
 * CKR_BUFFER_TOO_SMALL after that becomes CKR_DATA_LEN_RANGE. */
CK_RV device_op(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const struct device_op *a, uint8_t **out,
                size_t *outlen);
/* Whether, after rv, the session's state is unknown and it must be replaced. */
int device_session_lost(CK_RV rv);

#endif
