/*
 * The control socket, for p11muxctl: one command per connection, one line in ("status",
 * "status json", "keys", "keys json", "metrics", "drain MEMBER", "resume MEMBER"), and the
 * answer out: a first line "ok", "inconsistent" or "error: ...", then the body. Reading
 * commands are for root, the daemon's user and control_allowed_users/groups; drain and
 * resume for root and the daemon's user only. Served by a thread of its own, several
 * connections at once, each with short time-outs; no command touches a device.
 */
#include "control.h"
#include "live.h"
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A growable text buffer for answers. */
struct out {
	char *s;
	size_t len, cap;
	int failed;
};

void
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *ns;

	if (o->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->s != NULL ? o->s + o->len : NULL,
		              o->s != NULL ? o->cap - o->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if (o->s != NULL && o->len + (size_t)n < o->cap) {
			o->len += (size_t)n;
			return;
		}
		if ((ns = realloc(o->s, o->cap * 2 + (size_t)n + 256)) == NULL) {
			o->failed = 1;
			return;
		}
		o->s = ns;
		o->cap = o->cap * 2 + (size_t)n + 256;
	}
}

/* A JSON string (quotes included). */
static void
out_json_str(struct out *o, const char *s)
{
	out_printf(o, "\"");
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			out_printf(o, "\\%c", c);
		else if (c < 0x20)
			out_printf(o, "\\u%04x", c);
		else
			out_printf(o, "%c", c);
	}
	out_printf(o, "\"");
}

/* A Prometheus label value (without quotes). */
static void
out_prom_str(struct out *o, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			out_printf(o, "\\%c", *s);
		else if (*s == '\n')
			out_printf(o, "\\n");
		else
			out_printf(o, "%c", *s);
	}
}

int
control_listen(struct daemon *d)
{
	if ((d->control_fd = server_bind(d->cfg->control_socket, d->cfg->socket_group, 16)) < 0)
		return -1;
	lograte_init(&d->ctl_refused, "control connections refused");
	lograte_init(&d->ctl_dropped, "control connections closed for a time-out");
	log_info("control socket %s", d->cfg->control_socket);
	return 0;
}

static double
seconds_since(uint64_t ns)
{
	return ns == 0 ? 0 : (double)(p11mux_now_ns() - ns) / 1e9;
}

/* Connections logged in to the pool. */
static unsigned
pool_clients(struct daemon *d, const struct pool *p)
{
	struct client *c;
	unsigned n = 0;

	p11mux_lock(&d->lock);
	for (c = d->clients; c != NULL; c = c->next)
		if (__atomic_load_n(&c->logged_in[p->index], __ATOMIC_RELAXED))
			n++;
	p11mux_unlock(&d->lock);
	return n;
}

/* A snapshot of one member, taken under its lock. */
struct msnap {
	char label[33], serial[17], reason[160], last_error[64];
	enum member_state state;
	double state_s, service_ms, p50, p90, p99, last_error_s;
	unsigned running, queued;
	uint64_t done, errors, failovers, recent, helpers;
	uint64_t lat_total[LAT_NBUCKETS];
	double lat_sum_s;
	long helper_pid; /* 0: no helper */
};

static void
snapshot(struct member *m, struct msnap *s)
{
	p11mux_lock(&m->lock);
	memcpy(s->label, m->label, sizeof(s->label));
	memcpy(s->serial, m->serial, sizeof(s->serial));
	memcpy(s->reason, m->reason, sizeof(s->reason));
	memcpy(s->last_error, m->last_error, sizeof(s->last_error));
	s->state = m->state;
	s->state_s = seconds_since(m->since_ns);
	s->service_ms = m->service_ms;
	s->running = m->running;
	s->queued = m->queued;
	s->done = m->done;
	s->errors = m->errors;
	s->failovers = m->failovers;
	s->helpers = m->helpers;
	s->helper_pid = (long)m->helper_pid;
	s->p50 = member_latency_locked(m, 0.50, 10, &s->recent);
	s->p90 = member_latency_locked(m, 0.90, 10, NULL);
	s->p99 = member_latency_locked(m, 0.99, 10, NULL);
	s->last_error_s = m->last_error[0] ? seconds_since(m->last_error_ns) : -1;
	memcpy(s->lat_total, m->lat_total, sizeof(s->lat_total));
	s->lat_sum_s = m->lat_sum_s;
	p11mux_unlock(&m->lock);
}

static void
fmt_duration(char *dst, size_t n, double s)
{
	unsigned long t = (unsigned long)s;

	if (t < 60)
		snprintf(dst, n, "%lus", t);
	else if (t < 3600)
		snprintf(dst, n, "%lum%02lus", t / 60, t % 60);
	else if (t < 86400)
		snprintf(dst, n, "%luh%02lum", t / 3600, (t / 60) % 60);
	else
		snprintf(dst, n, "%lud%02luh", t / 86400, (t / 3600) % 24);
}

static void
fmt_ms(char *dst, size_t n, double ms)
{
	if (ms < 0)
		snprintf(dst, n, "-");
	else if (ms < 10)
		snprintf(dst, n, "%.1fms", ms);
	else if (ms < 10000)
		snprintf(dst, n, "%.0fms", ms);
	else
		snprintf(dst, n, "%.1fs", ms / 1000);
}

static void
state_text(const struct msnap *s, char *dst, size_t n)
{
	if ((s->state == MEMBER_DOWN || s->state == MEMBER_EXCLUDED) && s->reason[0] != '\0')
		snprintf(dst, n, "%s: %s", member_state_name(s->state), s->reason);
	else
		snprintf(dst, n, "%s", member_state_name(s->state));
}

/* "PIN ok", "PIN 2 wrong in a row", "PIN LOCKED (p11muxctl unlock-pin)". */
static const char *
pin_state(struct pool *p, char *dst, size_t n)
{
	int locked;
	unsigned f = guard_failures(&p->guard, &locked);

	if (locked)
		snprintf(dst, n, "PIN LOCKED after %u wrong (p11muxctl unlock-pin)", f);
	else if (f > 0)
		snprintf(dst, n, "PIN %u wrong in a row", f);
	else
		snprintf(dst, n, "PIN ok");
	return dst;
}

#define NCOLS 14

