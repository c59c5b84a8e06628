#include "device.h"
#include "log.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

/* --- reading objects --- */

static const CK_ATTRIBUTE_TYPE attrs_common[] = {
        CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE,
};
static const CK_ATTRIBUTE_TYPE attrs_cert[] = {
        CKA_CERTIFICATE_TYPE,
        CKA_TRUSTED,
        CKA_CERTIFICATE_CATEGORY,
        CKA_CHECK_VALUE,
        CKA_START_DATE,
        CKA_END_DATE,
        CKA_SUBJECT,
        CKA_ID,
        CKA_ISSUER,
        CKA_SERIAL_NUMBER,
        CKA_VALUE,
        CKA_URL,
        CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
        CKA_HASH_OF_ISSUER_PUBLIC_KEY,
        CKA_JAVA_MIDP_SECURITY_DOMAIN,
        CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_key[] = {
        CKA_KEY_TYPE, CKA_ID,    CKA_START_DATE,        CKA_END_DATE,
        CKA_DERIVE,   CKA_LOCAL, CKA_KEY_GEN_MECHANISM,
};
static const CK_ATTRIBUTE_TYPE attrs_public[] = {
        CKA_SUBJECT, CKA_ENCRYPT, CKA_VERIFY,          CKA_VERIFY_RECOVER,
        CKA_WRAP,    CKA_TRUSTED, CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_private[] = {
        CKA_SUBJECT,
        CKA_SENSITIVE,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_SIGN_RECOVER,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_ALWAYS_AUTHENTICATE,
        CKA_PUBLIC_KEY_INFO,
};
static const CK_ATTRIBUTE_TYPE attrs_secret[] = {
        CKA_SENSITIVE,
        CKA_ENCRYPT,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_VERIFY,
        CKA_WRAP,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_CHECK_VALUE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_TRUSTED,
        CKA_VALUE_LEN,
        CKA_VALUE,
};
static const CK_ATTRIBUTE_TYPE attrs_rsa[] = {CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT};
static const CK_ATTRIBUTE_TYPE attrs_rsa_private[] = {
        CKA_PRIVATE_EXPONENT, CKA_PRIME_1,    CKA_PRIME_2,
        CKA_EXPONENT_1,       CKA_EXPONENT_2, CKA_COEFFICIENT,
};
static const CK_ATTRIBUTE_TYPE attrs_ec[] = {CKA_EC_PARAMS, CKA_EC_POINT};
static const CK_ATTRIBUTE_TYPE attrs_ec_private[] = {CKA_VALUE};
static const CK_ATTRIBUTE_TYPE attrs_data[] = {CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE};

#define ADD(list)                                                                                  \
	do {                                                                                       \
		for (size_t k_ = 0; k_ < sizeof(list) / sizeof(list[0]) && n < max; k_++)          \
			types[n++] = list[k_];                                                     \
	} while (0)

/* The attribute types worth reading for an object of this class and key type. */
static size_t
attr_list(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, CK_ATTRIBUTE_TYPE *types, size_t max)
{
	size_t n = 0;

	ADD(attrs_common);
	switch (cls) {
	case CKO_CERTIFICATE:
		ADD(attrs_cert);
		break;
	case CKO_PUBLIC_KEY:
	case CKO_PRIVATE_KEY:
	case CKO_SECRET_KEY:
		ADD(attrs_key);
		if (cls == CKO_PUBLIC_KEY)
			ADD(attrs_public);
		else if (cls == CKO_PRIVATE_KEY)
			ADD(attrs_private);
		else
			ADD(attrs_secret);
		if (kt == CKK_RSA) {
			ADD(attrs_rsa);
			if (cls == CKO_PRIVATE_KEY)
				ADD(attrs_rsa_private);
		} else if (kt == CKK_EC) {
			ADD(attrs_ec);
			if (cls == CKO_PRIVATE_KEY)
				ADD(attrs_ec_private);
		}
		break;
	case CKO_DATA:
		ADD(attrs_data);
		break;
	default:
		break;
	}
	return n;
}

/*
 * Reads the listed attributes of h. One call asks every length, one more fetches every
 * value; attributes that came back unavailable are asked alone, to tell a sensitive one
 * (kept, marked CKR_ATTRIBUTE_SENSITIVE) from one the object lacks (dropped).
 */
static CK_RV
read_attrs(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
           const CK_ATTRIBUTE_TYPE *types, size_t ntypes, struct device_object *o)
{
	CK_ATTRIBUTE *t = NULL, one;
	size_t i, n = 0;
	CK_RV rv;

	if ((t = calloc(ntypes, sizeof(*t))) == NULL ||
	    (o->attrs = calloc(ntypes, sizeof(*o->attrs))) == NULL ||
	    (o->status = calloc(ntypes, sizeof(*o->status))) == NULL) {
		free(t);
		return CKR_HOST_MEMORY;
	}
	for (i = 0; i < ntypes; i++)
		t[i].type = types[i];
	rv = f->C_GetAttributeValue(s, h, t, ntypes);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_SENSITIVE && rv != CKR_ATTRIBUTE_TYPE_INVALID) {
		free(t);
		return rv;
	}
	for (i = 0; i < ntypes; i++) {
		/* A value the helper's frame could not carry (a client can make a session object
		 * with a huge one): left out, as if the object lacked it. */
		if (t[i].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
		    t[i].ulValueLen > DEVICE_ATTR_MAX) {
			log_warn("object %lu: attribute 0x%lx of %lu bytes left out (more than %u)",
			         h, types[i], t[i].ulValueLen, DEVICE_ATTR_MAX);
			continue;
		}
		if (t[i].ulValueLen == CK_UNAVAILABLE_INFORMATION) {
			one.type = types[i];
			one.pValue = NULL;
			one.ulValueLen = 0;
			rv = f->C_GetAttributeValue(s, h, &one, 1);
			if (rv == CKR_ATTRIBUTE_SENSITIVE) {
				o->attrs[n].type = types[i];
				o->status[n++] = CKR_ATTRIBUTE_SENSITIVE;
			}
			continue;
		}
		o->attrs[n].type = types[i];
		o->attrs[n].ulValueLen = t[i].ulValueLen;
		if ((o->attrs[n].pValue = malloc(t[i].ulValueLen ? t[i].ulValueLen : 1)) == NULL) {
			free(t);
			o->n = n;
			return CKR_HOST_MEMORY;
		}
		o->status[n] = CKR_OK;
		n++;
	}
	o->n = n;
	free(t);
	/* Second pass: the values, straight into the object's buffers. */
	for (i = 0; i < n; i++) {
		if (o->status[i] != CKR_OK)
			continue;
		rv = f->C_GetAttributeValue(s, h, &o->attrs[i], 1);
		if (rv != CKR_OK)
			return rv;
	}
	return CKR_OK;
}

void
device_object_free(struct device_object *o)
{
	size_t i;

	for (i = 0; o->attrs != NULL && i < o->n; i++)
		free(o->attrs[i].pValue);
	free(o->attrs);
	free(o->status);
	memset(o, 0, sizeof(*o));
}

CK_RV
device_read_object(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                   struct device_object *o)
{
	CK_ATTRIBUTE_TYPE types[64];
	CK_ATTRIBUTE head[2];
	size_t ntypes;

	memset(o, 0, sizeof(*o));
	o->cls = (CK_ULONG)-1;
	o->ktype = (CK_ULONG)-1;
	head[0].type = CKA_CLASS;
	head[0].pValue = &o->cls;
	head[0].ulValueLen = sizeof(o->cls);
	head[1].type = CKA_KEY_TYPE;
	head[1].pValue = &o->ktype;
	head[1].ulValueLen = sizeof(o->ktype);
	f->C_GetAttributeValue(s, h, head, 2);
	if (head[1].ulValueLen != sizeof(o->ktype))
		o->ktype = (CK_ULONG)-1;
	ntypes = attr_list(o->cls, o->ktype, types, 64);
	return read_attrs(f, s, h, types, ntypes, o);
}

/* --- operations --- */

static CK_RV
op_init(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const struct device_op *a)
{
	switch (a->call) {
	case P11MUX_CALL_SIGN:
		return f->C_SignInit(s, a->mech, a->key);
	case P11MUX_CALL_VERIFY:
		return f->C_VerifyInit(s, a->mech, a->key);
	case P11MUX_CALL_ENCRYPT:
		return f->C_EncryptInit(s, a->mech, a->key);
	case P11MUX_CALL_DECRYPT:
		return f->C_DecryptInit(s, a->mech, a->key);
	case P11MUX_CALL_DIGEST:
		return f->C_DigestInit(s, a->mech);
	default:
		return CKR_FUNCTION_NOT_SUPPORTED;
	}
}

static CK_RV
op_single(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const struct device_op *a, uint8_t *buf,
          CK_ULONG *len)
{
	CK_BYTE_PTR in = (CK_BYTE_PTR)a->in;

	switch (a->call) {
	case P11MUX_CALL_SIGN:
		return f->C_Sign(s, in, a->inlen, buf, len);
	case P11MUX_CALL_ENCRYPT:
		return f->C_Encrypt(s, in, a->inlen, buf, len);
	case P11MUX_CALL_DECRYPT:
		return f->C_Decrypt(s, in, a->inlen, buf, len);
	default:
		return f->C_Digest(s, in, a->inlen, buf, len);
	}
}

CK_RV
device_op(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const struct device_op *a, uint8_t **out,
          size_t *outlen)
{
	size_t cap = a->inlen + 4096;
	uint8_t *buf = NULL, *nb;
	CK_ULONG len = 0;
	CK_RV rv;
	int tries;

	*out = NULL;
	*outlen = 0;
	if ((rv = op_init(f, s, a)) != CKR_OK)
		return rv;
	if (a->call == P11MUX_CALL_VERIFY)
		return f->C_Verify(s, (CK_BYTE_PTR)a->in, a->inlen, (CK_BYTE_PTR)a->sig, a->siglen);
	/* Big enough for any signature or RSA block; a symmetric mechanism that needs more
	 * says how much, and its operation stays active for the second call. */
	for (tries = 0; tries < 2; tries++) {
		if ((nb = realloc(buf, cap)) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		buf = nb;
		len = cap;
		rv = op_single(f, s, a, buf, &len);
		if (rv != CKR_BUFFER_TOO_SMALL || len <= cap || len > P11MUX_FRAME_MAX)
			break;
		cap = len;
	}
	if (rv == CKR_BUFFER_TOO_SMALL)
		rv = CKR_DATA_LEN_RANGE;
	if (rv == CKR_OK) {
		*out = buf;
		*outlen = len;
		buf = NULL;
	}
	free(buf);
	return rv;
}

int
device_session_lost(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
	case CKR_SIGNATURE_INVALID:
	case CKR_SIGNATURE_LEN_RANGE:
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_SIZE_RANGE:
		return 0;
	default:
		/* An error that may leave an operation active, or a session gone. */
		return 1;
	}
}
