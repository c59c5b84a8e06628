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
	free(op->param);
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

CK_RV
op_set_mech(struct op *op, const CK_MECHANISM *mech)
{
	op->mech = *mech;
	op->param = NULL;
	if (mech->pParameter != NULL && mech->ulParameterLen > 0) {
		if ((op->param = malloc(mech->ulParameterLen)) == NULL)
			return CKR_HOST_MEMORY;
		memcpy(op->param, mech->pParameter, mech->ulParameterLen);
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