static void
status_text(struct daemon *d, struct out *o)
{
	static const char *head[NCOLS] = {"MEMBER",   "SERIAL", "STATE", "FOR",       "HELPER",
	                                  "INFLIGHT", "QUEUED", "DONE",  "ERRORS",    "FAILOVERS",
	                                  "SERVICE",  "P50",    "P99",   "LAST ERROR"};
	/* Left-aligned: text columns; the others are numbers, right-aligned. */
	static const int left[NCOLS] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	char cell[P11MUX_POOL_MAX_MEMBERS + 1][NCOLS][180], pin[96];
	size_t i, k, w[NCOLS];
	struct msnap s;
	uint64_t recent;

	for (i = 0; i < daemon_npools(d); i++) {
		struct pool *p = &d->pools[i];
		/* Once: a reload may add a member meanwhile, whose rows are not filled. */
		size_t nm = pool_nmembers(p);

		recent = 0;
		for (k = 0; k < NCOLS; k++)
			snprintf(cell[0][k], sizeof(cell[0][k]), "%s", head[k]);
		for (k = 0; k < nm; k++) {
			char(*c)[180] = cell[k + 1];
			char dur[32];

			snapshot(&p->members[k], &s);
			recent += s.recent;
			fmt_duration(dur, sizeof(dur), s.state_s);
			snprintf(c[0], 180, "%s", s.label);
			snprintf(c[1], 180, "%s", s.serial[0] ? s.serial : "-");
			state_text(&s, c[2], 180);
			snprintf(c[3], 180, "%s", dur);
			if (s.helper_pid > 0)
				snprintf(c[4], 180, "%ld", s.helper_pid);
			else
				snprintf(c[4], 180, "-");
			snprintf(c[5], 180, "%u", s.running);
			snprintf(c[6], 180, "%u", s.queued);
			snprintf(c[7], 180, "%llu", (unsigned long long)s.done);
			snprintf(c[8], 180, "%llu", (unsigned long long)s.errors);
			snprintf(c[9], 180, "%llu", (unsigned long long)s.failovers);
			fmt_ms(c[10], 180, s.done > 0 ? s.service_ms : -1);
			fmt_ms(c[11], 180, s.p50);
			fmt_ms(c[12], 180, s.p99);
			if (s.last_error_s >= 0) {
				fmt_duration(dur, sizeof(dur), s.last_error_s);
				snprintf(c[13], 180, "%s (%s ago)", s.last_error, dur);
			} else {
				snprintf(c[13], 180, "-");
			}
		}
		out_printf(o,
		           "pool \"%s\"  slot %lu  clients %u  %.1f ops/s (last 10 s)  %s  %s  "
		           "session objects %zu\n",
		           p->label, p->slot.id, pool_clients(d, p), (double)recent / 10,
		           pool_policy(p) == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded",
		           pin_state(p, pin, sizeof(pin)), apps_count_pool(&d->apps, p, SIZE_MAX));
		for (k = 0; k < NCOLS; k++) {
			size_t r;

			w[k] = 0;
			for (r = 0; r <= nm; r++)
				if (strlen(cell[r][k]) > w[k])
					w[k] = strlen(cell[r][k]);
		}
		for (size_t r = 0; r <= nm; r++) {
			for (k = 0; k < NCOLS; k++) {
				if (k == NCOLS - 1)
					out_printf(o, "%s", cell[r][k]);
				else if (left[k])
					out_printf(o, "%-*s  ", (int)w[k], cell[r][k]);
				else
					out_printf(o, "%*s  ", (int)w[k], cell[r][k]);
			}
			out_printf(o, "\n");
		}
		if (i + 1 < daemon_npools(d))
			out_printf(o, "\n");
	}
}

/* The applications connected now (those that said CLIENT: every shim of version 3), sorted
 * by operations per second. */
static int
by_rate(const void *a, const void *b)
{
	const struct app_info *x = a, *y = b;

	return x->ops_per_s < y->ops_per_s ? 1 : x->ops_per_s > y->ops_per_s ? -1 : 0;
}

static void
clients_text(struct daemon *d, struct out *o)
{
	struct app_info *v;
	size_t n, i;

	if (apps_list(&d->apps, &v, &n) != 0)
		return;
	qsort(v, n, sizeof(*v), by_rate);
	out_printf(o, "\n%zu client%s\n", n, n == 1 ? "" : "s");
	if (n > 0)
		out_printf(o, "%8s  %8s  %-16s  %5s  %8s  %10s  %7s\n", "UID", "PID", "PROGRAM",
		           "CONNS", "OPS/S", "OPS", "OBJECTS");
	for (i = 0; i < n; i++)
		out_printf(o, "%8lu  %8ld  %-16s  %5u  %8.1f  %10llu  %7zu\n",
		           (unsigned long)v[i].uid, (long)v[i].pid, v[i].comm, v[i].conns,
		           v[i].ops_per_s, (unsigned long long)v[i].ops, v[i].objects);
	free(v);
}

static void
clients_json(struct daemon *d, struct out *o)
{
	struct app_info *v;
	size_t n, i;

	if (apps_list(&d->apps, &v, &n) != 0) {
		out_printf(o, "[]");
		return;
	}
	qsort(v, n, sizeof(*v), by_rate);
	out_printf(o, "[");
	for (i = 0; i < n; i++) {
		out_printf(o, "%s{\"uid\":%lu,\"pid\":%ld,\"program\":", i ? "," : "",
		           (unsigned long)v[i].uid, (long)v[i].pid);
		out_json_str(o, v[i].comm);
		out_printf(o,
		           ",\"connections\":%u,\"ops_per_s\":%.1f,\"operations\":%llu,"
		           "\"session_objects\":%zu}",
		           v[i].conns, v[i].ops_per_s, (unsigned long long)v[i].ops, v[i].objects);
	}
	out_printf(o, "]");
	free(v);
}

static void
out_num(struct out *o, double v)
{
	if (v < 0)
		out_printf(o, "null");
	else
		out_printf(o, "%.3f", v);
}

