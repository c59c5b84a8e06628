/* A pool's life: its members found and logged in, its view built, and shut down. */
#include "pool.h"
#include "err.h"
#include "helper.h"
#include "hproto.h"
#include "log.h"
#include "pin.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The mechanisms every member that is up has, with the capabilities they all share. */
static int
build_mechanisms(struct pool *p)
{
	struct p11mux_slot *s = &p->slot;
	struct member *m0 = NULL;
	CK_ULONG i, j, n = 0;
	size_t k;

	for (k = 0; k < p->nmembers && m0 == NULL; k++)
		if (p->members[k].state == MEMBER_UP)
			m0 = &p->members[k];
	if (m0 == NULL)
		return -1;
	s->mechs = calloc(m0->nmechs + 1, sizeof(*s->mechs));
	s->infos = calloc(m0->nmechs + 1, sizeof(*s->infos));
	if (s->mechs == NULL || s->infos == NULL)
		return -1;
	for (i = 0; i < m0->nmechs; i++) {
		CK_MECHANISM_INFO info = m0->infos[i];
		int everywhere = 1;

		for (k = 0; k < p->nmembers && everywhere; k++) {
			struct member *m = &p->members[k];

			if (m == m0 || m->state != MEMBER_UP)
				continue;
			for (j = 0; j < m->nmechs && m->mechs[j] != m0->mechs[i]; j++)
				;
			if (j == m->nmechs) {
				everywhere = 0;
				break;
			}
			if (m->infos[j].ulMinKeySize > info.ulMinKeySize)
				info.ulMinKeySize = m->infos[j].ulMinKeySize;
			if (m->infos[j].ulMaxKeySize < info.ulMaxKeySize)
				info.ulMaxKeySize = m->infos[j].ulMaxKeySize;
			info.flags &= m->infos[j].flags;
		}
		if (!everywhere)
			continue;
		/* Key generation makes session keys on one member (sobject.h); derivation and
		 * wrapping are not offered. */
		info.flags &= ~(CKF_DERIVE | CKF_WRAP | CKF_UNWRAP);
		s->mechs[n] = m0->mechs[i];
		s->infos[n] = info;
		n++;
	}
	s->nmechs = n;
	return 0;
}

static void
build_slot_info(struct pool *p)
{
	CK_SLOT_INFO *si = &p->slot.slot;
	CK_TOKEN_INFO *ti = &p->slot.token;
	char desc[96], serial[17];
	size_t k;

	p->slot.id = (CK_SLOT_ID)p->cfg->slot_id;
	snprintf(desc, sizeof(desc), "p11mux pool of %zu: %s", p->nmembers, p->label);
	p11mux_pad(si->slotDescription, sizeof(si->slotDescription), desc);
	p11mux_pad(si->manufacturerID, sizeof(si->manufacturerID), "p11mux");
	/* Not removable: the pool is always there, whatever its members do. */
	si->flags = CKF_TOKEN_PRESENT;
	si->hardwareVersion.major = 0;
	si->hardwareVersion.minor = 1;
	si->firmwareVersion = si->hardwareVersion;

	p11mux_pad(ti->label, sizeof(ti->label), p->label);
	p11mux_pad(ti->manufacturerID, sizeof(ti->manufacturerID), "p11mux");
	p11mux_pad(ti->model, sizeof(ti->model), "pool");
	snprintf(serial, sizeof(serial), "%016llx",
	         (unsigned long long)view_fnv(0xcbf29ce484222325ull, p->label, strlen(p->label)));
	p11mux_pad(ti->serialNumber, sizeof(ti->serialNumber), serial);
	ti->flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
	p->has_rng = 1;
	ti->ulMinPinLen = 0;
	ti->ulMaxPinLen = 255;
	for (k = 0; k < p->nmembers; k++) {
		const CK_TOKEN_INFO *mt = &p->members[k].token;

		if (p->members[k].state != MEMBER_UP)
			continue;
		if (!(mt->flags & CKF_RNG))
			p->has_rng = 0;
		if (mt->ulMinPinLen > ti->ulMinPinLen)
			ti->ulMinPinLen = mt->ulMinPinLen;
		if (mt->ulMaxPinLen < ti->ulMaxPinLen)
			ti->ulMaxPinLen = mt->ulMaxPinLen;
	}
	if (p->has_rng)
		ti->flags |= CKF_RNG;
	ti->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
	ti->ulSessionCount = CK_UNAVAILABLE_INFORMATION;
	ti->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
	ti->ulRwSessionCount = CK_UNAVAILABLE_INFORMATION;
	ti->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	ti->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	ti->hardwareVersion = si->hardwareVersion;
	ti->firmwareVersion = si->hardwareVersion;
	memset(ti->utcTime, ' ', sizeof(ti->utcTime));
}

