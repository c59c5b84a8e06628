/*
 * The simulator's settings: a profile of service times, a time scale, the control directory,
 * and overrides per token. Read from a "key = value" file ($P11SIM_CONFIG), then from the
 * "key=value;key=value" string an application may pass in C_Initialize's pReserved (NSS's
 * LibraryParameters), then from a few environment variables.
 */
#include "p11sim.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const param_names[P_NPARAMS] = {
        [P_RSA1024_MS] = "rsa1024_ms",
        [P_RSA2048_MS] = "rsa2048_ms",
        [P_EC_P256_MS] = "ec_p256_ms",
        [P_LOGIN_MS] = "login_ms",
        [P_FIND_MS] = "find_ms",
        [P_GETATTR_MS] = "getattr_ms",
        [P_OTHER_MS] = "other_ms",
        [P_JITTER] = "jitter",
        [P_SLOW] = "slow",
        [P_PIN_RETRIES] = "pin_retries",
};

/* The service times a profile gives, in ms at scale 1 (P_RSA1024_MS .. P_OTHER_MS). The
 * nitrokey numbers are the fastest single TLS handshakes measured on one Nitrokey HSM behind
 * mod_nss (raymii.org, "Nitrokey HSM web cluster"; docs/simulator.md). */
static const double profile_ms[2][P_OTHER_MS + 1] = {
        [PROFILE_NITROKEY] = {230, 750, 250, 100, 20, 5, 1},
        [PROFILE_NONE] = {0, 0, 0, 0, 0, 0, 0},
};

/* Where the items of C_Initialize's pReserved string come from, in messages. */
static const char reserved_src[] = "C_Initialize parameters";

#define DEFAULT_JITTER      0.05
#define DEFAULT_PIN_RETRIES 3

static int
is_time_param(int i)
{
	return i <= P_OTHER_MS;
}

static void __attribute__((format(printf, 3, 4)))
config_error(const char *src, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0 && src == reserved_src)
		sim_log("%s, item %d: %s", src, line, msg);
	else if (line > 0)
		sim_log("%s:%d: %s", src, line, msg);
	else
		sim_log("%s: %s", src, msg);
}

static int
parse_double(const char *s, double *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(s, &end);
	if (errno != 0 || end == s || !isfinite(d))
		return -1;
	/* "30%" for a rate or a jitter reads naturally; allow it. */
	if (*end == '%') {
		d /= 100;
		end++;
	}
	if (*end != '\0')
		return -1;
	*out = d;
	return 0;
}

static int
parse_profile(const char *s, enum sim_profile *p)
{
	if (strcmp(s, "nitrokey") == 0)
		*p = PROFILE_NITROKEY;
	else if (strcmp(s, "none") == 0)
		*p = PROFILE_NONE;
	else
		return -1;
	return 0;
}

/* Sets one of the per-token keys (also valid globally) in *o. Returns 0, 1 when `key` is not
 * one of them, -1 on a bad value (reported). */
static int
set_override(struct sim_overrides *o, const char *key, const char *val, const char *src, int line)
{
	double d;
	int i;

	if (strcmp(key, "profile") == 0) {
		if (parse_profile(val, &o->profile) != 0) {
			config_error(src, line, "profile: '%s' is not a profile (nitrokey, none)",
			             val);
			return -1;
		}
		o->profile_set = 1;
		return 0;
	}
	for (i = 0; i < P_NPARAMS; i++)
		if (strcmp(key, param_names[i]) == 0)
			break;
	if (i == P_NPARAMS)
		return 1;
	if (parse_double(val, &d) != 0 || d < 0) {
		config_error(src, line, "%s: '%s' is not a number >= 0", key, val);
		return -1;
	}
	if (i == P_JITTER && d > 0.5) {
		config_error(src, line, "%s: '%s' is more than 0.5 (50%%)", key, val);
		return -1;
	}
	if (i == P_SLOW && d <= 0) {
		config_error(src, line, "%s: '%s' must be more than 0", key, val);
		return -1;
	}
	if (i == P_PIN_RETRIES && (d < 1 || d > 255 || d != floor(d))) {
		config_error(src, line, "%s: '%s' is not a whole number from 1 to 255", key, val);
		return -1;
	}
	o->v[i] = d;
	o->set |= 1u << i;
	return 0;
}

static int
set_string(char **dst, const char *val)
{
	char *s;

	if ((s = strdup(val)) == NULL) {
		sim_log("out of memory");
		return -1;
	}
	free(*dst);
	*dst = s;
	return 0;
}

