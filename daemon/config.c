#include "config.h"
#include "log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

/* Context for messages: the file, and where the message goes. */
struct ctx {
	const char *path;
	struct p11mux_err *e;
};

static int fail(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Writes "FILE:LINE: KEY: message" and returns -1. */
static int
fail(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
{
	char msg[512];
	const char *file = s != NULL && config_setting_source_file(s) != NULL
	                           ? config_setting_source_file(s)
	                           : x->path;
	unsigned line = s != NULL ? config_setting_source_line(s) : 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return p11mux_err_set(x->e, "%s:%u: %s: %s", file, line, key, msg);
}

/* The full key name of a setting inside a pool, e.g. "pools.[1].members". */
static void
pool_key(char *dst, size_t n, size_t idx, const char *name)
{
	int r;

	if (name != NULL)
		r = snprintf(dst, n, "pools.[%zu].%s", idx, name);
	else
		r = snprintf(dst, n, "pools.[%zu]", idx);
	(void)r; /* keys are short; a cut one still names the place */
}

static int
check_known(struct ctx *x, const config_setting_t *group, const char *const *known,
            const char *prefix)
{
	int i, j, n = config_setting_length(group);
	char key[128];

	for (i = 0; i < n; i++) {
		config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(s);

		for (j = 0; known[j] != NULL; j++)
			if (strcmp(name, known[j]) == 0)
				break;
		if (known[j] == NULL) {
			snprintf(key, sizeof(key), "%s%s", prefix, name);
			return fail(x, s, key, "unknown key (known keys: see p11mux.conf.example)");
		}
	}
	return 0;
}

/* A string setting; *out stays NULL when absent and optional. */
static int
get_string(struct ctx *x, const config_setting_t *parent, const char *name, const char *key,
           int required, char **out)
{
	config_setting_t *s = config_setting_get_member(parent, name);
	const char *v;

	if (s == NULL) {
		if (required)
			return fail(x, parent, key, "missing (required)");
		return 0;
	}
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return fail(x, s, key, "expected a string in double quotes");
	v = config_setting_get_string(s);
	if (*v == '\0')
		return fail(x, s, key, "must not be empty");
	if ((*out = strdup(v)) == NULL)
		return fail(x, s, key, "out of memory");
	return 0;
}

/* A list or array of non-empty strings. */
static int
get_strings(struct ctx *x, const config_setting_t *parent, const char *name, const char *key,
            char ***out, size_t *nout, const config_setting_t **where)
{
	config_setting_t *s = config_setting_get_member(parent, name), *e;
	char **v;
	int i, n;

	*where = s;
	if (s == NULL)
		return 0;
	if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
		return fail(x, s, key, "expected a list of strings, e.g. [ \"a\", \"b\" ]");
	n = config_setting_length(s);
	if ((v = calloc((size_t)n + 1, sizeof(*v))) == NULL)
		return fail(x, s, key, "out of memory");
	*out = v;
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING ||
		    *config_setting_get_string(e) == '\0')
			return fail(x, e, key, "element %d: expected a non-empty string", i + 1);
		if ((v[i] = strdup(config_setting_get_string(e))) == NULL)
			return fail(x, e, key, "out of memory");
		*nout = (size_t)i + 1;
	}
	return 0;
}

/* An unsigned setting within [min, max]; *out keeps its value when absent. */
static int
get_uint(struct ctx *x, const config_setting_t *parent, const char *name, const char *key,
         long long min, long long max, unsigned *out)
{
	config_setting_t *s = config_setting_get_member(parent, name);
	long long v;

	if (s == NULL)
		return 0;
	if (config_setting_type(s) == CONFIG_TYPE_INT)
		v = config_setting_get_int(s);
	else if (config_setting_type(s) == CONFIG_TYPE_INT64)
		v = config_setting_get_int64(s);
	else
		return fail(x, s, key, "expected a whole number");
	if (v < min || v > max)
		return fail(x, s, key, "must be between %lld and %lld", min, max);
	*out = (unsigned)v;
	return 0;
}

/* A whole-number key, its range, and where it goes in its struct. */
struct uint_key {
	const char *name;
	long long min, max;
	size_t offset;
};