/* --- finding the members --- */

/* Tokens the pool's module shows, as a discovery helper lists them. */
struct tokens {
	const char *module;
	struct p11mux_slot *v;
	size_t n;
};

static void
put_module(struct p11mux_msg *m, void *arg)
{
	const struct tokens *t = arg;

	p11mux_msg_put_bytes(m, t->module, strlen(t->module));
}

CK_RV
pool_got_tokens(struct p11mux_msg *m, struct p11mux_slot **v, size_t *n)
{
	struct p11mux_slot *s, *copy;
	size_t c, i;

	if (p11mux_msg_get_slots(m, &s, &c) != 0 || p11mux_msg_end(m) != 0)
		return LINK_RV_GONE;
	if ((copy = calloc(c + 1, sizeof(*copy))) == NULL)
		return CKR_HOST_MEMORY;
	/* Only the slot and token info are kept; the mechanism arrays live in the message. */
	for (i = 0; i < c; i++) {
		copy[i].id = s[i].id;
		copy[i].slot = s[i].slot;
		copy[i].token = s[i].token;
	}
	*v = copy;
	*n = c;
	return CKR_OK;
}

static CK_RV
got_tokens(struct p11mux_msg *m, void *arg)
{
	struct tokens *t = arg;

	return pool_got_tokens(m, &t->v, &t->n);
}

int
pool_discover(const char *exe, const char *module, char *const *env, int use_syslog,
              unsigned timeout_ms, struct p11mux_slot **v, size_t *n, struct p11mux_err *e)
{
	struct link_spec spec = {exe, "token discovery", env, use_syslog, 1, timeout_ms};
	struct tokens t = {module, NULL, 0};
	struct link l;
	CK_RV rv;

	link_init(&l);
	if (link_spawn(&l, &spec, e) != 0)
		return -1;
	rv = chan_call(&l.ctl, HELPER_TOKENS, put_module, got_tokens, &t, timeout_ms, e, NULL);
	link_close(&l, 2000);
	link_free(&l);
	if (rv != CKR_OK) {
		free(t.v);
		return p11mux_err_set(e, "%s: cannot list its tokens: %s", module, e->msg);
	}
	*v = t.v;
	*n = t.n;
	return 0;
}

/* Lists the tokens of the pool's module with a helper of its own. 0, or -1 with e. */
static int
list_tokens(struct pool *p, struct tokens *t, struct p11mux_err *e)
{
	t->module = p->cfg->module;
	return pool_discover(p->exe, p->cfg->module, NULL, p->use_syslog, p->cfg->op_timeout_ms,
	                     &t->v, &t->n, e);
}

/* Adds a member; for a token seen by discovery, serial is its serial. */
static struct member *
add_member(struct pool *p, const char *name, const char *serial, const struct member_config *mc,
           struct p11mux_err *e)
{
	struct member *m;

	if (p->nmembers == P11MUX_POOL_MAX_MEMBERS) {
		log_warn("pool %zu: more than %d members; \"%s\" left out", p->index,
		         P11MUX_POOL_MAX_MEMBERS, name);
		return NULL;
	}
	m = &p->members[p->nmembers];
	if (member_init(m, p, p->nmembers, name, mc, e) != 0)
		return NULL;
	snprintf(m->serial, sizeof(m->serial), "%s", serial);
	p->nmembers++;
	return m;
}

const struct pool_config *
pool_cfg(const struct pool *p)
{
	return __atomic_load_n(&p->cfg, __ATOMIC_ACQUIRE);
}

enum sched_policy
pool_policy(const struct pool *p)
{
	return __atomic_load_n(&p->policy, __ATOMIC_RELAXED);
}

size_t
pool_nmembers(const struct pool *p)
{
	return __atomic_load_n(&p->nmembers, __ATOMIC_ACQUIRE);
}