static void
status_json(struct daemon *d, struct out *o)
{
	struct msnap s;
	size_t i, k;
	uint64_t recent;
	unsigned failures;
	int locked;

	out_printf(o, "{\"version\":1,\"pools\":[");
	for (i = 0; i < daemon_npools(d); i++) {
		struct pool *p = &d->pools[i];

		out_printf(o, "%s{\"label\":", i ? "," : "");
		out_json_str(o, p->label);
		failures = guard_failures(&p->guard, &locked);
		out_printf(o,
		           ",\"slot\":%lu,\"clients\":%u,\"scheduler\":\"%s\",\"pin_failures\":%u,"
		           "\"pin_locked\":%s,\"session_objects\":%zu,\"members\":[",
		           p->slot.id, pool_clients(d, p),
		           pool_policy(p) == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded",
		           failures, locked ? "true" : "false",
		           apps_count_pool(&d->apps, p, SIZE_MAX));
		recent = 0;
		for (k = 0; k < pool_nmembers(p); k++) {
			snapshot(&p->members[k], &s);
			recent += s.recent;
			out_printf(o, "%s{\"label\":", k ? "," : "");
			out_json_str(o, s.label);
			out_printf(o, ",\"serial\":");
			out_json_str(o, s.serial);
			out_printf(o, ",\"session_objects\":%zu", apps_count_pool(&d->apps, p, k));
			out_printf(o, ",\"state\":\"%s\",\"reason\":", member_state_name(s.state));
			out_json_str(o, s.reason);
			out_printf(o,
			           ",\"state_seconds\":%.3f,\"in_flight\":%u,\"queued\":%u,"
			           "\"done\":%llu,\"errors\":%llu,\"failovers\":%llu,\"helper_"
			           "pid\":%ld,"
			           "\"helpers_started\":%llu,\"service_ms\":",
			           s.state_s, s.running, s.queued, (unsigned long long)s.done,
			           (unsigned long long)s.errors, (unsigned long long)s.failovers,
			           s.helper_pid, (unsigned long long)s.helpers);
			out_num(o, s.done > 0 ? s.service_ms : -1);
			out_printf(o, ",\"latency_p50_ms\":");
			out_num(o, s.p50);
			out_printf(o, ",\"latency_p90_ms\":");
			out_num(o, s.p90);
			out_printf(o, ",\"latency_p99_ms\":");
			out_num(o, s.p99);
			out_printf(o, ",\"last_error\":");
			if (s.last_error_s >= 0) {
				out_json_str(o, s.last_error);
				out_printf(o, ",\"last_error_seconds_ago\":%.3f}", s.last_error_s);
			} else {
				out_printf(o, "null,\"last_error_seconds_ago\":null}");
			}
		}
		out_printf(o, "],\"ops_per_s\":%.1f}", (double)recent / 10);
	}
	out_printf(o, "],\"clients\":");
	clients_json(d, o);
	out_printf(o, "}\n");
}

static const char *
key_type_name(CK_KEY_TYPE t)
{
	switch (t) {
	case CKK_RSA:
		return "RSA";
	case CKK_EC:
		return "EC";
	case CKK_EC_EDWARDS:
		return "EdDSA";
	case CKK_AES:
		return "AES";
	case CKK_DES3:
		return "DES3";
	case CKK_GENERIC_SECRET:
		return "secret";
	default:
		return "other";
	}
}

/* Size in bits: RSA modulus bits, EC field size from the point, secret key length. */
static unsigned long
key_bits(const struct pobject *o)
{
	const uint8_t *point;
	size_t i, len;

	for (i = 0; i < o->n; i++) {
		if (o->status[i] != CKR_OK)
			continue;
		if (o->attrs[i].type == CKA_MODULUS && o->ktype == CKK_RSA)
			return (unsigned long)o->attrs[i].ulValueLen * 8;
		if (o->attrs[i].type == CKA_VALUE_LEN && o->attrs[i].ulValueLen == sizeof(CK_ULONG))
			return *(CK_ULONG *)o->attrs[i].pValue * 8;
	}
	/* An uncompressed EC point 04||X||Y in a DER OCTET STRING: X is the field size. */
	if (o->ktype == CKK_EC && pobject_material(o, &point, &len)) {
		size_t hdr = len > 129 ? 3 : 2;

		if (len > hdr + 1)
			return (unsigned long)((len - hdr - 1) / 2) * 8;
	}
	return 0;
}

static int
is_key(const struct pobject *o)
{
	return o->cls == CKO_PRIVATE_KEY || o->cls == CKO_PUBLIC_KEY || o->cls == CKO_SECRET_KEY;
}

/* The key's label and ID as text. */
static void
key_names(const struct pobject *o, char *label, size_t ln, char *id, size_t idn)
{
	size_t i, k;

	label[0] = id[0] = '\0';
	for (i = 0; i < o->n; i++) {
		if (o->status[i] != CKR_OK)
			continue;
		if (o->attrs[i].type == CKA_LABEL)
			snprintf(label, ln, "%.*s", (int)o->attrs[i].ulValueLen,
			         (char *)o->attrs[i].pValue);
		if (o->attrs[i].type == CKA_ID)
			for (k = 0; k < o->attrs[i].ulValueLen && 2 * k + 2 < idn; k++)
				snprintf(id + 2 * k, idn - 2 * k, "%02x",
				         ((unsigned char *)o->attrs[i].pValue)[k]);
	}
}

/* SHA-256 of the key material (RSA modulus, EC point), hex; "-" when unknown. */
static void
fingerprint_hex(const struct pobject *o, char *dst, size_t n)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	const uint8_t *p;
	size_t len, i;

	if (!pobject_material(o, &p, &len)) {
		snprintf(dst, n, "-");
		return;
	}
	SHA256(p, len, md);
	for (i = 0; i < sizeof(md) && 2 * i + 2 < n; i++)
		snprintf(dst + 2 * i, n - 2 * i, "%02x", md[i]);
}

/* Members of the pool with holding == want, comma-separated, into dst. Members never seen
 * (no serial) are left out: nothing is known of them. */
static void
members_with(struct pool *p, const struct pobject *o, uint8_t want, char *dst, size_t n)
{
	char label[33], serial[17];
	size_t k, len = 0;

	dst[0] = '\0';
	for (k = 0; k < pool_nmembers(p); k++) {
		member_names(&p->members[k], label, serial);
		if (serial[0] == '\0' || member_retired(&p->members[k]) ||
		    __atomic_load_n(&o->holding[k], __ATOMIC_ACQUIRE) != want)
			continue;
		len += (size_t)snprintf(dst + len, len < n ? n - len : 0, "%s%s", len ? "," : "",
		                        label);
	}
	if (dst[0] == '\0')
		snprintf(dst, n, "-");
}

/* A key of the inventory, with what it is sorted by. */
struct key_row {
	const struct pobject *ob;
	char label[80], id[48];
};

static int
key_row_cmp(const void *a, const void *b)
{
	const struct key_row *x = a, *y = b;
	int r;

	if ((r = strcmp(x->label, y->label)) != 0 || (r = strcmp(x->id, y->id)) != 0)
		return r;
	return x->ob->cls < y->ob->cls ? -1 : x->ob->cls > y->ob->cls;
}

/* The pool's keys sorted by label, then ID, then class (public, private, secret); malloc'ed,
 * *n entries. NULL when out of memory. */
static struct key_row *
sorted_keys(const struct pool *p, size_t *n)
{
	size_t k, nobjects;
	struct pobject *const *objects = view_objects(&p->view, &nobjects);
	struct key_row *v = calloc(nobjects + 1, sizeof(*v));

	*n = 0;
	if (v == NULL)
		return NULL;
	for (k = 0; k < nobjects; k++) {
		if (!is_key(objects[k]) || pobject_withdrawn(objects[k]))
			continue;
		v[*n].ob = objects[k];
		key_names(v[*n].ob, v[*n].label, sizeof(v[*n].label), v[*n].id, sizeof(v[*n].id));
		(*n)++;
	}
	qsort(v, *n, sizeof(*v), key_row_cmp);
	return v;
}