/* Sets a global key. Returns 0, or -1 (reported). */
static int
set_global(struct sim_config *cfg, const char *key, const char *val, const char *src, int line)
{
	double d;
	int r;

	if (strcmp(key, "module") == 0) {
		if (*val == '\0') {
			config_error(src, line, "module: empty path");
			return -1;
		}
		return set_string(&cfg->module, val);
	}
	if (strcmp(key, "control_dir") == 0) {
		if (*val == '\0') {
			free(cfg->control_dir);
			cfg->control_dir = NULL;
			return 0;
		}
		return set_string(&cfg->control_dir, val);
	}
	if (strcmp(key, "scale") == 0) {
		if (parse_double(val, &d) != 0 || d <= 0) {
			config_error(src, line, "scale: '%s' is not a number > 0", val);
			return -1;
		}
		cfg->scale = d;
		return 0;
	}
	if (strcmp(key, "seed") == 0) {
		char *end;

		errno = 0;
		cfg->seed = strtoull(val, &end, 0);
		if (errno != 0 || end == val || *end != '\0') {
			config_error(src, line, "seed: '%s' is not a whole number", val);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "module_lock") == 0) {
		if (strcmp(val, "yes") == 0 || strcmp(val, "1") == 0)
			cfg->module_lock = 1;
		else if (strcmp(val, "no") == 0 || strcmp(val, "0") == 0)
			cfg->module_lock = 0;
		else {
			config_error(src, line, "module_lock: '%s' is not yes or no", val);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "debug") == 0) {
		if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0) {
			config_error(src, line, "debug: '%s' is not 0 or 1", val);
			return -1;
		}
		cfg->debug = val[0] == '1';
		return 0;
	}
	if ((r = set_override(&cfg->global, key, val, src, line)) <= 0)
		return r;
	config_error(src, line, "unknown key '%s'", key);
	return -1;
}

static struct sim_token_cfg *
token_cfg(struct sim_config *cfg, const char *label, int create)
{
	struct sim_token_cfg *t, **tail;

	for (tail = &cfg->tokens; (t = *tail) != NULL; tail = &t->next)
		if (strcmp(t->label, label) == 0)
			return t;
	if (!create)
		return NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL || (t->label = strdup(label)) == NULL) {
		free(t);
		sim_log("out of memory");
		return NULL;
	}
	*tail = t;
	return t;
}

static void
trim(char *s)
{
	size_t n = strlen(s), i = 0;

	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	while (s[i] == ' ' || s[i] == '\t')
		i++;
	memmove(s, s + i, n - i + 1);
}

/* The value after "key", with an optional "=" before it; quotes removed. NULL when missing. */
static char *
line_value(char *p, int need_eq)
{
	char *v;
	size_t n;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '=')
		p++;
	else if (need_eq)
		return NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	v = p;
	n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v[n - 1] = '\0';
		v++;
	}
	return v;
}

/* One line of the file, or one item of the pReserved string. Returns 0 or -1 (reported). */
static int
config_line(struct sim_config *cfg, char *text, const char *src, int line)
{
	struct sim_token_cfg *t;
	char *p, *label, *key, *val, *q;
	int r, quoted = 0;

	/* A '#' outside quotes starts a comment. */
	for (q = text; *q != '\0'; q++) {
		if (*q == '"')
			quoted = !quoted;
		else if (*q == '#' && !quoted) {
			*q = '\0';
			break;
		}
	}
	trim(text);
	if (*text == '\0')
		return 0;
	if (strncmp(text, "token", 5) == 0 && (text[5] == ' ' || text[5] == '\t')) {
		/* token LABEL KEY [=] VALUE */
		p = text + 5;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '"') {
			label = ++p;
			if ((p = strchr(p, '"')) == NULL) {
				config_error(src, line, "token: unclosed quote");
				return -1;
			}
			*p++ = '\0';
		} else {
			label = p;
			p += strcspn(p, " \t");
			if (*p != '\0')
				*p++ = '\0';
		}
		while (*p == ' ' || *p == '\t')
			p++;
		key = p;
		p += strcspn(p, " \t=");
		val = line_value(p, 0);
		*p = '\0';
		if (*label == '\0' || *key == '\0' || val == NULL || *val == '\0') {
			config_error(src, line, "expected 'token LABEL KEY VALUE'");
			return -1;
		}
		if (strlen(label) > 32) {
			config_error(src, line, "token: label '%s' is longer than 32 bytes", label);
			return -1;
		}
		if ((t = token_cfg(cfg, label, 1)) == NULL)
			return -1;
		if (strcmp(key, "module_lock") == 0) {
			config_error(src, line,
			             "module_lock is set for the whole module, not per token: one "
			             "module-wide lock is what OpenSC has");
			return -1;
		}
		if ((r = set_override(&t->o, key, val, src, line)) == 1)
			config_error(src, line, "unknown key '%s' for token '%s'", key, label);
		return r == 0 ? 0 : -1;
	}
	key = text;
	p = text + strcspn(text, " \t=");
	if ((val = line_value(p, 1)) == NULL) {
		*p = '\0';
		config_error(src, line, "expected 'KEY = VALUE' after '%s'", key);
		return -1;
	}
	*p = '\0';
	return set_global(cfg, key, val, src, line);
}

