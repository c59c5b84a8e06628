/* Unit tests of the shim's handling of what an application hands it: C_Initialize's parameter
 * string (module/params.c) and the copies of mechanism parameters an operation keeps
 * (module/session.c). Under ASan, a copy that still points into the application's memory
 * shows up as a use after free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "module.h"

/* What session.c and params.c use of the rest of the shim. */
struct shim shim;

void
shim_debug(const char *fmt, ...)
{
	(void)fmt;
}

/* params_copy() of s: CKR_OK and the value of key (NULL when absent) in *value. */
static CK_RV
parse(const void *s, const char *key, char **value)
{
	char *params = NULL;
	CK_RV rv = params_copy(s, &params);

	*value = NULL;
	if (rv == CKR_OK) {
		*value = params_get(params, key);
		free(params);
	}
	return rv;
}

static void
value_is(const char *s, const char *key, const char *want)
{
	char *v;

	assert_int_equal(parse(s, key, &v), CKR_OK);
	if (want == NULL)
		assert_null(v);
	else
		assert_string_equal(v, want);
	free(v);
}

static void
refused(const void *s)
{
	char *v;

	assert_int_equal(parse(s, "socket", &v), CKR_ARGUMENTS_BAD);
	assert_null(v);
}

static void
params_values(void **state)
{
	(void)state;
	value_is("socket=/run/p11mux/p11mux.sock", "socket", "/run/p11mux/p11mux.sock");
	value_is(" socket=\"/a b\"\treconnect_ms=5\n", "socket", "/a b");
	value_is(" socket=\"/a b\"\treconnect_ms=5\n", "reconnect_ms", "5");
	value_is("reconnect_ms=1;socket='/x',other=2", "socket", "/x");
	value_is("socket={/x y} a=[1 2] b=<3> c=(4)", "socket", "/x y");
	value_is("socket={/x y} a=[1 2] b=<3> c=(4)", "a", "1 2");
	value_is("socket=/a\\ b", "socket", "/a b");
	value_is("socket=\"a\\\"b\"", "socket", "a\"b");
	value_is("socket=", "socket", "");
	value_is("socket=1 socket=2", "socket", "1");
	value_is("sock=/x xsocket=/y", "socket", NULL);
	value_is("", "socket", NULL);
	value_is(" \t\n", "socket", NULL);
}

static void
params_not_key_value(void **state)
{
	(void)state;
	refused("socket");
	refused("=x");
	refused("socket=/x stray");
	refused("socket=\"/x");
	refused("socket=\"/x\"y");
	refused("socket=/x\\");
	refused("so*ket=/x");
	refused("\x01\x02\x03");
	refused("socket=/x\x7f");
	refused("socket=/x\x1b[2J");
}

/* The bound: SHIM_PARAMS_MAX bytes with the NUL, wherever the string starts in a page. */
static void
params_bound(void **state)
{
	char *s = malloc(SHIM_PARAMS_MAX + 1), *v;

	(void)state;
	assert_non_null(s);
	memcpy(s, "k=", 2);
	memset(s + 2, 'a', SHIM_PARAMS_MAX - 3);
	s[SHIM_PARAMS_MAX - 1] = '\0';
	assert_int_equal(parse(s, "k", &v), CKR_OK);
	assert_int_equal(strlen(v), SHIM_PARAMS_MAX - 3);
	free(v);
	s[SHIM_PARAMS_MAX - 1] = 'a';
	s[SHIM_PARAMS_MAX] = '\0';
	refused(s);
	free(s);
}

/* Pointers that are not strings: CKR_ARGUMENTS_BAD, not a fault. */
static void
params_bad_pointers(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)state;
	assert_true(p != MAP_FAILED);
	assert_int_equal(mprotect(p + page, page, PROT_NONE), 0);
	refused((void *)1);
	refused((void *)(uintptr_t)-8);
	refused(p + page);
	memset(p, 'a', page);
	refused(p);
	/* A string whose NUL is the last readable byte is read whole. */
	memcpy(p + page - 5, "a=bc", 5);
	value_is(p + page - 5, "a", "bc");
	munmap(p, 2 * page);
}