/* Writes the key inventory; returns 1 when some member lacks a key or holds another one. */
static int
keys_out(struct daemon *d, struct out *o, int json)
{
	char fp[72], have[512], lack[512], diff[512];
	int inconsistent = 0, first = 1;
	struct key_row *rows;
	size_t i, k, nrows;

	if (json)
		out_printf(o, "{\"version\":1,\"keys\":[");
	for (i = 0; i < daemon_npools(d); i++) {
		struct pool *p = &d->pools[i];

		if (!json)
			out_printf(o, "%spool \"%s\"\n%-40s %-6s %-5s %5s  %-16s  %-20s %-20s %s\n",
			           i ? "\n" : "", p->label, "KEY", "ID", "TYPE", "BITS",
			           "SHA-256 (start)", "HELD BY", "LACKING", "DIFFERENT KEY");
		/* Out of memory: an inventory that cannot be complete is not a consistent one. */
		if ((rows = sorted_keys(p, &nrows)) == NULL)
			inconsistent = 1;
		for (k = 0; k < nrows; k++) {
			const struct pobject *ob = rows[k].ob;
			const char *label = rows[k].label, *id = rows[k].id;
			char name[128];

			fingerprint_hex(ob, fp, sizeof(fp));
			members_with(p, ob, HOLD_SAME, have, sizeof(have));
			members_with(p, ob, HOLD_LACKS, lack, sizeof(lack));
			members_with(p, ob, HOLD_DIFFERENT, diff, sizeof(diff));
			if (strcmp(lack, "-") != 0 || strcmp(diff, "-") != 0)
				inconsistent = 1;
			if (json) {
				out_printf(o, "%s{\"pool\":", first ? "" : ",");
				out_json_str(o, p->label);
				out_printf(o, ",\"class\":\"%s\",\"label\":",
				           ob->cls == CKO_PRIVATE_KEY  ? "private"
				           : ob->cls == CKO_PUBLIC_KEY ? "public"
				                                       : "secret");
				out_json_str(o, label);
				out_printf(o,
				           ",\"id\":\"%s\",\"type\":\"%s\",\"bits\":%lu,\"sha256\":"
				           "\"%s\","
				           "\"held_by\":\"%s\",\"lacking\":\"%s\",\"different\":\"%"
				           "s\"}",
				           id, key_type_name(ob->ktype), key_bits(ob), fp, have,
				           lack, diff);
				first = 0;
			} else {
				snprintf(name, sizeof(name), "%s \"%s\"",
				         ob->cls == CKO_PRIVATE_KEY  ? "private"
				         : ob->cls == CKO_PUBLIC_KEY ? "public"
				                                     : "secret",
				         label);
				fp[16] = '\0';
				out_printf(o, "%-40s %-6s %-5s %5lu  %-16s  %-20s %-20s %s\n", name,
				           id[0] ? id : "-", key_type_name(ob->ktype), key_bits(ob),
				           fp, have, lack, diff);
			}
		}
		free(rows);
	}
	if (json)
		out_printf(o, "],\"consistent\":%s}\n", inconsistent ? "false" : "true");
	return inconsistent;
}

/* --- metrics: the Prometheus text exposition format --- */

/* One per-member metric: its name, type and help, and how to write its samples from a
 * snapshot of the member (labels: the pool and member labels, already formatted). */
struct metric {
	const char *name, *type, *help;
	void (*emit)(struct out *o, const struct metric *m, const char *labels,
	             const struct msnap *s);
	size_t field; /* for emit_u64 and emit_unsigned: the value's offset in struct msnap */
};

static void
emit_u64(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	uint64_t v;

	memcpy(&v, (const char *)s + m->field, sizeof(v));
	out_printf(o, "%s{%s} %llu\n", m->name, labels, (unsigned long long)v);
}

static void
emit_unsigned(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	unsigned v;

	memcpy(&v, (const char *)s + m->field, sizeof(v));
	out_printf(o, "%s{%s} %u\n", m->name, labels, v);
}

static void
emit_up(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	out_printf(o, "%s{%s} %d\n", m->name, labels, s->state == MEMBER_UP);
}

static void
emit_state(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	static const enum member_state states[] = {MEMBER_UP, MEMBER_DRAINING, MEMBER_DOWN,
	                                           MEMBER_PROBING, MEMBER_EXCLUDED};
	size_t i;

	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		out_printf(o, "%s{%s,state=\"%s\"} %d\n", m->name, labels,
		           member_state_name(states[i]), s->state == states[i]);
}

static void
emit_service(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	out_printf(o, "%s{%s} %.6f\n", m->name, labels, s->service_ms / 1000);
}

static void
emit_latency(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	uint64_t cum = 0;
	size_t b;

	for (b = 0; b < LAT_NBUCKETS; b++) {
		cum += s->lat_total[b];
		if (b < LAT_NBUCKETS - 1)
			out_printf(o, "%s_bucket{%s,le=\"%g\"} %llu\n", m->name, labels,
			           lat_bounds_ms[b] / 1000, (unsigned long long)cum);
		else
			out_printf(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", m->name, labels,
			           (unsigned long long)cum);
	}
	out_printf(o, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", m->name, labels, s->lat_sum_s,
	           m->name, labels, (unsigned long long)cum);
}

/* The last minute's percentiles (within 2.5%, latency.h): a summary beside the histogram,
 * whose buckets are too coarse to tell members 20% apart. None when nothing finished. */
static void
emit_quantiles(struct out *o, const struct metric *m, const char *labels, const struct msnap *s)
{
	const double q[] = {0.5, 0.9, 0.99}, v[] = {s->p50, s->p90, s->p99};
	size_t i;

	for (i = 0; i < 3; i++)
		if (v[i] >= 0)
			out_printf(o, "%s{%s,quantile=\"%g\"} %.6f\n", m->name, labels, q[i],
			           v[i] / 1000);
}

#define FIELD(f) offsetof(struct msnap, f)

