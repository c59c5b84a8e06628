#include "live.h"
#include "control.h"
#include "log.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a rescan waits for the members' answers, at least (each reads its objects with
 * one call per object, each bounded by op_timeout_ms). */
#define RESCAN_WAIT_MIN_MS 30000

/* --- rescan --- */

struct rescan_row {
	struct member *m;
	uint64_t ticket; /* 0: not up */
	int r;           /* member_rescan_wait's */
	struct view_change chg;
	char why[96];
};

/* The members to rescan (every one that is not retired, or the one named) into rows; how
 * many. */
static size_t
pick_rows(struct daemon *d, const char *name, struct rescan_row *rows)
{
	size_t i, k, n = 0, np = daemon_npools(d);

	for (i = 0; i < np; i++) {
		struct pool *p = &d->pools[i];
		size_t nm = pool_nmembers(p);

		for (k = 0; k < nm; k++)
			if (!member_retired(&p->members[k]) &&
			    (name[0] == '\0' || member_is(&p->members[k], name)))
				rows[n++].m = &p->members[k];
	}
	return n;
}

/* Pools of every token present: the tokens that came since are added as members. */
static void
find_new_tokens(struct daemon *d, char *notes, size_t len)
{
	struct p11mux_err e = {""};
	size_t i, added, used = strlen(notes), np = daemon_npools(d);

	for (i = 0; i < np && used < len; i++) {
		if (pool_find_new(&d->pools[i], &added, &e) != 0)
			snprintf(notes + used, len - used, "pool \"%s\": %s\n", d->pools[i].label,
			         e.msg);
		else if (added > 0)
			snprintf(notes + used, len - used,
			         "pool \"%s\": %zu new token%s, added as member%s\n",
			         d->pools[i].label, added, added == 1 ? "" : "s",
			         added == 1 ? "" : "s");
		used = strlen(notes);
	}
}

static void
rescan_row_out(struct out *o, struct rescan_row *row)
{
	char label[33], serial[17];
	size_t nobjects;

	member_names(row->m, label, serial);
	view_objects(&row->m->pool->view, &nobjects);
	if (row->r == 0)
		out_printf(
		        o,
		        "member %s: holds %zu of the pool's %zu objects (%zu new to the pool, %zu "
		        "withdrawn, %zu back)\n",
		        label, row->chg.held, nobjects, row->chg.added, row->chg.withdrawn,
		        row->chg.revived);
	else if (row->r > 0)
		out_printf(o,
		           "member %s: not up (one that is down is probed now); its objects are "
		           "read when it joins\n",
		           label);
	else
		out_printf(o, "member %s: error: %s\n", label, row->why);
}

/* One line per pool: its objects, the withdrawn ones, the view's version. */
static void
pools_out(struct daemon *d, struct out *o)
{
	size_t i, k, n, gone, np = daemon_npools(d);

	for (i = 0; i < np; i++) {
		struct pobject *const *objects = view_objects(&d->pools[i].view, &n);

		for (k = 0, gone = 0; k < n; k++)
			gone += (size_t)pobject_withdrawn(objects[k]);
		out_printf(o, "pool \"%s\": %zu objects, %zu withdrawn; view version %llu\n",
		           d->pools[i].label, n - gone, gone,
		           (unsigned long long)view_version(&d->pools[i].view));
	}
}

void
live_rescan(struct daemon *d, const char *name, struct out *o)
{
	struct rescan_row *rows;
	char notes[1024] = "";
	uint64_t deadline;
	unsigned wait_ms = RESCAN_WAIT_MIN_MS;
	size_t i, n, failed = 0;

	if (name[0] == '\0')
		find_new_tokens(d, notes, sizeof(notes));
	if ((rows = calloc(P11MUX_MAX_POOLS * P11MUX_POOL_MAX_MEMBERS, sizeof(*rows))) == NULL) {
		out_printf(o, "error: out of memory\n");
		return;
	}
	if ((n = pick_rows(d, name, rows)) == 0 || (name[0] != '\0' && n > 1)) {
		out_printf(o,
		           n == 0 ? "error: no member \"%s\"\n"
		                  : "error: \"%s\" names several members; use a serial number\n",
		           name);
		free(rows);
		return;
	}
	for (i = 0; i < n; i++) {
		rows[i].ticket = member_rescan_ask(rows[i].m);
		if (rows[i].m->pool->cfg->op_timeout_ms * 4 > wait_ms)
			wait_ms = rows[i].m->pool->cfg->op_timeout_ms * 4;
	}
	deadline = p11mux_now_ns() + (uint64_t)wait_ms * 1000000u;
	for (i = 0; i < n; i++) {
		rows[i].r = rows[i].ticket == 0
		                    ? 1
		                    : member_rescan_wait(rows[i].m, rows[i].ticket, deadline,
		                                         &rows[i].chg, rows[i].why,
		                                         sizeof(rows[i].why));
		failed += rows[i].r < 0;
	}
	if (failed > 0)
		out_printf(o, "error: the rescan of %zu member%s failed\n", failed,
		           failed == 1 ? "" : "s");
	else
		out_printf(o, "ok\n");
	out_printf(o, "%s", notes);
	for (i = 0; i < n; i++)
		rescan_row_out(o, &rows[i]);
	pools_out(d, o);
	free(rows);
}

