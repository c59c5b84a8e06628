/* p11muxd -t and p11muxd --list-tokens: a configuration checked and its tokens listed,
 * without starting the daemon. */
#include "inspect.h"
#include "pin.h"
#include "pool.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether a member is named by a plain string: the pool's module finds it. */
static int
plain_member(const struct member_config *mc)
{
	return mc->module == NULL && mc->env == NULL;
}

/* Whether the pool's own module is used: members absent (every token), or one plain. */
static int
uses_pool_module(const struct pool_config *pc)
{
	size_t k;

	if (pc->members == NULL)
		return 1;
	for (k = 0; k < pc->nmembers; k++)
		if (plain_member(&pc->members[k]))
			return 1;
	return 0;
}

/* --- -t --- */

/* Whether path loads as a PKCS#11 module. Nothing in it is called: C_Initialize would touch
 * the devices. It is not unloaded either (the process ends soon; some modules' constructors
 * leave handlers behind that need their code mapped). 0, or -1 with why. */
static int
module_loads(const char *path, char *why, size_t n)
{
	void *dl;

	if (access(path, F_OK) != 0) {
		snprintf(why, n, "%s", strerror(errno));
		return -1;
	}
	if ((dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(why, n, "cannot load: %s", dlerror());
		return -1;
	}
	if (dlsym(dl, "C_GetFunctionList") == NULL) {
		snprintf(why, n, "cannot load: not a PKCS#11 module (no C_GetFunctionList)");
		return -1;
	}
	return 0;
}

/* Checks one module key; prints the problem. 0 or -1. */
static int
check_module(const struct config *cfg, int line, const char *key, const char *path, int dflt)
{
	char why[512];

	if (module_loads(path, why, sizeof(why)) == 0)
		return 0;
	fprintf(stderr, "%s:%d: %s: %s%s: %s\n", cfg->path, line, key, path,
	        dflt ? " (the default; set module)" : "", why);
	return -1;
}

/* Every pool's module (when a member uses it) and every member's own module. */
static int
check_modules(const struct config *cfg)
{
	const struct pool_config *pc;
	char key[96];
	size_t i, k;
	int r = 0;

	for (i = 0; i < cfg->npools; i++) {
		pc = &cfg->pools[i];
		snprintf(key, sizeof(key), "pools.[%zu].module", i);
		if (uses_pool_module(pc) &&
		    check_module(cfg, pc->module_line != 0 ? pc->module_line : pc->line, key,
		                 pc->module, pc->module_line == 0) != 0)
			r = -1;
		for (k = 0; k < pc->nmembers; k++) {
			if (pc->members[k].module == NULL)
				continue;
			snprintf(key, sizeof(key), "pools.[%zu].members.[%zu].module", i, k);
			if (check_module(cfg, pc->members[k].line, key, pc->members[k].module, 0) !=
			    0)
				r = -1;
		}
	}
	return r;
}

/* Every pool's pin file: there, a regular file, the daemon's user's alone. A credential is
 * skipped outside the service: only systemd sets $CREDENTIALS_DIRECTORY. */
static int
check_pins(const struct config *cfg)
{
	struct p11mux_err e = {""};
	const char *file;
	size_t i;
	int r = 0;

	for (i = 0; i < cfg->npools; i++) {
		file = cfg->pools[i].pin_file;
		if (strncmp(file, PIN_CREDENTIAL, strlen(PIN_CREDENTIAL)) == 0 &&
		    secure_getenv("CREDENTIALS_DIRECTORY") == NULL) {
			printf("%s: not checked ($CREDENTIALS_DIRECTORY is not set)\n", file);
			continue;
		}
		if (pin_check_file(file, &e) == 0)
			continue;
		fprintf(stderr, "%s:%d: pools.[%zu].pin_file: %s\n", cfg->path,
		        cfg->pools[i].pin_file_line, i, e.msg);
		r = -1;
	}
	return r;
}

int
inspect_check(const struct config *cfg)
{
	int r = check_modules(cfg);

	return check_pins(cfg) != 0 ? -1 : r;
}

/* --- --list-tokens --- */

/* A module and the environment its helper gets: one discovery helper each. */
struct source {
	const char *module;
	char *const *env; /* NULL-ended; NULL: none */
	int pool;         /* the pool's module, for its plain members */
};

static int
same_env(char *const *a, char *const *b)
{
	for (; a != NULL && b != NULL && *a != NULL && *b != NULL; a++, b++)
		if (strcmp(*a, *b) != 0)
			return 0;
	return (a == NULL || *a == NULL) && (b == NULL || *b == NULL);
}

/* Whether member mc is looked for through src. */
static int
member_in(const struct pool_config *pc, const struct member_config *mc, const struct source *src)
{
	if (plain_member(mc))
		return src->pool;
	return !src->pool &&
	       strcmp(mc->module != NULL ? mc->module : pc->module, src->module) == 0 &&
	       same_env(mc->env, src->env);
}

/* The pool's sources, in src (room for nmembers + 1); how many. */
static size_t
pool_sources(const struct pool_config *pc, struct source *src)
{
	size_t n = 0, k, j;

	if (uses_pool_module(pc))
		src[n++] = (struct source){pc->module, NULL, 1};
	for (k = 0; k < pc->nmembers; k++) {
		if (plain_member(&pc->members[k]))
			continue;
		for (j = 0; j < n && !member_in(pc, &pc->members[k], &src[j]); j++)
			;
		if (j == n) {
			src[n].module =
			        pc->members[k].module != NULL ? pc->members[k].module : pc->module;
			src[n].env = pc->members[k].env;
			src[n++].pool = 0;
		}
	}
	return n;
}

static void
print_flags(CK_FLAGS f)
{
	static const struct {
		CK_FLAGS flag;
		const char *name;
	} names[] = {
	        {CKF_TOKEN_INITIALIZED, "token initialized"},
	        {CKF_LOGIN_REQUIRED, "login required"},
	        {CKF_USER_PIN_INITIALIZED, "user PIN initialized"},
	        {CKF_PROTECTED_AUTHENTICATION_PATH, "PIN pad"},
	        {CKF_WRITE_PROTECTED, "write protected"},
	        {CKF_RNG, "RNG"},
	        {CKF_USER_PIN_COUNT_LOW, "USER PIN COUNT LOW"},
	        {CKF_USER_PIN_FINAL_TRY, "USER PIN FINAL TRY"},
	        {CKF_USER_PIN_LOCKED, "USER PIN LOCKED"},
	        {CKF_USER_PIN_TO_BE_CHANGED, "user PIN to be changed"},
	        {CKF_SO_PIN_COUNT_LOW, "SO PIN count low"},
	        {CKF_SO_PIN_FINAL_TRY, "SO PIN final try"},
	        {CKF_SO_PIN_LOCKED, "SO PIN locked"},
	};
	size_t i;
	int first = 1;

	printf("      flags:");
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (f & names[i].flag) {
			printf("%s %s", first ? "" : ",", names[i].name);
			first = 0;
		}
	printf("%s\n", first ? " none" : "");
}

/* One token of src; marks the members it is in seen[]. */
static void
print_token(const struct pool_config *pc, const struct source *src, const struct p11mux_slot *s,
            unsigned char *seen)
{
	char label[33], serial[17], maker[33], model[17];
	int member = src->pool && pc->members == NULL;
	size_t k;

	p11mux_field(label, s->token.label, sizeof(s->token.label));
	p11mux_field(serial, s->token.serialNumber, sizeof(s->token.serialNumber));
	p11mux_field(maker, s->token.manufacturerID, sizeof(s->token.manufacturerID));
	p11mux_field(model, s->token.model, sizeof(s->token.model));
	for (k = 0; k < pc->nmembers; k++)
		if (member_in(pc, &pc->members[k], src) &&
		    (strcmp(pc->members[k].token, serial) == 0 ||
		     strcmp(pc->members[k].token, label) == 0))
			member = seen[k] = 1;
	printf("    slot %lu: \"%s\", serial %s, %s %s; %s\n", (unsigned long)s->id, label,
	       serial[0] ? serial : "-", maker, model, member ? "a member" : "not a member");
	print_flags(s->token.flags);
	if (s->token.flags &
	    (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED))
		printf("      the user PIN's retry counter is not intact: p11muxd will not try an "
		       "unconfirmed PIN on it (p11muxd(8), PIN RETRY COUNTERS)\n");
}

/* Lists what src shows. 0, or -1 after a message. */
static int
list_source(const struct pool_config *pc, const struct source *src, const char *exe,
            unsigned char *seen)
{
	struct p11mux_err e = {""};
	struct p11mux_slot *v = NULL;
	size_t n = 0, i;
	char *const *env;

	printf("  module %s", src->module);
	for (env = src->env; env != NULL && *env != NULL; env++)
		printf("%s%s", env == src->env ? " with " : " ", *env);
	printf("\n");
	fflush(stdout);
	if (pool_discover(exe, src->module, src->env, 0, pc->op_timeout_ms, &v, &n, &e) != 0) {
		fprintf(stderr, "p11muxd: %s\n", e.msg);
		printf("    (cannot list its tokens)\n");
		return -1;
	}
	if (n == 0)
		printf("    no token present\n");
	for (i = 0; i < n; i++)
		print_token(pc, src, &v[i], seen);
	free(v);
	return 0;
}

int
inspect_tokens(const struct config *cfg, const char *exe)
{
	struct source *src;
	unsigned char *seen;
	size_t i, j, k, n;
	int r = 0, listed;

	for (i = 0; i < cfg->npools; i++) {
		const struct pool_config *pc = &cfg->pools[i];

		src = calloc(pc->nmembers + 1, sizeof(*src));
		seen = calloc(pc->nmembers + 1, 1);
		if (src == NULL || seen == NULL) {
			fprintf(stderr, "p11muxd: out of memory\n");
			free(src);
			free(seen);
			return -1;
		}
		printf("%spool %zu \"%s\", slot %ld (%s:%d)\n", i ? "\n" : "", i,
		       pc->label != NULL ? pc->label : "(the members' label)", pc->slot_id,
		       cfg->path, pc->line);
		n = pool_sources(pc, src);
		for (j = 0, listed = 1; j < n; j++)
			if (list_source(pc, &src[j], exe, seen) != 0) {
				r = -1;
				listed = 0;
			}
		/* A member may be missing only from a listing that worked. */
		for (k = 0; k < pc->nmembers && listed; k++)
			if (!seen[k])
				printf("  member \"%s\" (line %d): not shown by its module\n",
				       pc->members[k].token, pc->members[k].line);
		free(src);
		free(seen);
	}
	return r;
}