static const struct metric member_metrics[] = {
        {"p11mux_member_up", "gauge", "1 when the member takes work (state up), else 0.", emit_up,
         0},
        {"p11mux_member_state", "gauge", "1 for the member's current state.", emit_state, 0},
        {"p11mux_member_operations_total", "counter", "Operations the member finished.", emit_u64,
         FIELD(done)},
        {"p11mux_member_errors_total", "counter", "Device errors the member returned.", emit_u64,
         FIELD(errors)},
        {"p11mux_member_failovers_total", "counter",
         "Operations moved from this member to another.", emit_u64, FIELD(failovers)},
        {"p11mux_member_helpers_total", "counter",
         "Helper processes started for the member (one, plus one per restart).", emit_u64,
         FIELD(helpers)},
        {"p11mux_member_in_flight", "gauge", "Operations running on the member now.", emit_unsigned,
         FIELD(running)},
        {"p11mux_member_queued", "gauge", "Operations waiting for the member.", emit_unsigned,
         FIELD(queued)},
        {"p11mux_member_service_seconds", "gauge", "Moving average of the member's service time.",
         emit_service, 0},
        {"p11mux_member_latency_seconds", "histogram",
         "Time from queueing to result, operations that succeeded.", emit_latency, 0},
        {"p11mux_member_latency_quantile_seconds", "gauge",
         "Percentiles of the last minute's latencies, within 2.5% of the true value.",
         emit_quantiles, 0},
};

/* The labels of a member's samples: pool="...",member="...", escaped. */
static void
member_labels(const struct pool *p, const struct msnap *s, char *dst, size_t n)
{
	struct out lo = {0};

	out_printf(&lo, "pool=\"");
	out_prom_str(&lo, p->label);
	out_printf(&lo, "\",member=\"");
	out_prom_str(&lo, s->label);
	out_printf(&lo, "\"");
	snprintf(dst, n, "%s", lo.s != NULL ? lo.s : "");
	free(lo.s);
}

static void
metrics(struct daemon *d, struct out *o)
{
	static const char clients[] = "p11mux_pool_clients";
	const struct metric *m;
	struct msnap s;
	char labels[256];
	size_t i, k;

	for (m = member_metrics; m < member_metrics + sizeof(member_metrics) / sizeof(*m); m++) {
		out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
		for (i = 0; i < daemon_npools(d); i++)
			for (k = 0; k < pool_nmembers(&d->pools[i]); k++) {
				snapshot(&d->pools[i].members[k], &s);
				member_labels(&d->pools[i], &s, labels, sizeof(labels));
				m->emit(o, m, labels, &s);
			}
	}
	out_printf(o, "# HELP %s Client connections logged in to the pool.\n# TYPE %s gauge\n",
	           clients, clients);
	for (i = 0; i < daemon_npools(d); i++) {
		out_printf(o, "%s{pool=\"", clients);
		out_prom_str(o, d->pools[i].label);
		out_printf(o, "\"} %u\n", pool_clients(d, &d->pools[i]));
	}
}

/* The member named (label or serial) in any pool; with a message when none or several.
 * label gets its label (33 bytes). */
static struct member *
find_member(struct daemon *d, const char *name, char *label, struct out *err)
{
	struct member *found = NULL;
	char serial[17];
	size_t i, k, n = 0;

	for (i = 0; i < daemon_npools(d); i++)
		for (k = 0; k < pool_nmembers(&d->pools[i]); k++) {
			struct member *m = &d->pools[i].members[k];

			if (!member_retired(m) && member_is(m, name)) {
				found = m;
				n++;
			}
		}
	if (n == 1) {
		member_names(found, label, serial);
		return found;
	}
	if (n > 1) {
		out_printf(err, "error: \"%s\" names %zu members; use a serial number\n", name, n);
		return NULL;
	}
	out_printf(err, "error: no member \"%s\"; members:", name);
	for (i = 0; i < daemon_npools(d); i++)
		for (k = 0; k < pool_nmembers(&d->pools[i]); k++) {
			member_names(&d->pools[i].members[k], label, serial);
			out_printf(err, " %s%s%s%s", label, serial[0] ? " (" : "", serial,
			           serial[0] ? ")" : "");
		}
	out_printf(err, "\n");
	return NULL;
}

/* Who asks, and what they may do. */
struct asker {
	char who[64];
	int admin;  /* root or the daemon's user: may drain and resume */
	int reader; /* may read status, keys, metrics */
};

static void
cmd_status(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	(void)arg;
	(void)a;
	out_printf(o, "ok\n");
	status_text(d, o);
	clients_text(d, o);
}

static void
cmd_status_json(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	(void)arg;
	(void)a;
	out_printf(o, "ok\n");
	status_json(d, o);
}

static void
cmd_keys(struct daemon *d, const char *arg, const struct asker *a, struct out *o, int json)
{
	struct out body = {0};
	int bad = keys_out(d, &body, json);

	(void)arg;
	(void)a;
	out_printf(o, "%s\n%s", bad ? "inconsistent" : "ok", body.s != NULL ? body.s : "");
	free(body.s);
}

static void
cmd_keys_text(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	cmd_keys(d, arg, a, o, 0);
}

static void
cmd_keys_json(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	cmd_keys(d, arg, a, o, 1);
}

static void
cmd_metrics(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	(void)arg;
	(void)a;
	out_printf(o, "ok\n");
	metrics(d, o);
}

/* drain MEMBER, resume MEMBER. */
static void
member_command(struct daemon *d, const char *name, const struct asker *a, struct out *o, int drain)
{
	struct member *m;
	char label[33];

	if ((m = find_member(d, name, label, o)) == NULL)
		return;
	if ((drain ? member_drain(m) : member_resume(m)) == 0) {
		out_printf(o, "ok\nmember %s %s\n", label,
		           drain ? "draining: it finishes its queue and takes no new work"
		                 : "back in service");
		log_info("control: %s %s %s", a->who, drain ? "drained" : "resumed", label);
		return;
	}
	p11mux_lock(&m->lock);
	out_printf(o, "error: member %s is %s; only %s members can be %s\n", m->label,
	           member_state_name(m->state), drain ? "up" : "draining",
	           drain ? "drained" : "resumed");
	p11mux_unlock(&m->lock);
}

/* unlock-pin POOL: the pool's PIN counter back to 0. */
static void
cmd_unlock_pin(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	struct p11mux_err e = {""};
	size_t i;

	for (i = 0; i < daemon_npools(d) && strcmp(d->pools[i].label, arg) != 0; i++)
		;
	if (i == daemon_npools(d)) {
		out_printf(o, "error: no pool \"%s\"\n", arg);
		return;
	}
	if (guard_unlock(&d->pools[i].guard, &e) != 0) {
		out_printf(o, "error: %s\n", e.msg);
		return;
	}
	log_info("control: %s unlocked the PIN of pool \"%s\"", a->who, arg);
	out_printf(o, "ok\npool \"%s\": PIN counter reset; logins are checked again\n", arg);
}

static void
cmd_drain(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	member_command(d, arg, a, o, 1);
}

static void
cmd_resume(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	member_command(d, arg, a, o, 0);
}

