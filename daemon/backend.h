/* Backend PKCS#11 modules (opensc-pkcs11.so, libsofthsm2.so, ...), each loaded once. */
#ifndef P11MUXD_BACKEND_H
#define P11MUXD_BACKEND_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

#include "err.h"

struct backend {
	struct backend *next;
	char *path;
	void *dl;
	CK_FUNCTION_LIST *f;
};

/* The module at path from *list, loading and initialising it (OS locking) when it is not
 * there yet. NULL with a message in e on failure. The list owns the backends. */
struct backend *backend_get(struct backend **list, const char *path, struct p11mux_err *e);
/* Finalises and unloads every module of the list. */
void backend_free_all(struct backend **list);

#endif