int
pool_add_live(struct pool *p, const char *name, const char *serial, CK_SLOT_ID slot,
              const struct member_config *mc, struct p11mux_err *e)
{
	size_t n = p->nmembers;
	struct member *m = &p->members[n];

	if (n == P11MUX_POOL_MAX_MEMBERS)
		return p11mux_err_set(e,
		                      "pool \"%s\" has had %d members since the daemon started; "
		                      "\"%s\" needs a restart",
		                      p->label, P11MUX_POOL_MAX_MEMBERS, name);
	if (member_init(m, p, n, name, mc, e) != 0)
		return -1;
	snprintf(m->serial, sizeof(m->serial), "%s", serial);
	snprintf(m->reason, sizeof(m->reason), "added by a reload or rescan; probing");
	m->slot = slot;
	m->probe_now = 1;
	__atomic_store_n(&p->view.nmembers, n + 1, __ATOMIC_RELEASE);
	if (member_start(m) != 0) {
		__atomic_store_n(&p->view.nmembers, n, __ATOMIC_RELEASE);
		member_stop(m);
		return p11mux_err_set(e, "cannot start a thread for member %s", name);
	}
	/* Request threads and the control thread see it from here on. */
	__atomic_store_n(&p->nmembers, n + 1, __ATOMIC_RELEASE);
	log_info("pool \"%s\": member %s added", p->label, name);
	return 0;
}

/* Whether a member of p is the token with this label and serial. */
static int
is_member(struct pool *p, const char *label, const char *serial)
{
	char l[33], s[17];
	size_t k;

	for (k = 0; k < p->nmembers; k++) {
		member_names(&p->members[k], l, s);
		if (member_retired(&p->members[k]))
			continue;
		if (s[0] != '\0' ? strcmp(s, serial) == 0 : strcmp(l, label) == 0)
			return 1;
	}
	return 0;
}

int
pool_find_new(struct pool *p, size_t *added, struct p11mux_err *e)
{
	struct tokens t = {NULL, NULL, 0};
	char label[33], serial[17];
	size_t i;
	int r = 0;

	*added = 0;
	if (p->cfg->members != NULL)
		return 0;
	if (list_tokens(p, &t, e) != 0)
		return -1;
	for (i = 0; i < t.n && r == 0; i++) {
		p11mux_field(label, t.v[i].token.label, sizeof(t.v[i].token.label));
		p11mux_field(serial, t.v[i].token.serialNumber, sizeof(t.v[i].token.serialNumber));
		/* A pool named after its members' common label takes tokens of that label only,
		 * as at start-up: another's token would be sent the pool's PIN. */
		if (is_member(p, label, serial) ||
		    (p->cfg->label == NULL && strcmp(label, p->label) != 0))
			continue;
		if ((r = pool_add_live(p, label, serial, t.v[i].id, &p->plain, e)) == 0)
			(*added)++;
	}
	free(t.v);
	return r;
}

/* A hint for a member that SoftHSM (or the simulator over it) does not show: SoftHSM finds
 * its tokens through $SOFTHSM2_CONF, which a daemon started by hand often lacks. */
static const char *
softhsm_hint(const char *module)
{
	if (module == NULL || getenv("SOFTHSM2_CONF") != NULL ||
	    (strstr(module, "softhsm") == NULL && strstr(module, "p11sim") == NULL))
		return "";
	return " (SOFTHSM2_CONF is not set in the daemon's environment: SoftHSM looks for its "
	       "tokens in /etc/softhsm/softhsm2.conf)";
}

/* The members named by strings: each token of the module whose label or serial a name gives;
 * a name that matches none is a member too, down until it appears. */
static int
plain_members(struct pool *p, const struct tokens *t, struct p11mux_err *e)
{
	const struct pool_config *cfg = p->cfg;
	char label[33], serial[17];
	size_t i, k;
	int want, seen;

	for (i = 0; i < t->n; i++) {
		p11mux_field(label, t->v[i].token.label, sizeof(t->v[i].token.label));
		p11mux_field(serial, t->v[i].token.serialNumber,
		             sizeof(t->v[i].token.serialNumber));
		want = cfg->members == NULL;
		for (k = 0; k < cfg->nmembers && !want; k++)
			want = cfg->members[k].module == NULL && cfg->members[k].env == NULL &&
			       (strcmp(cfg->members[k].token, label) == 0 ||
			        strcmp(cfg->members[k].token, serial) == 0);
		if (want && add_member(p, label, serial, &p->plain, e) != NULL)
			p->members[p->nmembers - 1].slot = t->v[i].id;
	}
	for (k = 0; k < cfg->nmembers; k++) {
		if (cfg->members[k].module != NULL || cfg->members[k].env != NULL)
			continue;
		for (i = 0, seen = 0; i < p->nmembers && !seen; i++)
			seen = strcmp(p->members[i].label, cfg->members[k].token) == 0 ||
			       strcmp(p->members[i].serial, cfg->members[k].token) == 0;
		if (seen)
			continue;
		log_warn("pool %zu: member \"%s\" is not present in %s; it joins when it appears%s",
		         p->index, cfg->members[k].token, cfg->module, softhsm_hint(cfg->module));
		if (add_member(p, cfg->members[k].token, "", &p->plain, e) != NULL)
			snprintf(p->members[p->nmembers - 1].reason, sizeof(p->members[0].reason),
			         "not present");
	}
	return 0;
}