static void
cmd_rescan(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	log_info("control: %s asked for a rescan%s%s", a->who, arg[0] ? " of " : "", arg);
	live_rescan(d, arg, o);
}

static void
cmd_reload(struct daemon *d, const char *arg, const struct asker *a, struct out *o)
{
	(void)arg;
	live_reload(d, a->who, o);
}

/* slow: the command waits for devices or reads files; it runs on the worker thread (struct
 * worker) while the control thread goes on answering. */
static const struct command {
	const char *name; /* the whole line, or with takes_arg its first word */
	int takes_arg;
	int admin_only;
	int slow;
	void (*run)(struct daemon *d, const char *arg, const struct asker *a, struct out *o);
} commands[] = {
        {"status", 0, 0, 0, cmd_status},   {"status json", 0, 0, 0, cmd_status_json},
        {"keys", 0, 0, 0, cmd_keys_text},  {"keys json", 0, 0, 0, cmd_keys_json},
        {"metrics", 0, 0, 0, cmd_metrics}, {"drain", 1, 1, 0, cmd_drain},
        {"resume", 1, 1, 0, cmd_resume},   {"unlock-pin", 1, 1, 0, cmd_unlock_pin},
        {"rescan", 0, 1, 1, cmd_rescan},   {"rescan", 1, 1, 1, cmd_rescan},
        {"reload", 0, 1, 1, cmd_reload},
};

/* The command a line names, and its argument. NULL when there is none. */
static const struct command *
find_command(const char *line, const char **arg)
{
	size_t i, n;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		n = strlen(commands[i].name);
		if (!commands[i].takes_arg && strcmp(line, commands[i].name) == 0) {
			*arg = "";
			return &commands[i];
		}
		if (commands[i].takes_arg && strncmp(line, commands[i].name, n) == 0 &&
		    line[n] == ' ' && line[n + 1] != '\0') {
			*arg = line + n + 1;
			return &commands[i];
		}
	}
	return NULL;
}

/* A slow command handed to the worker instead of run (NULL: run it here). */
struct slow_req {
	const struct command *c;
	const char *arg;
};

/* Answers one command line from a; a slow one goes to *req when req is not NULL. */
static void
run_command(struct daemon *d, const char *line, const struct asker *a, struct out *o,
            struct slow_req *req)
{
	const struct command *c;
	const char *arg;

	if (!a->reader) {
		out_printf(o,
		           "error: user %s may not use the control socket (control_allowed_users, "
		           "control_allowed_groups in %s)\n",
		           a->who, d->cfg->path);
		log_warn("control: refused %s", a->who);
	} else if ((c = find_command(line, &arg)) == NULL) {
		out_printf(
		        o,
		        "error: unknown command \"%s\" (status, status json, keys, keys json, "
		        "metrics, drain MEMBER, resume MEMBER, unlock-pin POOL, rescan [MEMBER], "
		        "reload)\n",
		        line);
	} else if (c->admin_only && !a->admin) {
		out_printf(o, "error: user %s may not use %s (root or the daemon's user only)\n",
		           a->who, c->name);
		log_warn("control: %s may not %s %s", a->who, c->name, arg);
	} else if (c->slow && req != NULL) {
		req->c = c;
		req->arg = arg;
	} else {
		c->run(d, arg, a, o);
	}
}

/* Control connections served at once; more wait in the listening socket's backlog. */
#define CONTROL_MAX_CONNS 16
/* ... of them from one user, so that one user's slow clients leave room for the others. */
#define CONTROL_MAX_PER_UID 4
/* Time for the command line, from accept; for the whole answer to be read; and for the peer
 * to close after the answer. */
#define CONTROL_READ_MS  1000
#define CONTROL_WRITE_MS 2000

/* One control connection: it sends its command line, gets the answer, then closes. A slow
 * command's connection waits in CONN_WORK, with no deadline, for the worker's answer. */
struct conn {
	int fd; /* -1: the slot is free */
	enum { CONN_READ, CONN_WORK, CONN_WRITE, CONN_LINGER } state;
	uint64_t serial; /* which connection this slot holds (the worker's answer goes to it) */
	uid_t uid;
	struct asker a;
	uint64_t deadline_ns; /* for the current state */
	char line[256];
	size_t len;
	struct out o; /* the answer */
	size_t sent;
};