/* --- reload --- */

static int
same_str(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int
same_ids(const void *a, size_t na, const void *b, size_t nb, size_t size)
{
	return na == nb && (na == 0 || memcmp(a, b, na * size) == 0);
}

static int
same_member(const struct member_config *a, const struct member_config *b)
{
	size_t i;

	if (!same_str(a->token, b->token) || !same_str(a->module, b->module) || a->nenv != b->nenv)
		return 0;
	for (i = 0; i < a->nenv; i++)
		if (!same_str(a->env[i], b->env[i]))
			return 0;
	return 1;
}

/* Whether list (n entries) has mc. */
static int
listed(const struct member_config *list, size_t n, const struct member_config *mc)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (same_member(&list[i], mc))
			return 1;
	return 0;
}

/* What a pool cannot change without a restart: the first such key that differs, or NULL. */
static const char *
fixed_pool_key(const struct pool_config *a, const struct pool_config *b)
{
	if (!same_str(a->label, b->label))
		return "label";
	if (!same_str(a->module, b->module))
		return "module";
	if (!same_str(a->pin_file, b->pin_file))
		return "pin_file";
	if (a->slot_id != b->slot_id)
		return "slot_id";
	if (a->workers_per_member != b->workers_per_member)
		return "workers_per_member";
	if (a->pin_max_failures != b->pin_max_failures)
		return "pin_max_failures";
	if ((a->members == NULL) != (b->members == NULL))
		return "members (a list instead of every token present, or the other way)";
	return NULL;
}

/* Why the new configuration b needs a restart, in why; 0 when a reload can apply it. */
static int
needs_restart(struct daemon *d, const struct config *b, char *why, size_t n)
{
	const struct config *a = d->cfg;
	const char *key = NULL;
	size_t i, np = daemon_npools(d);

	if (!same_str(a->socket, b->socket))
		key = "socket";
	else if (!same_str(a->socket_group, b->socket_group))
		key = "socket_group";
	else if (!same_ids(a->allowed_uids, a->nallowed_uids, b->allowed_uids, b->nallowed_uids,
	                   sizeof(uid_t)) ||
	         !same_ids(a->allowed_gids, a->nallowed_gids, b->allowed_gids, b->nallowed_gids,
	                   sizeof(gid_t)))
		key = "allowed_users or allowed_groups";
	else if (!same_str(a->control_socket, b->control_socket))
		key = "control_socket";
	else if (!same_ids(a->control_uids, a->ncontrol_uids, b->control_uids, b->ncontrol_uids,
	                   sizeof(uid_t)) ||
	         !same_ids(a->control_gids, a->ncontrol_gids, b->control_gids, b->ncontrol_gids,
	                   sizeof(gid_t)))
		key = "control_allowed_users or control_allowed_groups";
	else if (!same_str(a->state_dir, b->state_dir))
		key = "state_dir";
	else if (memcmp(&a->limits, &b->limits, sizeof(a->limits)) != 0)
		key = "a connection or session object limit";
	if (key != NULL) {
		snprintf(why, n, "%s changed", key);
		return 1;
	}
	if (b->npools < np) {
		snprintf(why, n, "pool \"%s\" was removed", d->pools[b->npools].label);
		return 1;
	}
	if (b->npools > P11MUX_MAX_POOLS) {
		snprintf(why, n, "more than %d pools", P11MUX_MAX_POOLS);
		return 1;
	}
	for (i = 0; i < np; i++)
		if ((key = fixed_pool_key(d->pools[i].cfg, &b->pools[i])) != NULL) {
			snprintf(why, n, "pool at line %d: %s changed", b->pools[i].line, key);
			return 1;
		}
	return 0;
}

/* The member of p configured as mc (the token it names, with its own module or not). */
static struct member *
configured_member(struct pool *p, const struct member_config *mc)
{
	size_t k, nm = pool_nmembers(p);

	for (k = 0; k < nm; k++) {
		struct member *m = &p->members[k];
		int plain = mc->module == NULL && mc->env == NULL;

		if (member_retired(m))
			continue;
		if (plain ? m->cfg == &p->plain && member_is(m, mc->token)
		          : m->cfg != &p->plain && same_member(m->cfg, mc))
			return m;
	}
	return NULL;
}

#define CHANGED(key, fmt)                                                                          \
	do {                                                                                       \
		if (a->key != b->key) {                                                            \
			out_printf(o, "pool \"%s\": " #key " " fmt " -> " fmt "\n", p->label,      \
			           a->key, b->key);                                                \
			changes++;                                                                 \
		}                                                                                  \
	} while (0)

/* Applies a pool's new scheduling and health keys, and its members added and removed;
 * returns how many changes it wrote. */