/* Finds the pool's members and starts a helper for each one present. */
static int
find_members(struct pool *p, struct p11mux_err *e)
{
	const struct pool_config *cfg = p->cfg;
	struct tokens t = {NULL, NULL, 0};
	struct p11mux_err why;
	size_t k, plain = cfg->members == NULL;
	int r = -1;

	for (k = 0; k < cfg->nmembers; k++)
		plain += cfg->members[k].module == NULL && cfg->members[k].env == NULL;
	if ((p->members = calloc(P11MUX_POOL_MAX_MEMBERS, sizeof(*p->members))) == NULL)
		return p11mux_err_set(e, "out of memory");
	if (plain > 0 && (list_tokens(p, &t, e) != 0 || plain_members(p, &t, e) != 0))
		goto out;
	/* A member given as a group has a module or an environment of its own: its helper
	 * finds it, or says it is not there. */
	for (k = 0; k < cfg->nmembers; k++)
		if ((cfg->members[k].module != NULL || cfg->members[k].env != NULL) &&
		    add_member(p, cfg->members[k].token, "", &cfg->members[k], e) == NULL)
			goto out;
	for (k = 0; k < p->nmembers; k++) {
		struct member *m = &p->members[k];

		if (m->reason[0] != '\0')
			continue;
		why.msg[0] = '\0';
		if (member_open(m, &why) != CKR_OK) {
			snprintf(m->reason, sizeof(m->reason), "%s", why.msg);
			log_warn("pool %zu: member %s: %s; it joins when it can", p->index,
			         m->label, why.msg);
		}
	}
	r = 0;
out:
	free(t.v);
	return r;
}

/* The pool's label: configured, or the one every member seen shares (never a ':'). */
static int
pick_label(struct pool *p, struct p11mux_err *e)
{
	const char *first = NULL;
	size_t i;

	if (p->cfg->label != NULL) {
		snprintf(p->label, sizeof(p->label), "%s", p->cfg->label);
		return 0;
	}
	for (i = 0; i < p->nmembers; i++) {
		if (p->members[i].link.pid <= 0)
			continue;
		if (first == NULL)
			first = p->members[i].label;
		else if (strcmp(p->members[i].label, first) != 0)
			return p11mux_err_set(e,
			                      "pool %zu: members have different labels (\"%s\", "
			                      "\"%s\"): set label in pools.[%zu]",
			                      p->index, first, p->members[i].label, p->index);
	}
	if (first == NULL)
		return p11mux_err_set(
		        e,
		        "pool %zu (line %d): no member token present in %s: the pool's "
		        "objects are read from its members at start-up%s",
		        p->index, p->cfg->line, p->cfg->module, softhsm_hint(p->cfg->module));
	if (strchr(first, ':') != NULL)
		return p11mux_err_set(e,
		                      "pool %zu: the members' label \"%s\" contains ':', which NSS "
		                      "cannot use: set label in pools.[%zu]",
		                      p->index, first, p->index);
	snprintf(p->label, sizeof(p->label), "%s", first);
	return 0;
}

/* --- logging in --- */

/* Whether the member's PIN counter is not intact. */
static int
pin_risky(const struct member *m)
{
	return (m->token.flags & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY)) != 0;
}

/* Excludes a member whose helper is running (it is ended). */
static void
exclude(struct pool *p, struct member *m, const char *why)
{
	m->state = MEMBER_EXCLUDED;
	snprintf(m->reason, sizeof(m->reason), "%s", why);
	log_error("pool \"%s\": member %s: %s; excluded", p->label, m->label, why);
	member_close(m);
}

/* Logs one member in. 1 when it is up, 0 when not (excluded or to be probed), -1 when it
 * refused the PIN (e filled): no other member may be tried. */