/* The whole-number scheduling and health keys, and their ranges. */
static const struct uint_key uint_keys[] = {
        {"op_timeout_ms", 10, 3600000, offsetof(struct pool_config, op_timeout_ms)},
        {"max_attempts", 1, 64, offsetof(struct pool_config, max_attempts)},
        {"probe_interval_ms", 10, 3600000, offsetof(struct pool_config, probe_interval_ms)},
        {"probe_max_ms", 10, 3600000, offsetof(struct pool_config, probe_max_ms)},
        {"workers_per_member", 1, 64, offsetof(struct pool_config, workers_per_member)},
        {"pin_max_failures", 0, 1000, offsetof(struct pool_config, pin_max_failures)},
};

/* The connection limits and time-outs (top level only). */
static const struct uint_key limit_keys[] = {
        {"max_clients", 1, 1000000, offsetof(struct limits, max_clients)},
        {"max_clients_per_uid", 1, 1000000, offsetof(struct limits, max_clients_per_uid)},
        {"max_clients_per_pid", 1, 1000000, offsetof(struct limits, max_clients_per_pid)},
        {"hello_timeout_ms", 10, 3600000, offsetof(struct limits, hello_timeout_ms)},
        {"frame_timeout_ms", 10, 3600000, offsetof(struct limits, frame_timeout_ms)},
        {"write_timeout_ms", 10, 3600000, offsetof(struct limits, write_timeout_ms)},
        {"session_objects", 0, 100000, offsetof(struct limits, session_objects)},
        {"session_object_bytes", 0, 1073741824, offsetof(struct limits, session_object_bytes)},
        {"session_objects_per_uid", 0, 1000000, offsetof(struct limits, session_objects_per_uid)},
        {"session_object_bytes_per_uid", 0, 1073741824,
         offsetof(struct limits, session_object_bytes_per_uid)},
        {"session_objects_total", 0, 1000000, offsetof(struct limits, session_objects_total)},
};

/* The scheduling and health keys, at the top level or in a pool (prefix "" or
 * "pools.[N]."). */
static int
load_sched(struct ctx *x, const config_setting_t *g, const char *prefix, struct pool_config *p)
{
	config_setting_t *s;
	char key[96];
	const char *v;
	size_t i;

	snprintf(key, sizeof(key), "%sscheduler", prefix);
	if ((s = config_setting_get_member(g, "scheduler")) != NULL) {
		if (config_setting_type(s) != CONFIG_TYPE_STRING)
			return fail(x, s, key, "expected \"least-loaded\" or \"round-robin\"");
		v = config_setting_get_string(s);
		if (strcmp(v, "least-loaded") == 0)
			p->scheduler = 0;
		else if (strcmp(v, "round-robin") == 0)
			p->scheduler = 1;
		else
			return fail(x, s, key, "\"%s\" is not \"least-loaded\" or \"round-robin\"",
			            v);
	}
	for (i = 0; i < sizeof(uint_keys) / sizeof(uint_keys[0]); i++) {
		snprintf(key, sizeof(key), "%s%s", prefix, uint_keys[i].name);
		if (get_uint(x, g, uint_keys[i].name, key, uint_keys[i].min, uint_keys[i].max,
		             (unsigned *)((char *)p + uint_keys[i].offset)) != 0)
			return -1;
	}
	if (p->probe_max_ms < p->probe_interval_ms)
		p->probe_max_ms = p->probe_interval_ms;
	return 0;
}

/* A user's (group 0) or a group's (group 1) id by name; -1 when there is none. */
static long
id_of(const char *name, int group)
{
	struct passwd *pw;
	struct group *gr;

	if (group)
		return (gr = getgrnam(name)) != NULL ? (long)gr->gr_gid : -1;
	return (pw = getpwnam(name)) != NULL ? (long)pw->pw_uid : -1;
}

/* Resolves the user (group 0) or group names of key into *ids (uid_t and gid_t are the
 * same type). 0, or -1 with x's error. */