static void
conn_close(struct conn *c)
{
	close(c->fd);
	free(c->o.s);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* Makes o "error: out of memory" when writing it failed. */
static void
out_check(struct out *o)
{
	if (o->failed || o->s == NULL) {
		free(o->s);
		memset(o, 0, sizeof(*o));
		out_printf(o, "error: out of memory\n");
	}
}

/*
 * The worker: runs one slow command (rescan, reload) at a time on a thread of its own, so
 * that status and metrics keep being answered meanwhile. The connection that asked waits in
 * CONN_WORK; SIGHUP's reload has none. Only the control thread gives it work and collects
 * the answer. The thread lives until control_end(), after the pools are closed: the helpers
 * of a pool that a reload opened were started from it, and die with it (PR_SET_PDEATHSIG).
 */
static struct worker {
	pthread_mutex_t lock; /* protects pending, running, done, quit and o */
	pthread_cond_t wake;  /* for the thread: work, or quit; for control_stop: idle */
	int started, quit;
	int pending;        /* work given, not yet taken */
	int running;        /* the thread runs a command */
	int busy;           /* a command was given and its answer not collected (control's) */
	int done;           /* it ended: o holds its answer */
	int reload_pending; /* SIGHUP came while busy: reload after */
	int notify[2];      /* the thread writes a byte when done */
	pthread_t thread;
	struct daemon *d;
	const struct command *c;
	char arg[256];
	struct asker a;
	struct out o;
	struct conn *conn; /* NULL: nobody waits (SIGHUP) */
	uint64_t serial;   /* conn's serial then: it may have closed meanwhile */
} worker = {.lock = PTHREAD_MUTEX_INITIALIZER, .notify = {-1, -1}};

static void *
worker_main(void *arg)
{
	struct out o;
	char c = 1;

	(void)arg;
	pthread_mutex_lock(&worker.lock);
	for (;;) {
		while (!worker.pending && !worker.quit)
			pthread_cond_wait(&worker.wake, &worker.lock);
		if (!worker.pending)
			break;
		worker.pending = 0;
		worker.running = 1;
		pthread_mutex_unlock(&worker.lock);
		memset(&o, 0, sizeof(o));
		worker.c->run(worker.d, worker.arg, &worker.a, &o);
		out_check(&o);
		pthread_mutex_lock(&worker.lock);
		worker.o = o;
		worker.done = 1;
		worker.running = 0;
		pthread_cond_broadcast(&worker.wake);
		if (write(worker.notify[1], &c, 1) < 0) {
			/* The pipe is full: the control thread is woken already. */
		}
	}
	pthread_mutex_unlock(&worker.lock);
	return NULL;
}

/* Starts req on the worker for conn (NULL: nobody waits). 0, or -1 when busy or the thread
 * cannot start. */
static int
worker_start(struct daemon *d, const struct slow_req *req, const struct asker *a, struct conn *conn)
{
	if (worker.busy || !worker.started)
		return -1;
	pthread_mutex_lock(&worker.lock);
	worker.d = d;
	worker.c = req->c;
	snprintf(worker.arg, sizeof(worker.arg), "%s", req->arg);
	worker.a = *a;
	worker.conn = conn;
	worker.serial = conn != NULL ? conn->serial : 0;
	worker.done = 0;
	worker.pending = 1;
	pthread_cond_broadcast(&worker.wake);
	pthread_mutex_unlock(&worker.lock);
	worker.busy = 1;
	return 0;
}

static void conn_close(struct conn *c);

/* Takes the worker's answer to the connection that waits for it (when it still does). */
static void
worker_collect(void)
{
	struct out o;
	int done;

	pthread_mutex_lock(&worker.lock);
	done = worker.busy && worker.done;
	o = worker.o;
	memset(&worker.o, 0, sizeof(worker.o));
	worker.done = 0;
	pthread_mutex_unlock(&worker.lock);
	if (!done)
		return;
	worker.busy = 0;
	if (worker.conn != NULL && worker.conn->fd >= 0 && worker.conn->serial == worker.serial &&
	    worker.conn->state == CONN_WORK) {
		worker.conn->o = o;
		worker.conn->state = CONN_WRITE;
		worker.conn->deadline_ns = p11mux_now_ns() + CONTROL_WRITE_MS * 1000000ull;
	} else {
		free(o.s);
	}
}

/* A reload for SIGHUP, now or once the worker is free. */
static void
worker_reload(struct daemon *d)
{
	static const struct asker hup = {"SIGHUP", 1, 1};
	struct slow_req req = {NULL, ""};
	const char *arg;

	worker.reload_pending = 0;
	if ((req.c = find_command("reload", &arg)) != NULL &&
	    worker_start(d, &req, &hup, NULL) != 0)
		worker.reload_pending = 1;
}

/* Answers the command in line[0..len) (len < sizeof(conn.line)), which it cuts at the first
 * CR or LF, into o (o->s NULL: out of memory); a slow command goes to *req instead (req not
 * NULL). */
static void
answer_line(struct daemon *d, char *line, size_t len, const struct asker *a, struct out *o,
            struct slow_req *req)
{
	line[len] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	run_command(d, line, a, o, req);
	if (req == NULL || req->c == NULL)
		out_check(o);
}

char *
control_answer(struct daemon *d, const char *line, size_t len, const char *who, int admin,
               int reader)
{
	struct asker a = {.admin = admin, .reader = reader};
	char buf[sizeof(((struct conn *)NULL)->line)];
	struct out o = {0};

	snprintf(a.who, sizeof(a.who), "%s", who);
	if (len > sizeof(buf) - 1)
		len = sizeof(buf) - 1;
	memcpy(buf, line, len);
	answer_line(d, buf, len, &a, &o, NULL);
	return o.s;
}

/* Runs the command line and starts writing the answer. */
static void
conn_answer(struct daemon *d, struct conn *c)
{
	struct slow_req req = {NULL, NULL};

	answer_line(d, c->line, c->len, &c->a, &c->o, &req);
	if (req.c != NULL && worker_start(d, &req, &c->a, c) == 0) {
		c->state = CONN_WORK;
		c->deadline_ns = UINT64_MAX;
		return;
	}
	if (req.c != NULL)
		out_printf(&c->o,
		           "error: a rescan or reload is under way; try again when it ends\n");
	if (c->o.s == NULL) {
		conn_close(c);
		return;
	}
	c->state = CONN_WRITE;
	c->deadline_ns = p11mux_now_ns() + CONTROL_WRITE_MS * 1000000ull;
}

/* Who the peer is, and what it may do. */
static void
conn_asker(struct daemon *d, const struct ucred *cred, struct asker *a)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwuid_r(cred->uid, &pw, buf, sizeof(buf), &res) != 0)
		res = NULL;
	snprintf(a->who, sizeof(a->who), "%s (uid %lu)", res != NULL ? res->pw_name : "?",
	         (unsigned long)cred->uid);
	a->admin = cred->uid == 0 || cred->uid == geteuid();
	a->reader = a->admin ||
	            peer_listed(cred->uid, cred->gid, d->cfg->control_uids, d->cfg->ncontrol_uids,
	                        d->cfg->control_gids, d->cfg->ncontrol_gids);
}

/* Accepts one connection into the free slot c. The peer is checked before anything is read
 * from it: one that may not use the socket gets its refusal at once; one that has
 * CONTROL_MAX_PER_UID connections being served already is closed at once. */
static void
conn_accept(struct daemon *d, struct conn *conns, struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	unsigned same = 0;
	size_t i;
	int fd;

	if ((fd = accept4(d->control_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		close(fd);
		return;
	}
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		same += conns[i].fd >= 0 && conns[i].uid == cred.uid;
	if (same >= CONTROL_MAX_PER_UID) {
		lograte_warn(&d->ctl_refused,
		             "control: refused a connection from uid %lu (pid %ld): %u of its "
		             "connections are being served",
		             (unsigned long)cred.uid, (long)cred.pid, same);
		close(fd);
		return;
	}
	static uint64_t serial;

	c->fd = fd;
	c->uid = cred.uid;
	c->serial = ++serial;
	c->state = CONN_READ;
	c->deadline_ns = p11mux_now_ns() + CONTROL_READ_MS * 1000000ull;
	conn_asker(d, &cred, &c->a);
	if (!c->a.reader)
		conn_answer(d, c); /* the refusal, whatever the line */
}

/* Reads what the peer sent: while reading, answers once the line is whole (a line feed, the
 * end of the stream, or 255 bytes); after the answer, discards it until the peer closes. */
static void
conn_read(struct daemon *d, struct conn *c)
{
	char sink[256];
	ssize_t got;

	if (c->state == CONN_LINGER)
		got = read(c->fd, sink, sizeof(sink));
	else
		got = read(c->fd, c->line + c->len, sizeof(c->line) - 1 - c->len);
	if (got < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c);
		return;
	}
	if (c->state == CONN_LINGER) {
		if (got == 0)
			conn_close(c);
		return;
	}
	c->len += (size_t)got;
	if (got == 0 || memchr(c->line, '\n', c->len) != NULL || c->len == sizeof(c->line) - 1)
		conn_answer(d, c);
}

/* Writes what the socket takes of the answer. Once all of it went, the peer sees the end of
 * the stream; the connection stays open until the peer closes too, so that a peer still
 * sending its command (it was refused before it was read) gets the answer, not EPIPE. */
static void
conn_write(struct conn *c)
{
	ssize_t n = send(c->fd, c->o.s + c->sent, c->o.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c);
		return;
	}
	c->sent += (size_t)n;
	if (c->sent < c->o.len)
		return;
	shutdown(c->fd, SHUT_WR);
	c->state = CONN_LINGER;
	c->deadline_ns = p11mux_now_ns() + CONTROL_READ_MS * 1000000ull;
}

