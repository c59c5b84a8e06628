#include "backend.h"
#include "log.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct backend *
backend_get(struct backend **list, const char *path, struct p11mux_err *e)
{
	CK_C_INITIALIZE_ARGS args;
	CK_C_GetFunctionList getfl;
	struct backend *b;
	CK_RV rv;

	for (b = *list; b != NULL; b = b->next)
		if (strcmp(b->path, path) == 0)
			return b;
	if ((b = calloc(1, sizeof(*b))) == NULL || (b->path = strdup(path)) == NULL) {
		p11mux_err_set(e, "out of memory");
		goto fail;
	}
	if ((b->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		p11mux_err_set(e, "cannot load backend module %s: %s", path, dlerror());
		goto fail;
	}
	if ((getfl = (CK_C_GetFunctionList)dlsym(b->dl, "C_GetFunctionList")) == NULL) {
		p11mux_err_set(e, "%s is not a PKCS#11 module (no C_GetFunctionList)", path);
		goto fail;
	}
	if ((rv = getfl(&b->f)) != CKR_OK) {
		p11mux_err_set(e, "%s: C_GetFunctionList: %s", path, p11mux_rv_name(rv));
		goto fail;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = b->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p11mux_err_set(e, "%s: C_Initialize: %s", path, p11mux_rv_name(rv));
		goto fail;
	}
	b->next = *list;
	*list = b;
	return b;
fail:
	if (b != NULL) {
		if (b->dl != NULL)
			dlclose(b->dl);
		free(b->path);
		free(b);
	}
	return NULL;
}

void
backend_free_all(struct backend **list)
{
	struct backend *b, *next;

	for (b = *list; b != NULL; b = next) {
		next = b->next;
		b->f->C_Finalize(NULL);
		/* Not dlclose()d: some modules (OpenSC among them) leave atexit handlers or
		 * threads behind that must find their code still mapped. */
		free(b->path);
		free(b);
	}
	*list = NULL;
}