/* Parameters without pointers are copied as they are. */
static void
mech_copies(void **state)
{
	CK_RSA_PKCS_PSS_PARAMS *pss = malloc(sizeof(*pss));
	CK_MECHANISM m = {CKM_SHA256_RSA_PKCS_PSS, pss, sizeof(*pss)};
	CK_RSA_PKCS_PSS_PARAMS *copy;
	struct op op = {0};

	(void)state;
	assert_non_null(pss);
	*pss = (CK_RSA_PKCS_PSS_PARAMS){CKM_SHA256, CKG_MGF1_SHA256, 32};
	assert_int_equal(op_set_mech(&op, &m), CKR_OK);
	free(pss);
	copy = op.mech.pParameter;
	assert_int_equal(op.mech.mechanism, CKM_SHA256_RSA_PKCS_PSS);
	assert_int_equal(op.mech.ulParameterLen, sizeof(*copy));
	assert_int_equal(copy->hashAlg, CKM_SHA256);
	assert_int_equal(copy->mgf, CKG_MGF1_SHA256);
	assert_int_equal(copy->sLen, 32);
	op_reset(&op);

	m = (CK_MECHANISM){CKM_SHA256_RSA_PKCS, NULL, 0};
	assert_int_equal(op_set_mech(&op, &m), CKR_OK);
	assert_null(op.mech.pParameter);
	op_reset(&op);
}

/*
 * Issue 13: op_set_mech() copied CK_RSA_PKCS_OAEP_PARAMS but not the label its pSourceData
 * points to, so the request that C_Encrypt / C_Decrypt later sends read the application's
 * label after C_EncryptInit / C_DecryptInit had returned, when the application may have
 * freed it (a use after free under ASan here).
 */
static void
bug_oaep_label_not_copied(void **state)
{
	const char text[] = "an OAEP label";
	CK_RSA_PKCS_OAEP_PARAMS *params = malloc(sizeof(*params)), *copy;
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, params, sizeof(*params)};
	char *label = malloc(sizeof(text) - 1);
	struct op op = {0};

	(void)state;
	assert_non_null(params);
	assert_non_null(label);
	memcpy(label, text, sizeof(text) - 1);
	*params = (CK_RSA_PKCS_OAEP_PARAMS){CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, label,
	                                    sizeof(text) - 1};
	assert_int_equal(op_set_mech(&op, &m), CKR_OK);
	memset(label, 'x', sizeof(text) - 1);
	free(label);
	free(params);
	copy = op.mech.pParameter;
	assert_int_equal(copy->hashAlg, CKM_SHA256);
	assert_int_equal(copy->source, CKZ_DATA_SPECIFIED);
	assert_int_equal(copy->ulSourceDataLen, sizeof(text) - 1);
	assert_memory_equal(copy->pSourceData, text, sizeof(text) - 1);
	op_reset(&op); /* LeakSanitizer: the label goes with the parameter */
	assert_null(op.param);
}

/* An empty label keeps no pointer either; one too long to send is refused. */
static void
bug_oaep_label_edges(void **state)
{
	char byte = 'l';
	CK_RSA_PKCS_OAEP_PARAMS params = {CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, &byte, 0};
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &params, sizeof(params)};
	struct op op = {0};

	(void)state;
	assert_int_equal(op_set_mech(&op, &m), CKR_OK);
	assert_null(((CK_RSA_PKCS_OAEP_PARAMS *)op.mech.pParameter)->pSourceData);
	op_reset(&op);
	params.ulSourceDataLen = (CK_ULONG)P11MUX_DATA_MAX + 1;
	assert_int_equal(op_set_mech(&op, &m), CKR_MECHANISM_PARAM_INVALID);
	assert_null(op.param);
	op_reset(&op);
}

/* Issue 13: C_Initialize read pReserved as a string, so (void *)1 crashed the application. */
static void
bug_reserved_not_a_string(void **state)
{
	(void)state;
	refused((void *)1);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(params_values), cmocka_unit_test(params_not_key_value),
	        cmocka_unit_test(params_bound),  cmocka_unit_test(params_bad_pointers),
	        cmocka_unit_test(mech_copies),
	};
	const struct CMUnitTest known_bugs[] = {
	        cmocka_unit_test(bug_oaep_label_not_copied),
	        cmocka_unit_test(bug_oaep_label_edges),
	        cmocka_unit_test(bug_reserved_not_a_string),
	};

	if (argc > 1 && strcmp(argv[1], "known-bugs") == 0)
		return cmocka_run_group_tests_name("shim_known_bugs", known_bugs, NULL, NULL);
	return cmocka_run_group_tests_name("shim", tests, NULL, NULL);
}