/* Closes the connections whose time is up; returns the poll time-out until the next
 * deadline (-1: none). */
static int
conns_expire(struct daemon *d, struct conn *conns)
{
	uint64_t now = p11mux_now_ns(), next = UINT64_MAX;
	size_t i;

	for (i = 0; i < CONTROL_MAX_CONNS; i++) {
		struct conn *c = &conns[i];

		if (c->fd < 0)
			continue;
		if (c->deadline_ns <= now) {
			if (c->state != CONN_LINGER)
				lograte_warn(
				        &d->ctl_dropped,
				        "control: %s %s within %d ms; connection closed", c->a.who,
				        c->state == CONN_READ ? "sent no whole command"
				                              : "did not read the answer",
				        c->state == CONN_READ ? CONTROL_READ_MS : CONTROL_WRITE_MS);
			conn_close(c);
		} else if (c->deadline_ns < next) {
			next = c->deadline_ns;
		}
	}
	return next == UINT64_MAX ? -1 : (int)((next - now) / 1000000 + 1);
}

/* The control thread: serves up to CONTROL_MAX_CONNS connections at once, each with its
 * deadlines, until a byte arrives on the stop pipe. */
static void *
control_main(void *arg)
{
	struct daemon *d = arg;
	struct conn conns[CONTROL_MAX_CONNS];
	struct pollfd pfd[CONTROL_MAX_CONNS + 4];
	size_t i, nfree;
	int wait_ms;
	char drain[64];

	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		conns[i].fd = -1;
	for (;;) {
		wait_ms = conns_expire(d, conns);
		if ((lograte_flush(&d->ctl_refused) | lograte_flush(&d->ctl_dropped)) &&
		    (wait_ms < 0 || wait_ms > 1000))
			wait_ms = 1000;
		pfd[0].fd = d->stop_pipe[0];
		pfd[0].events = POLLIN;
		pfd[2].fd = worker.notify[0];
		pfd[2].events = POLLIN;
		pfd[3].fd = d->reload_pipe[0];
		pfd[3].events = POLLIN;
		for (i = 0, nfree = 0; i < CONTROL_MAX_CONNS; i++) {
			nfree += conns[i].fd < 0;
			pfd[i + 4].fd = conns[i].fd;
			/* Waiting for the worker: only a hang-up matters. */
			pfd[i + 4].events = conns[i].state == CONN_WRITE  ? POLLOUT
			                    : conns[i].state == CONN_WORK ? 0
			                                                  : POLLIN;
		}
		/* A negative descriptor is left out by poll: no free slot, no accept. */
		pfd[1].fd = nfree > 0 && d->control_fd >= 0 ? d->control_fd : -1;
		pfd[1].events = POLLIN;
		if (poll(pfd, CONTROL_MAX_CONNS + 4, wait_ms) < 0) {
			if (errno == EINTR)
				continue;
			log_error("control: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents != 0)
			break;
		if (pfd[2].revents != 0) {
			while (read(worker.notify[0], drain, sizeof(drain)) > 0)
				;
			worker_collect();
		}
		if (pfd[3].revents != 0) {
			while (read(d->reload_pipe[0], drain, sizeof(drain)) > 0)
				;
			worker.reload_pending = 1;
		}
		if (worker.reload_pending && !worker.busy)
			worker_reload(d);
		for (i = 0; i < CONTROL_MAX_CONNS; i++) {
			if (conns[i].fd < 0 || pfd[i + 4].revents == 0)
				continue;
			if (conns[i].state == CONN_WORK)
				conn_close(&conns[i]); /* the peer hung up; the answer is dropped */
			else if (conns[i].state == CONN_WRITE)
				conn_write(&conns[i]);
			else
				conn_read(d, &conns[i]);
		}
		for (i = 0; i < CONTROL_MAX_CONNS && (pfd[1].revents & POLLIN); i++)
			if (conns[i].fd < 0) {
				conn_accept(d, conns, &conns[i]);
				break;
			}
	}
	/* A rescan or reload under way ends by itself (its waits are bounded), before the
	 * pools close. */
	pthread_mutex_lock(&worker.lock);
	while (worker.pending || worker.running)
		pthread_cond_wait(&worker.wake, &worker.lock);
	free(worker.o.s);
	memset(&worker.o, 0, sizeof(worker.o));
	worker.done = 0;
	worker.busy = 0;
	pthread_mutex_unlock(&worker.lock);
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		if (conns[i].fd >= 0)
			conn_close(&conns[i]);
	return NULL;
}

int
control_start(struct daemon *d)
{
	/* Started without a control socket too: SIGHUP's reload runs on its worker. */
	if (worker.notify[0] < 0 && pipe2(worker.notify, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	if (!worker.started) {
		p11mux_cond_init(&worker.wake);
		if (pthread_create(&worker.thread, NULL, worker_main, NULL) != 0)
			return -1;
		worker.started = 1;
	}
	if (pthread_create(&d->control_thread, NULL, control_main, d) != 0)
		return -1;
	d->control_running = 1;
	return 0;
}

void
control_end(void)
{
	if (!worker.started)
		return;
	pthread_mutex_lock(&worker.lock);
	worker.quit = 1;
	pthread_cond_broadcast(&worker.wake);
	pthread_mutex_unlock(&worker.lock);
	pthread_join(worker.thread, NULL);
	worker.started = 0;
	close(worker.notify[0]);
	close(worker.notify[1]);
	worker.notify[0] = worker.notify[1] = -1;
}

void
control_stop(struct daemon *d)
{
	if (d->control_running) {
		pthread_join(d->control_thread, NULL);
		d->control_running = 0;
	}
	if (d->control_fd >= 0) {
		close(d->control_fd);
		d->control_fd = -1;
		unlink(d->cfg->control_socket);
	}
	lograte_flush(&d->ctl_refused);
	lograte_flush(&d->ctl_dropped);
	lograte_destroy(&d->ctl_refused);
	lograte_destroy(&d->ctl_dropped);
}