static int
login_one(struct pool *p, struct member *m, int verified, struct p11mux_err *e)
{
	struct p11mux_err why = {""};
	CK_RV rv;

	if (m->token.flags & CKF_USER_PIN_LOCKED) {
		exclude(p, m, "user PIN locked");
		return 0;
	}
	if (pin_risky(m) && !verified) {
		exclude(p, m,
		        "PIN retry counter low and the PIN not yet confirmed by another member");
		log_error("pool \"%s\": member %s: to reset its counter, log in once on that "
		          "device alone with the right PIN (pkcs11-tool --module %s --token-label "
		          "\"%s\" --login --test), or unblock it with the SO PIN (sc-hsm-tool "
		          "--unlock-pin); then restart p11muxd",
		          p->label, m->label, m->cfg->module != NULL ? m->cfg->module : "MODULE",
		          m->label);
		return 0;
	}
	rv = member_login(m, &why);
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE) {
		struct p11mux_err save = {""};

		p->pin_refused = 1;
		if (guard_refuse_pin(&p->guard, &save) != 0)
			log_error("pool \"%s\": the refused PIN is not remembered: %s", p->label,
			          save.msg);
		return p11mux_err_set(e,
		                      "pool \"%s\": member %s rejected the PIN from %s (%s); not "
		                      "tried on any other member, to spare their retry counters, "
		                      "nor at the next start until %s holds another PIN",
		                      p->label, m->label, p->cfg->pin_file, p11mux_rv_name(rv),
		                      p->cfg->pin_file);
	}
	if (rv == CKR_PIN_LOCKED) {
		exclude(p, m, "user PIN locked");
		return 0;
	}
	if (rv != CKR_OK) {
		snprintf(m->reason, sizeof(m->reason), "login: %s", why.msg);
		log_error("pool \"%s\": member %s: login failed: %s; will be probed", p->label,
		          m->label, why.msg);
		member_close(m);
		return 0;
	}
	m->state = MEMBER_UP;
	m->reason[0] = '\0';
	guard_pin_accepted(&p->guard);
	log_info("pool \"%s\": member %s (serial %s) logged in", p->label, m->label, m->serial);
	return 1;
}

/* A wrong PIN tried on every member would burn a retry on each (three lock a SmartCard-HSM).
 * So the PIN is first tried on one member whose counter is intact; only once a device has
 * accepted it are the others logged in. */
static int
login_members(struct pool *p, struct p11mux_err *e)
{
	size_t k, pass, nup = 0;
	int r;

	for (pass = 0; pass < 2; pass++)
		for (k = 0; k < p->nmembers; k++) {
			struct member *m = &p->members[k];

			if (m->link.pid <= 0 || pin_risky(m) != (int)pass ||
			    m->state == MEMBER_UP || m->state == MEMBER_EXCLUDED)
				continue;
			if ((r = login_one(p, m, nup > 0, e)) < 0)
				return -1;
			nup += (size_t)r;
		}
	if (nup == 0)
		return p11mux_err_set(e, "pool \"%s\": no member could be logged in", p->label);
	return 0;
}

/* --- the pool's view --- */

/* Reads the objects of the members that are up and builds the view from them. */
static int
read_view(struct pool *p, struct p11mux_err *e)
{
	struct view_member vm[P11MUX_POOL_MAX_MEMBERS];
	struct mobject **all = NULL;
	size_t nall = 0, i;
	int r = -1;

	for (i = 0; i < p->nmembers; i++) {
		vm[i].label = p->members[i].label;
		vm[i].up = p->members[i].state == MEMBER_UP;
		if (vm[i].up && member_read_objects(&p->members[i], &all, &nall, e) != 0)
			goto out;
	}
	if (mobjects_fingerprint(all, nall) != 0) {
		p11mux_err_set(e, "out of memory");
		goto out;
	}
	p->view.slot = p->slot.id;
	p->view.label = p->label;
	p->view.nmembers = p->nmembers;
	r = view_build(&p->view, vm, all, nall, e);
out:
	for (i = 0; i < nall; i++)
		mobject_free(all[i]);
	free(all);
	return r;
}

/* --- life --- */