static int
config_file(struct sim_config *cfg, const char *path)
{
	char *buf = NULL;
	size_t cap = 0;
	FILE *fp;
	int line = 0, r = 0;

	if ((fp = fopen(path, "r")) == NULL) {
		sim_log("%s: cannot read the configuration: %s", path, strerror(errno));
		return -1;
	}
	while (r == 0 && getline(&buf, &cap, fp) != -1)
		r = config_line(cfg, buf, path, ++line);
	if (r == 0 && ferror(fp)) {
		sim_log("%s: read error", path);
		r = -1;
	}
	free(buf);
	fclose(fp);
	return r;
}

static int
config_reserved(struct sim_config *cfg, const char *reserved)
{
	char *copy, *item, *save = NULL;
	int n = 0, r = 0;

	if ((copy = strdup(reserved)) == NULL) {
		sim_log("out of memory");
		return -1;
	}
	for (item = strtok_r(copy, ";", &save); item != NULL && r == 0;
	     item = strtok_r(NULL, ";", &save))
		r = config_line(cfg, item, reserved_src, ++n);
	free(copy);
	return r;
}

static int
config_env(struct sim_config *cfg)
{
	static const struct {
		const char *env, *key;
	} vars[] = {
	        {"P11SIM_MODULE", "module"},   {"P11SIM_SCALE", "scale"},
	        {"P11SIM_PROFILE", "profile"}, {"P11SIM_CONTROL_DIR", "control_dir"},
	        {"P11SIM_DEBUG", "debug"},     {"P11SIM_MODULE_LOCK", "module_lock"},
	};
	const char *v;
	size_t i;

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		if ((v = getenv(vars[i].env)) == NULL)
			continue;
		if (set_global(cfg, vars[i].key, v, vars[i].env, 0) != 0)
			return -1;
	}
	return 0;
}

int
config_load(struct sim_config *cfg, const char *reserved)
{
	const char *path;

	memset(cfg, 0, sizeof(*cfg));
	cfg->scale = 1;
	cfg->seed = 1;
	cfg->module_lock = -1;
	if (set_string(&cfg->module, SIM_DEFAULT_MODULE) != 0)
		return -1;
	if ((path = getenv("P11SIM_CONFIG")) != NULL && *path != '\0' &&
	    config_file(cfg, path) != 0)
		return -1;
	/* Not silently at a real device's speed: whoever forgot the variable hears of it. */
	if ((path == NULL || *path == '\0') && reserved == NULL &&
	    getenv("P11SIM_QUIET") == NULL)
		fprintf(stderr, "p11sim: P11SIM_CONFIG is not set: every token is a Nitrokey HSM "
		                "at real-device speed (scale 1); p11mux-sim-setup writes a config\n");
	if (reserved != NULL && config_reserved(cfg, reserved) != 0)
		return -1;
	return config_env(cfg);
}

void
config_free(struct sim_config *cfg)
{
	struct sim_token_cfg *t, *next;

	for (t = cfg->tokens; t != NULL; t = next) {
		next = t->next;
		free(t->label);
		free(t);
	}
	free(cfg->module);
	free(cfg->control_dir);
	memset(cfg, 0, sizeof(*cfg));
}

int
config_module_lock(const struct sim_config *cfg)
{
	if (cfg->module_lock >= 0)
		return cfg->module_lock;
	return !cfg->global.profile_set || cfg->global.profile == PROFILE_NITROKEY;
}

static const struct sim_overrides *
token_overrides(const struct sim_config *cfg, const char *name)
{
	const struct sim_token_cfg *t;

	if (name == NULL || *name == '\0')
		return NULL;
	for (t = cfg->tokens; t != NULL; t = t->next)
		if (strcmp(t->label, name) == 0)
			return &t->o;
	return NULL;
}

void
config_params(const struct sim_config *cfg, const char *label, const char *serial,
              struct sim_params *p)
{
	/* Global settings, then the token's by label, then by serial (devices that share a
	 * label are told apart by serial). */
	const struct sim_overrides *lv[3] = {&cfg->global, token_overrides(cfg, label),
	                                     token_overrides(cfg, serial)};
	enum sim_profile prof = PROFILE_NITROKEY;
	int i, l, own = 0;

	for (l = 0; l < 3; l++)
		if (lv[l] != NULL && lv[l]->profile_set) {
			prof = lv[l]->profile;
			own = l;
		}
	for (i = 0; i <= P_OTHER_MS; i++)
		p->v[i] = profile_ms[prof][i];
	p->v[P_JITTER] = DEFAULT_JITTER;
	p->v[P_SLOW] = 1;
	p->v[P_PIN_RETRIES] = DEFAULT_PIN_RETRIES;
	for (l = 0; l < 3; l++) {
		if (lv[l] == NULL)
			continue;
		for (i = 0; i < P_NPARAMS; i++) {
			/* A token with its own profile takes no service time from a level above:
			 * "token hsm2 profile none" is a device without delays whatever the
			 * rest is set to. */
			if (is_time_param(i) && l < own)
				continue;
			if (lv[l]->set & (1u << i))
				p->v[i] = lv[l]->v[i];
		}
	}
}
