/* Sessions live in the shim only; the daemon keeps no per-session state. */
#include "module.h"

#include <stdlib.h>
#include <string.h>

struct session *
session_get_locked(CK_SESSION_HANDLE h)
{
	if (shim.sessions == NULL)
		return NULL;
	return p11mux_hmap_get(shim.sessions, h);
}

void
op_reset(struct op *op)
{
	free(op->param); /* with the OAEP label copied after the parameter */
	if (op->data != NULL) {
		explicit_bzero(op->data, op->cap);
		free(op->data);
	}
	if (op->result != NULL) {
		explicit_bzero(op->result, op->rlen);
		free(op->result);
	}
	memset(op, 0, sizeof(*op));
}

/* mech's OAEP parameter, or NULL. Of the parameters the shim accepts, only OAEP's holds a
 * pointer, to the label (PSS's and the IVs' hold none). */
static const CK_RSA_PKCS_OAEP_PARAMS *
oaep_params(const CK_MECHANISM *mech)
{
	if (mech->mechanism != CKM_RSA_PKCS_OAEP || mech->pParameter == NULL ||
	    mech->ulParameterLen != sizeof(CK_RSA_PKCS_OAEP_PARAMS))
		return NULL;
	return mech->pParameter;
}

CK_RV
op_set_mech(struct op *op, const CK_MECHANISM *mech)
{
	const CK_RSA_PKCS_OAEP_PARAMS *oaep = oaep_params(mech);
	CK_RSA_PKCS_OAEP_PARAMS *copy;
	size_t label = 0;

	op->mech = *mech;
	op->mech.pParameter = NULL;
	op->param = NULL;
	if (oaep != NULL && oaep->pSourceData != NULL) {
		if (oaep->ulSourceDataLen > P11MUX_DATA_MAX)
			return CKR_MECHANISM_PARAM_INVALID;
		label = oaep->ulSourceDataLen;
	}
	if (mech->pParameter != NULL && mech->ulParameterLen > 0) {
		/* The application may free the parameter, and the label it points to, as soon
		 * as C_*Init returns: keep both, the label right after the structure. */
		if ((op->param = malloc(mech->ulParameterLen + label)) == NULL)
			return CKR_HOST_MEMORY;
		memcpy(op->param, mech->pParameter, mech->ulParameterLen);
	}
	if (oaep != NULL) {
		copy = (CK_RSA_PKCS_OAEP_PARAMS *)(void *)op->param;
		if (label > 0)
			memcpy(op->param + mech->ulParameterLen, oaep->pSourceData, label);
		copy->pSourceData = label > 0 ? op->param + mech->ulParameterLen : NULL;
	}
	op->mech.pParameter = op->param;
	return CKR_OK;
}

CK_RV
op_append(struct op *op, const void *p, size_t len)
{
	size_t ncap;
	uint8_t *nd;

	if (len > P11MUX_DATA_MAX || op->len > P11MUX_DATA_MAX - len)
		return CKR_DATA_LEN_RANGE;
	if (op->len + len > op->cap) {
		ncap = op->cap ? op->cap : 256;
		while (ncap < op->len + len)
			ncap *= 2;
		if ((nd = malloc(ncap)) == NULL)
			return CKR_HOST_MEMORY;
		if (op->data != NULL) {
			memcpy(nd, op->data, op->len);
			explicit_bzero(op->data, op->cap);
			free(op->data);
		}
		op->data = nd;
		op->cap = ncap;
	}
	if (len > 0)
		memcpy(op->data + op->len, p, len);
	op->len += len;
	op->multipart = 1;
	return CKR_OK;
}

void
session_free(struct session *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < OP_COUNT; i++)
		op_reset(&s->ops[i]);
	free(s->found);
	free(s);
}