int
pool_open(struct pool *p, size_t index, const struct pool_config *cfg, const char *exe,
          int use_syslog, struct p11mux_err *e)
{
	const char **labels = NULL;
	size_t i, nlabels = 0;
	int r = -1;

	memset(p, 0, sizeof(*p));
	p->index = index;
	p->cfg = cfg;
	p->exe = exe;
	p->use_syslog = use_syslog;
	p->plain.module = cfg->module;
	p->policy = cfg->scheduler == 1 ? SCHED_ROUND_ROBIN : SCHED_LEAST_LOADED;
	pthread_mutex_init(&p->quarantine.lock, NULL);
	if (find_members(p, e) != 0 || pick_label(p, e) != 0)
		return -1;
	/* The PIN file may name the pool's label or a member's. */
	if ((labels = calloc(p->nmembers + 1, sizeof(*labels))) == NULL)
		return p11mux_err_set(e, "out of memory");
	labels[nlabels++] = p->label;
	for (i = 0; i < p->nmembers; i++)
		labels[nlabels++] = p->members[i].label;
	if (pin_read(cfg->pin_file, labels, nlabels, &p->pin, &p->pinlen, e) != 0 ||
	    guard_open(&p->guard, cfg->state_dir, p->label, cfg->pin_max_failures, p->pin,
	               p->pinlen, e) != 0)
		goto out;
	/* Before any device sees the PIN: one that a member refused is not tried again. */
	if (guard_pin_refused(&p->guard)) {
		p->pin_refused = 1;
		p11mux_err_set(e,
		               "pool \"%s\": the PIN in %s was refused by a member at an earlier "
		               "start; no device is tried with it again until the file holds "
		               "another PIN (%s remembers it)",
		               p->label, cfg->pin_file, p->guard.refused_path);
		goto out;
	}
	if (login_members(p, e) != 0)
		goto out;
	build_slot_info(p);
	if (read_view(p, e) != 0)
		goto out;
	if (build_mechanisms(p) != 0) {
		p11mux_err_set(e, "out of memory");
		goto out;
	}
	log_info(
	        "pool \"%s\": slot %lu, %zu member%s, %zu object%s, %lu mechanism%s, %s scheduling",
	        p->label, p->slot.id, p->nmembers, p->nmembers == 1 ? "" : "s", p->view.nobjects,
	        p->view.nobjects == 1 ? "" : "s", p->slot.nmechs, p->slot.nmechs == 1 ? "" : "s",
	        p->policy == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded");
	r = 0;
out:
	free(labels);
	return r;
}

int
pool_start(struct pool *p)
{
	size_t i;

	for (i = 0; i < p->nmembers; i++) {
		struct member *m = &p->members[i];

		if (m->state == MEMBER_DOWN) {
			if (m->reason[0] == '\0')
				snprintf(m->reason, sizeof(m->reason), "not up");
			log_warn("pool \"%s\": member %s down: %s; operations go to the other "
			         "members",
			         p->label, m->label, m->reason);
		}
		if (member_start(m) != 0)
			return -1;
	}
	return 0;
}

void
pool_close(struct pool *p)
{
	size_t i;

	/* Every member's thread ends its helper at once, not one after the other. */
	for (i = 0; i < p->nmembers; i++)
		member_stop_begin(&p->members[i]);
	for (i = 0; i < p->nmembers; i++)
		member_stop(&p->members[i]);
	free(p->members);
	view_free(&p->view);
	free(p->slot.mechs);
	free(p->slot.infos);
	pin_free(p->pin);
	guard_close(&p->guard);
	if (p->cfg != NULL)
		pthread_mutex_destroy(&p->quarantine.lock);
	memset(p, 0, sizeof(*p));
}

const struct pobject *
pool_object(const struct pool *p, CK_OBJECT_HANDLE h)
{
	return view_object(&p->view, h);
}

void
pool_log_stats(const struct pool *p)
{
	size_t i;

	for (i = 0; i < p->nmembers; i++) {
		struct member *m = &p->members[i];

		p11mux_lock(&m->lock);
		log_info("pool \"%s\": member %s: %llu operation%s, %llu device error%s, %llu "
		         "failover%s, %llu helper%s, %s",
		         p->label, m->label, (unsigned long long)m->done, m->done == 1 ? "" : "s",
		         (unsigned long long)m->errors, m->errors == 1 ? "" : "s",
		         (unsigned long long)m->failovers, m->failovers == 1 ? "" : "s",
		         (unsigned long long)m->helpers, m->helpers == 1 ? "" : "s",
		         member_state_name(m->state));
		p11mux_unlock(&m->lock);
	}
}