static int
load_ids(struct ctx *x, const config_setting_t *root, const char *key, int group, uid_t **ids,
         size_t *nids)
{
	const config_setting_t *where;
	char **names = NULL;
	size_t n = 0, i;
	long id;
	int r = -1;

	if (get_strings(x, root, key, key, &names, &n, &where) != 0)
		goto out;
	if ((*ids = calloc(n + 1, sizeof(uid_t))) == NULL) {
		fail(x, root, key, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((id = id_of(names[i], group)) < 0) {
			fail(x, where, key, "no such %s \"%s\"", group ? "group" : "user",
			     names[i]);
			goto out;
		}
		(*ids)[(*nids)++] = (uid_t)id;
	}
	r = 0;
out:
	for (i = 0; names != NULL && i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

/* Resolves the user and group names of the keys ukey and gkey. */
static int
load_users(struct ctx *x, const config_setting_t *root, const char *ukey, const char *gkey,
           uid_t **uids, size_t *nuids, gid_t **gids, size_t *ngids)
{
	_Static_assert(sizeof(uid_t) == sizeof(gid_t), "uid_t and gid_t differ");
	return load_ids(x, root, ukey, 0, uids, nuids) != 0 ||
	                       load_ids(x, root, gkey, 1, (uid_t **)gids, ngids) != 0
	               ? -1
	               : 0;
}

/* One element of members: "TOKEN", or { token = "TOKEN"; module = "..."; env = [...]; }. */
static int
load_member(struct ctx *x, const config_setting_t *e, const char *key, int n,
            struct member_config *mc)
{
	static const char *const known[] = {"token", "module", "env", NULL};
	const config_setting_t *where;
	char prefix[96], ktoken[112], kmodule[112], kenv[112];
	size_t i;

	mc->line = (int)config_setting_source_line(e);
	if (config_setting_type(e) == CONFIG_TYPE_STRING) {
		if (*config_setting_get_string(e) == '\0')
			return fail(x, e, key, "element %d: expected a non-empty string", n);
		if ((mc->token = strdup(config_setting_get_string(e))) == NULL)
			return fail(x, e, key, "out of memory");
		return 0;
	}
	if (!config_setting_is_group(e))
		return fail(x, e, key,
		            "element %d: expected a token (\"SERIAL\") or a group { token = ...; "
		            "module = ...; env = [ ... ]; }",
		            n);
	snprintf(prefix, sizeof(prefix), "%s.[%d].", key, n - 1);
	snprintf(ktoken, sizeof(ktoken), "%stoken", prefix);
	snprintf(kmodule, sizeof(kmodule), "%smodule", prefix);
	snprintf(kenv, sizeof(kenv), "%senv", prefix);
	if (check_known(x, e, known, prefix) != 0 ||
	    get_string(x, e, "token", ktoken, 1, &mc->token) != 0 ||
	    get_string(x, e, "module", kmodule, 0, &mc->module) != 0 ||
	    get_strings(x, e, "env", kenv, &mc->env, &mc->nenv, &where) != 0)
		return -1;
	for (i = 0; i < mc->nenv; i++)
		if (strchr(mc->env[i], '=') == NULL || mc->env[i][0] == '=')
			return fail(x, where, kenv, "\"%s\" is not NAME=VALUE", mc->env[i]);
	return 0;
}

/* members: a list of tokens; NULL when absent (every token present). */
static int
load_members(struct ctx *x, const config_setting_t *ps, const char *key, struct pool_config *p)
{
	const config_setting_t *s = config_setting_get_member(ps, "members");
	int i, n;

	if (s == NULL)
		return 0;
	if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
		return fail(x, s, key,
		            "expected a list of tokens, e.g. [ \"a\", \"b\" ], or with groups "
		            "( \"a\", { token = \"b\"; module = \"...\"; } )");
	if ((n = config_setting_length(s)) == 0)
		return fail(x, s, key, "empty; omit the key to use every token present");
	if ((p->members = calloc((size_t)n, sizeof(*p->members))) == NULL)
		return fail(x, s, key, "out of memory");
	for (i = 0; i < n; i++) {
		p->nmembers = (size_t)i + 1;
		if (load_member(x, config_setting_get_elem(s, (unsigned)i), key, i + 1,
		                &p->members[i]) != 0)
			return -1;
	}
	return 0;
}

/* The line of group's member name, else dflt. */
static int
setting_line(const config_setting_t *group, const char *name, int dflt)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	return s != NULL ? (int)config_setting_source_line(s) : dflt;
}

static int
load_pool(struct ctx *x, const config_setting_t *ps, size_t idx, struct pool_config *p,
          const struct pool_config *defaults)
{
	static const char *const known[] = {"label",
	                                    "module",
	                                    "members",
	                                    "pin_file",
	                                    "slot_id",
	                                    "scheduler",
	                                    "op_timeout_ms",
	                                    "max_attempts",
	                                    "probe_interval_ms",
	                                    "probe_max_ms",
	                                    "workers_per_member",
	                                    "pin_max_failures",
	                                    NULL};
	const config_setting_t *s;
	char key[64], prefix[80];
	long long sid;

	*p = *defaults;
	p->slot_id = -1;
	p->line = (int)config_setting_source_line(ps);
	pool_key(key, sizeof(key), idx, NULL);
	if (!config_setting_is_group(ps))
		return fail(x, ps, key, "expected a group { label = ...; members = [...]; ... }");
	snprintf(prefix, sizeof(prefix), "%s.", key);
	if (check_known(x, ps, known, prefix) != 0)
		return -1;
	pool_key(key, sizeof(key), idx, "label");
	if (get_string(x, ps, "label", key, 0, &p->label) != 0)
		return -1;
	if (p->label != NULL && strchr(p->label, ':') != NULL)
		return fail(x, config_setting_get_member(ps, "label"), key,
		            "a token label must not contain ':' (NSS uses it to separate the token "
		            "from the certificate nickname)");
	if (p->label != NULL && strlen(p->label) > 32)
		return fail(x, config_setting_get_member(ps, "label"), key,
		            "longer than the 32 bytes a PKCS#11 token label has");
	pool_key(key, sizeof(key), idx, "module");
	if (get_string(x, ps, "module", key, 0, &p->module) != 0)
		return -1;
	if (p->module == NULL && (p->module = strdup(CONFIG_DEFAULT_MODULE)) == NULL)
		return fail(x, ps, key, "out of memory");
	p->module_line = setting_line(ps, "module", 0);
	pool_key(key, sizeof(key), idx, "members");
	if (load_members(x, ps, key, p) != 0)
		return -1;
	pool_key(key, sizeof(key), idx, "pin_file");
	if (get_string(x, ps, "pin_file", key, 1, &p->pin_file) != 0)
		return -1;
	p->pin_file_line = setting_line(ps, "pin_file", p->line);
	if (load_sched(x, ps, prefix, p) != 0)
		return -1;
	if ((s = config_setting_get_member(ps, "slot_id")) != NULL) {
		pool_key(key, sizeof(key), idx, "slot_id");
		if (config_setting_type(s) != CONFIG_TYPE_INT &&
		    config_setting_type(s) != CONFIG_TYPE_INT64)
			return fail(x, s, key, "expected a whole number");
		sid = config_setting_get_int64(s);
		if (config_setting_type(s) == CONFIG_TYPE_INT)
			sid = config_setting_get_int(s);
		if (sid < 0 || sid > 0x7fffffff)
			return fail(x, s, key, "must be between 0 and 2147483647");
		p->slot_id = (long)sid;
	}
	return 0;
}

static const char *const top_known[] = {"socket",
                                        "socket_group",
                                        "allowed_users",
                                        "allowed_groups",
                                        "log_level",
                                        "pools",
                                        "scheduler",
                                        "op_timeout_ms",
                                        "max_attempts",
                                        "probe_interval_ms",
                                        "probe_max_ms",
                                        "workers_per_member",
                                        "control_socket",
                                        "control_allowed_users",
                                        "control_allowed_groups",
                                        "pin_max_failures",
                                        "state_dir",
                                        "max_clients",
                                        "max_clients_per_uid",
                                        "max_clients_per_pid",
                                        "hello_timeout_ms",
                                        "frame_timeout_ms",
                                        "write_timeout_ms",
                                        "session_objects",
                                        "session_object_bytes",
                                        "session_objects_per_uid",
                                        "session_object_bytes_per_uid",
                                        "session_objects_total",
                                        NULL};

/* A path setting: absolute, dflt when absent. */
static int
get_path(struct ctx *x, const config_setting_t *root, const char *name, const char *dflt,
         char **out)
{
	if (get_string(x, root, name, name, 0, out) != 0)
		return -1;
	if (*out == NULL && (*out = strdup(dflt)) == NULL)
		return fail(x, root, name, "out of memory");
	if ((*out)[0] != '/')
		return fail(x, config_setting_get_member(root, name), name,
		            "must be an absolute path");
	return 0;
}

static int
load_log_level(struct ctx *x, const config_setting_t *root, struct config *c)
{
	static const char *const levels[] = {"error", "warning", "info", "debug", NULL};
	char *level = NULL;
	size_t i;
	int r = 0;

	c->log_level = P11MUX_LOG_INFO;
	if (get_string(x, root, "log_level", "log_level", 0, &level) != 0)
		return -1;
	if (level != NULL) {
		for (i = 0; levels[i] != NULL && strcmp(levels[i], level) != 0; i++)
			;
		if (levels[i] == NULL)
			r = fail(x, config_setting_get_member(root, "log_level"), "log_level",
			         "\"%s\" is not one of error, warning, info, debug", level);
		else
			c->log_level = (int)i;
	}
	free(level);
	return r;
}

/* The connection limits and time-outs, with their defaults (docs/security.md): enough for a
 * prefork Apache of hundreds of children under one user, and a global limit a quarter of
 * what one user may hold over that. */
static int
load_limits(struct ctx *x, const config_setting_t *root, struct limits *l)
{
	size_t i;

	l->max_clients = 4096;
	l->max_clients_per_uid = 2048;
	l->max_clients_per_pid = 256;
	l->hello_timeout_ms = 5000;
	l->frame_timeout_ms = 5000;
	l->write_timeout_ms = 5000;
	/* A SmartCard-HSM has room for tens of keys: an application gets 32 session objects,
	 * 256 KiB of them, at most (0: none). */
	l->session_objects = 32;
	l->session_object_bytes = 262144;
	/* A user can start processes up to max_clients_per_uid: together they get 8 times one
	 * process's share. */
	l->session_objects_per_uid = 256;
	l->session_object_bytes_per_uid = 2097152;
	/* Several users within their quotas must not fill a SmartCard-HSM's few slots either. */
	l->session_objects_total = 1024;
	for (i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++)
		if (get_uint(x, root, limit_keys[i].name, limit_keys[i].name, limit_keys[i].min,
		             limit_keys[i].max,
		             (unsigned *)((char *)l + limit_keys[i].offset)) != 0)
			return -1;
	return 0;
}

/* The daemon-wide keys: sockets, who may use them, the log level, the state directory, the
 * limits. */
static int
load_top(struct ctx *x, const config_setting_t *root, struct config *c)
{
	if (check_known(x, root, top_known, "") != 0 ||
	    get_path(x, root, "state_dir", CONFIG_DEFAULT_STATE, &c->state_dir) != 0 ||
	    load_limits(x, root, &c->limits) != 0 ||
	    get_path(x, root, "socket", CONFIG_DEFAULT_SOCKET, &c->socket) != 0 ||
	    get_string(x, root, "socket_group", "socket_group", 0, &c->socket_group) != 0 ||
	    load_log_level(x, root, c) != 0)
		return -1;
	if (c->socket_group != NULL && getgrnam(c->socket_group) == NULL)
		return fail(x, config_setting_get_member(root, "socket_group"), "socket_group",
		            "no such group \"%s\"", c->socket_group);
	if (load_users(x, root, "allowed_users", "allowed_groups", &c->allowed_uids,
	               &c->nallowed_uids, &c->allowed_gids, &c->nallowed_gids) != 0 ||
	    load_users(x, root, "control_allowed_users", "control_allowed_groups", &c->control_uids,
	               &c->ncontrol_uids, &c->control_gids, &c->ncontrol_gids) != 0 ||
	    get_path(x, root, "control_socket", CONFIG_DEFAULT_CONTROL, &c->control_socket) != 0)
		return -1;
	if (strcmp(c->control_socket, c->socket) == 0)
		return fail(x, config_setting_get_member(root, "control_socket"), "control_socket",
		            "must be another path than socket");
	return 0;
}

/* The pools, with the scheduling keys of the top level as their defaults. */
static int
load_pools(struct ctx *x, const config_setting_t *root, struct config *c)
{
	struct pool_config defaults = {
	        .op_timeout_ms = 10000,
	        .max_attempts = 3,
	        .probe_interval_ms = 1000,
	        .probe_max_ms = 30000,
	        .workers_per_member = 1,
	        .pin_max_failures = 3,
	};
	config_setting_t *pools, *s;
	char key[64];
	size_t i, j;

	if (load_sched(x, root, "", &defaults) != 0)
		return -1;
	if ((pools = config_setting_get_member(root, "pools")) == NULL)
		return fail(x, root, "pools", "missing: at least one pool is needed");
	if (!config_setting_is_list(pools) || config_setting_length(pools) == 0)
		return fail(x, pools, "pools", "expected a list of pool groups: ( { ... } )");
	c->npools = (size_t)config_setting_length(pools);
	if ((c->pools = calloc(c->npools, sizeof(*c->pools))) == NULL)
		return fail(x, pools, "pools", "out of memory");
	for (i = 0; i < c->npools; i++) {
		if (load_pool(x, config_setting_get_elem(pools, (unsigned)i), i, &c->pools[i],
		              &defaults) != 0)
			return -1;
		c->pools[i].state_dir = c->state_dir;
	}
	/* Slot IDs must be unique: applications key their state by them. */
	for (i = 0; i < c->npools; i++) {
		if (c->pools[i].slot_id < 0)
			c->pools[i].slot_id = (long)i;
		for (j = 0; j < i; j++) {
			if (c->pools[j].slot_id != c->pools[i].slot_id)
				continue;
			s = config_setting_get_elem(pools, (unsigned)i);
			if (config_setting_get_member(s, "slot_id") != NULL)
				s = config_setting_get_member(s, "slot_id");
			pool_key(key, sizeof(key), i, "slot_id");
			return fail(x, s, key, "slot %ld is already used by pools.[%zu]",
			            c->pools[i].slot_id, j);
		}
	}
	return 0;
}

/* libconfig says only "syntax error", at the line where it gave up: often the line after a
 * ',' missing between two groups of a list, a key without a value, or a path without quotes. */
static void
syntax_error(const config_t *cf, const char *path, struct p11mux_err *e)
{
	const char *file = config_error_file(cf) ? config_error_file(cf) : path;
	const char *text = config_error_text(cf) ? config_error_text(cf) : "syntax error";

	if (strcmp(text, "syntax error") == 0)
		p11mux_err_set(e,
		               "%s:%d: syntax error on this line or at the end of the line before "
		               "(a missing ',' between list elements, a missing value, or a string "
		               "without its double quotes?)",
		               file, config_error_line(cf));
	else
		p11mux_err_set(e, "%s:%d: syntax error: %s", file, config_error_line(cf), text);
}

/* Skips a comment that starts at c ('#', "//" or a C comment); 1 when c started one. */
static int
skip_comment(FILE *f, int c, unsigned *line)
{
	int d, prev = 0;

	if (c == '/') {
		if ((d = getc(f)) != '/' && d != '*') {
			if (d != EOF)
				ungetc(d, f);
			return 0;
		}
		c = d == '/' ? '#' : '*';
	}
	if (c == '#') {
		while ((d = getc(f)) != EOF && d != '\n')
			;
		*line += d == '\n';
		return 1;
	}
	if (c != '*')
		return 0;
	while ((d = getc(f)) != EOF && !(prev == '*' && d == '/')) {
		*line += d == '\n';
		prev = d;
	}
	return 1;
}

/* Reads a string literal whose opening quote was read; its text (cut) into dst. */
static void
read_literal(FILE *f, char *dst, size_t n, unsigned *line)
{
	size_t len = 0;
	int c;

	while ((c = getc(f)) != EOF && c != '"') {
		*line += c == '\n';
		if (c == '\\' && (c = getc(f)) == EOF)
			break;
		if (len + 1 < n)
			dst[len++] = (char)c;
	}
	dst[len] = '\0';
}

/* Where check_joined_strings() is: the line, the nesting, the key being set. */
struct scan {
	unsigned line, depth, pools_depth; /* pools_depth: the pools list's, 0 before it */
	long pool;                         /* the pool being read, -1 before the first */
	char stack[64];                    /* the open brackets (the innermost last) */
	char last[64], key[64];            /* the last name read; the last one set */
};

/* Takes one bracket or a '=' / ':' (c) at the scan's position. */
static void
scan_punct(struct scan *sc, int c)
{
	if (c == '=' || c == ':') {
		snprintf(sc->key, sizeof(sc->key), "%s", sc->last);
		return;
	}
	if (c == '{' && sc->pools_depth != 0 && sc->depth == sc->pools_depth)
		sc->pool++;
	if ((c == '[' || c == '(' || c == '{') && sc->depth++ < sizeof(sc->stack)) {
		sc->stack[sc->depth - 1] = (char)c;
		if (c != '{' && sc->depth == 1 && strcmp(sc->key, "pools") == 0)
			sc->pools_depth = 1;
	} else if ((c == ']' || c == ')' || c == '}') && sc->depth > 0) {
		if (sc->depth-- == sc->pools_depth)
			sc->pools_depth = 0;
	}
}

/*
 * libconfig joins string literals that follow each other: [ "hsm1" "hsm2" ] is one element,
 * "hsm1hsm2". In a list ([ ] or ( )) that is always a missing ',': refused, at the second
 * literal's line. The file is read again for it, as text (libconfig's tree no longer shows it).
 */
static int
check_joined_strings(struct ctx *x)
{
	struct scan sc = {.line = 1, .pool = -1};
	char word[64], prev[64] = "", cur[64], key[96];
	size_t wl = 0;
	int c, after_string = 0, r = 0;
	FILE *f;

	if ((f = fopen(x->path, "r")) == NULL)
		return 0; /* it was just read: a file that went away meanwhile is not ours to judge
		           */
	while (r == 0 && (c = getc(f)) != EOF) {
		if ((c == '#' || c == '/') && skip_comment(f, c, &sc.line))
			continue;
		if (c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
			if (wl + 1 < sizeof(word))
				word[wl++] = (char)c;
			after_string = 0;
			continue;
		}
		if (wl > 0) {
			word[wl] = '\0';
			snprintf(sc.last, sizeof(sc.last), "%s", word);
			wl = 0;
		}
		if (c == '\n' || c == ' ' || c == '\t' || c == '\r') {
			sc.line += c == '\n';
			continue;
		}
		if (c != '"') {
			after_string = 0;
			scan_punct(&sc, c);
			continue;
		}
		read_literal(f, cur, sizeof(cur), &sc.line);
		if (after_string && sc.depth > 0 && sc.depth <= sizeof(sc.stack) &&
		    sc.stack[sc.depth - 1] != '{') {
			if (sc.pools_depth != 0 && sc.depth > sc.pools_depth && sc.pool >= 0)
				snprintf(key, sizeof(key), "pools.[%ld].%s", sc.pool, sc.key);
			else
				snprintf(key, sizeof(key), "%s", sc.key);
			r = p11mux_err_set(x->e,
			                   "%s:%u: %s: \"%s\" \"%s\" is one string to libconfig: "
			                   "a ',' is missing between them",
			                   x->path, sc.line, key, prev, cur);
		}
		snprintf(prev, sizeof(prev), "%s", cur);
		after_string = 1;
	}
	fclose(f);
	return r;
}

struct config *
config_load(const char *path, struct p11mux_err *e)
{
	struct ctx x = {path, e};
	const config_setting_t *root;
	struct config *c = NULL;
	config_t cf;
	int ok = 0;

	config_init(&cf);
	if (config_read_file(&cf, path) != CONFIG_TRUE) {
		if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
			p11mux_err_set(e, "%s: cannot read: %s", path, strerror(errno));
		else
			syntax_error(&cf, path, e);
		goto out;
	}
	if (check_joined_strings(&x) != 0)
		goto out;
	root = config_root_setting(&cf);
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(path)) == NULL) {
		p11mux_err_set(e, "%s: out of memory", path);
		goto out;
	}
	if (load_top(&x, root, c) != 0 || load_pools(&x, root, c) != 0)
		goto out;
	ok = 1;
out:
	config_destroy(&cf);
	if (!ok) {
		config_free(c);
		return NULL;
	}
	return c;
}

void
config_free(struct config *c)
{
	size_t i, j;

	if (c == NULL)
		return;
	for (i = 0; i < c->npools; i++) {
		struct pool_config *p = &c->pools[i];

		free(p->label);
		free(p->module);
		for (j = 0; j < p->nmembers; j++) {
			struct member_config *mc = &p->members[j];

			free(mc->token);
			free(mc->module);
			for (size_t k = 0; k < mc->nenv; k++)
				free(mc->env[k]);
			free(mc->env);
		}
		free(p->members);
		free(p->pin_file);
	}
	free(c->pools);
	free(c->allowed_uids);
	free(c->allowed_gids);
	free(c->control_uids);
	free(c->control_gids);
	free(c->control_socket);
	free(c->state_dir);
	free(c->socket);
	free(c->socket_group);
	free(c->path);
	free(c);
}