static unsigned
reload_pool(struct pool *p, const struct pool_config *b, struct out *o)
{
	const struct pool_config *a = p->cfg;
	struct p11mux_err e = {""};
	unsigned changes = 0;
	struct member *m;
	size_t k, gone;

	CHANGED(scheduler, "%d");
	CHANGED(op_timeout_ms, "%u");
	CHANGED(max_attempts, "%u");
	CHANGED(probe_interval_ms, "%u");
	CHANGED(probe_max_ms, "%u");
	/* Read without a lock by every thread (pool_cfg()); the old configuration stays
	 * allocated (live_reload keeps it). */
	__atomic_store_n(&p->cfg, b, __ATOMIC_RELEASE);
	__atomic_store_n(&p->policy, b->scheduler == 1 ? SCHED_ROUND_ROBIN : SCHED_LEAST_LOADED,
	                 __ATOMIC_RELAXED);
	for (k = 0; k < a->nmembers; k++) {
		if (listed(b->members, b->nmembers, &a->members[k]))
			continue;
		/* Every member the name gave (a label may name several tokens). */
		while ((m = configured_member(p, &a->members[k])) != NULL) {
			member_retire(m, a->op_timeout_ms + 1000);
			gone = view_member_gone(&p->view, m->index);
			out_printf(
			        o,
			        "pool \"%s\": member %s removed; %zu object%s withdrawn with it\n",
			        p->label, m->label, gone, gone == 1 ? "" : "s");
			changes++;
		}
	}
	for (k = 0; k < b->nmembers; k++) {
		const struct member_config *mc = &b->members[k];

		if (listed(a->members, a->nmembers, mc))
			continue;
		if (pool_add_live(p, mc->token, "", 0,
		                  mc->module == NULL && mc->env == NULL ? &p->plain : mc, &e) == 0)
			out_printf(o, "pool \"%s\": member %s added; probing it\n", p->label,
			           mc->token);
		else
			out_printf(o, "pool \"%s\": member %s: error: %s\n", p->label, mc->token,
			           e.msg);
		changes++;
	}
	return changes;
}

/* Opens the pools the new configuration adds at its end. 0, or -1 with the error written
 * (the pools opened are closed again then). */
static int
open_new_pools(struct daemon *d, struct config *c, struct out *o)
{
	struct p11mux_err e = {""};
	size_t i, k, first = daemon_npools(d);

	for (i = first; i < c->npools; i++) {
		if (pool_open(&d->pools[i], i, &c->pools[i], "/proc/self/exe", d->use_syslog, &e) !=
		            0 ||
		    pool_start(&d->pools[i]) != 0) {
			out_printf(o, "error: reload: pool at line %d: %s; nothing changed\n",
			           c->pools[i].line, e.msg[0] ? e.msg : "cannot start its threads");
			for (k = first; k <= i; k++)
				pool_close(&d->pools[k]);
			return -1;
		}
	}
	return 0;
}

void
live_reload(struct daemon *d, const char *who, struct out *o)
{
	struct p11mux_err e = {""};
	struct config *c, **kept;
	const struct config *last;
	char why[160];
	size_t i, np = daemon_npools(d);
	unsigned changes = 0;

	if ((c = config_load(d->cfg->path, &e)) == NULL) {
		out_printf(o, "error: reload: %s; nothing changed\n", e.msg);
		log_error("reload (%s): %s; nothing changed", who, e.msg);
		return;
	}
	if (needs_restart(d, c, why, sizeof(why))) {
		out_printf(o,
		           "error: reload refused: %s; that needs a restart of p11muxd; nothing "
		           "changed\n",
		           why);
		log_error("reload (%s) refused: %s; that needs a restart", who, why);
		config_free(c);
		return;
	}
	if ((kept = realloc(d->reloaded, (d->nreloaded + 1) * sizeof(*kept))) == NULL ||
	    open_new_pools(d, c, o) != 0) {
		if (kept == NULL)
			out_printf(o, "error: out of memory\n");
		else
			d->reloaded = kept;
		config_free(c);
		return;
	}
	d->reloaded = kept;
	last = d->nreloaded > 0 ? d->reloaded[d->nreloaded - 1] : d->cfg;
	out_printf(o, "ok\n");
	for (i = 0; i < np; i++)
		changes += reload_pool(&d->pools[i], &c->pools[i], o);
	for (i = np; i < c->npools; i++, changes++)
		out_printf(o, "pool \"%s\" added: slot %lu\n", d->pools[i].label,
		           d->pools[i].slot.id);
	__atomic_store_n(&d->npools, c->npools, __ATOMIC_RELEASE);
	if (c->log_level != last->log_level && !d->debug) {
		p11mux_log_set_level(c->log_level);
		out_printf(o, "log_level changed\n");
		changes++;
	}
	if (changes == 0)
		out_printf(o, "nothing changed\n");
	/* The pools point into it now; it stays until the daemon ends. */
	d->reloaded[d->nreloaded++] = c;
	log_info("reload (%s): %s applied", who, c->path);
}
