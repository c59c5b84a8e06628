/*
 * The control socket, for p11muxctl: one command per connection, one line in ("status",
 * "status json", "keys", "keys json", "metrics", "drain MEMBER", "resume MEMBER"), and the
 * answer out: a first line "ok", "inconsistent" or "error: ...", then the body. Reading
 * commands are for root, the daemon's user and control_allowed_users/groups; drain and
 * resume for root and the daemon's user only. Served by the main thread between accepts;
 * no command touches a device.
 */
#include "control.h"
#include "log.h"

#include <errno.h>
#include <grp.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* A growable text buffer for answers. */
struct out {
	char *s;
	size_t len, cap;
	int failed;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
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
	log_info("control socket %s", d->cfg->control_socket);
	return 0;
}

/* Whether uid (primary group gid) is among the users and groups given. */
static int
listed(uid_t uid, gid_t gid, const uid_t *uids, size_t nuids, const gid_t *gids, size_t ngids)
{
	struct passwd pw, *res = NULL;
	gid_t groups[256];
	int ngroups = 256, i;
	char buf[4096];
	size_t k;

	for (k = 0; k < nuids; k++)
		if (uids[k] == uid)
			return 1;
	for (k = 0; k < ngids; k++)
		if (gids[k] == gid)
			return 1;
	if (ngids == 0 || getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
		return 0;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups) < 0)
		ngroups = 256;
	for (i = 0; i < ngroups; i++)
		for (k = 0; k < ngids; k++)
			if (gids[k] == groups[i])
				return 1;
	return 0;
}

static double
seconds_since(uint64_t ns)
{
	return ns == 0 ? 0 : (double)(now_ns() - ns) / 1e9;
}

/* Connections logged in to the pool. */
static unsigned
pool_clients(struct daemon *d, const struct pool *p)
{
	struct client *c;
	unsigned n = 0;

	pthread_mutex_lock(&d->lock);
	for (c = d->clients; c != NULL; c = c->next)
		if (!c->finished && __atomic_load_n(&c->logged_in[p->index], __ATOMIC_RELAXED))
			n++;
	pthread_mutex_unlock(&d->lock);
	return n;
}

/* A snapshot of one member, taken under its lock. */
struct msnap {
	char label[33], serial[17], reason[160], last_error[64];
	enum member_state state;
	double state_s, service_ms, p50, p99, last_error_s;
	unsigned running, queued;
	uint64_t done, errors, failovers, recent;
	uint64_t lat_total[LAT_NBUCKETS];
	double lat_sum_s;
};

static void
snapshot(struct member *m, struct msnap *s)
{
	pthread_mutex_lock(&m->lock);
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
	s->p50 = member_latency_locked(m, 0.50, 10, &s->recent);
	s->p99 = member_latency_locked(m, 0.99, 10, NULL);
	s->last_error_s = m->last_error[0] ? seconds_since(m->last_error_ns) : -1;
	memcpy(s->lat_total, m->lat_total, sizeof(s->lat_total));
	s->lat_sum_s = m->lat_sum_s;
	pthread_mutex_unlock(&m->lock);
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

#define NCOLS 13

static void
status_text(struct daemon *d, struct out *o)
{
	static const char *head[NCOLS] = {"MEMBER", "SERIAL", "STATE",     "FOR",       "INFLIGHT",
	                                  "QUEUED", "DONE",   "ERRORS",    "FAILOVERS", "SERVICE",
	                                  "P50",    "P99",    "LAST ERROR"};
	/* Left-aligned: text columns; the others are numbers, right-aligned. */
	static const int left[NCOLS] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	char cell[P11MUX_POOL_MAX_MEMBERS + 1][NCOLS][180];
	size_t i, k, w[NCOLS];
	struct msnap s;
	uint64_t recent;

	for (i = 0; i < d->npools; i++) {
		struct pool *p = &d->pools[i];

		recent = 0;
		for (k = 0; k < NCOLS; k++)
			snprintf(cell[0][k], sizeof(cell[0][k]), "%s", head[k]);
		for (k = 0; k < p->nmembers && k < P11MUX_POOL_MAX_MEMBERS; k++) {
			char(*c)[180] = cell[k + 1];
			char dur[32];

			snapshot(&p->members[k], &s);
			recent += s.recent;
			fmt_duration(dur, sizeof(dur), s.state_s);
			snprintf(c[0], 180, "%s", s.label);
			snprintf(c[1], 180, "%s", s.serial[0] ? s.serial : "-");
			state_text(&s, c[2], 180);
			snprintf(c[3], 180, "%s", dur);
			snprintf(c[4], 180, "%u", s.running);
			snprintf(c[5], 180, "%u", s.queued);
			snprintf(c[6], 180, "%llu", (unsigned long long)s.done);
			snprintf(c[7], 180, "%llu", (unsigned long long)s.errors);
			snprintf(c[8], 180, "%llu", (unsigned long long)s.failovers);
			fmt_ms(c[9], 180, s.done > 0 ? s.service_ms : -1);
			fmt_ms(c[10], 180, s.p50);
			fmt_ms(c[11], 180, s.p99);
			if (s.last_error_s >= 0) {
				fmt_duration(dur, sizeof(dur), s.last_error_s);
				snprintf(c[12], 180, "%s (%s ago)", s.last_error, dur);
			} else {
				snprintf(c[12], 180, "-");
			}
		}
		out_printf(o, "pool \"%s\"  slot %lu  clients %u  %.1f ops/s (last 10 s)  %s\n",
		           p->label, p->slot.id, pool_clients(d, p), (double)recent / 10,
		           p->policy == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded");
		for (k = 0; k < NCOLS; k++) {
			size_t r;

			w[k] = 0;
			for (r = 0; r <= p->nmembers && r <= P11MUX_POOL_MAX_MEMBERS; r++)
				if (strlen(cell[r][k]) > w[k])
					w[k] = strlen(cell[r][k]);
		}
		for (size_t r = 0; r <= p->nmembers && r <= P11MUX_POOL_MAX_MEMBERS; r++) {
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
		if (i + 1 < d->npools)
			out_printf(o, "\n");
	}
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

	out_printf(o, "{\"version\":1,\"pools\":[");
	for (i = 0; i < d->npools; i++) {
		struct pool *p = &d->pools[i];

		out_printf(o, "%s{\"label\":", i ? "," : "");
		out_json_str(o, p->label);
		out_printf(o, ",\"slot\":%lu,\"clients\":%u,\"scheduler\":\"%s\",\"members\":[",
		           p->slot.id, pool_clients(d, p),
		           p->policy == SCHED_ROUND_ROBIN ? "round-robin" : "least-loaded");
		recent = 0;
		for (k = 0; k < p->nmembers; k++) {
			snapshot(&p->members[k], &s);
			recent += s.recent;
			out_printf(o, "%s{\"label\":", k ? "," : "");
			out_json_str(o, s.label);
			out_printf(o, ",\"serial\":");
			out_json_str(o, s.serial);
			out_printf(o, ",\"state\":\"%s\",\"reason\":", member_state_name(s.state));
			out_json_str(o, s.reason);
			out_printf(
			        o,
			        ",\"state_seconds\":%.3f,\"in_flight\":%u,\"queued\":%u,"
			        "\"done\":%llu,\"errors\":%llu,\"failovers\":%llu,\"service_ms\":",
			        s.state_s, s.running, s.queued, (unsigned long long)s.done,
			        (unsigned long long)s.errors, (unsigned long long)s.failovers);
			out_num(o, s.done > 0 ? s.service_ms : -1);
			out_printf(o, ",\"latency_p50_ms\":");
			out_num(o, s.p50);
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
	out_printf(o, "]}\n");
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
	size_t i;

	for (i = 0; i < o->n; i++) {
		if (o->status[i] != CKR_OK)
			continue;
		if (o->attrs[i].type == CKA_MODULUS && o->ktype == CKK_RSA)
			return (unsigned long)o->attrs[i].ulValueLen * 8;
		if (o->attrs[i].type == CKA_VALUE_LEN && o->attrs[i].ulValueLen == sizeof(CK_ULONG))
			return *(CK_ULONG *)o->attrs[i].pValue * 8;
	}
	/* An uncompressed EC point 04||X||Y in a DER OCTET STRING: X is the field size. */
	if (o->ktype == CKK_EC && o->publen > 8) {
		size_t len = o->publen - 8; /* our fingerprint prefixes the length */
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
	const uint8_t *p = o->pub;
	size_t len = o->publen, i;
	uint64_t first;

	if (len < 8) {
		snprintf(dst, n, "-");
		return;
	}
	/* The pool's fingerprint holds length-prefixed attribute values; the first one is the
	 * modulus (RSA) or the point (EC). */
	memcpy(&first, p, 8);
	if (first > len - 8)
		first = len - 8;
	SHA256(p + 8, (size_t)first, md);
	for (i = 0; i < sizeof(md) && 2 * i + 2 < n; i++)
		snprintf(dst + 2 * i, n - 2 * i, "%02x", md[i]);
}

/* Members of the pool with holding == want, comma-separated, into dst. Members never seen
 * (no serial) are left out: nothing is known of them. */
static void
members_with(const struct pool *p, const struct pobject *o, uint8_t want, char *dst, size_t n)
{
	size_t k, len = 0;

	dst[0] = '\0';
	for (k = 0; k < p->nmembers; k++) {
		if (p->members[k].serial[0] == '\0' ||
		    __atomic_load_n(&o->holding[k], __ATOMIC_ACQUIRE) != want)
			continue;
		len += (size_t)snprintf(dst + len, len < n ? n - len : 0, "%s%s", len ? "," : "",
		                        p->members[k].label);
	}
	if (dst[0] == '\0')
		snprintf(dst, n, "-");
}

/* Writes the key inventory; returns 1 when some member lacks a key or holds another one. */
static int
keys_out(struct daemon *d, struct out *o, int json)
{
	char label[80], id[48], fp[72], have[512], lack[512], diff[512];
	int inconsistent = 0, first = 1;
	size_t i, k;

	if (json)
		out_printf(o, "{\"version\":1,\"keys\":[");
	for (i = 0; i < d->npools; i++) {
		struct pool *p = &d->pools[i];

		if (!json)
			out_printf(o, "%spool \"%s\"\n%-40s %-6s %-5s %5s  %-16s  %-20s %-20s %s\n",
			           i ? "\n" : "", p->label, "KEY", "ID", "TYPE", "BITS",
			           "SHA-256 (start)", "HELD BY", "LACKING", "DIFFERENT KEY");
		for (k = 0; k < p->nobjects; k++) {
			const struct pobject *ob = p->objects[k];
			char name[128];

			if (!is_key(ob))
				continue;
			key_names(ob, label, sizeof(label), id, sizeof(id));
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
	}
	if (json)
		out_printf(o, "],\"consistent\":%s}\n", inconsistent ? "false" : "true");
	return inconsistent;
}

static void
metrics(struct daemon *d, struct out *o)
{
	static const struct {
		const char *name, *type, *help;
	} m[] = {
	        {"p11mux_member_up", "gauge", "1 when the member takes work (state up), else 0."},
	        {"p11mux_member_state", "gauge", "1 for the member's current state."},
	        {"p11mux_member_operations_total", "counter", "Operations the member finished."},
	        {"p11mux_member_errors_total", "counter", "Device errors the member returned."},
	        {"p11mux_member_failovers_total", "counter",
	         "Operations moved from this member to another."},
	        {"p11mux_member_in_flight", "gauge", "Operations running on the member now."},
	        {"p11mux_member_queued", "gauge", "Operations waiting for the member."},
	        {"p11mux_member_service_seconds", "gauge",
	         "Moving average of the member's service time."},
	        {"p11mux_member_latency_seconds", "histogram",
	         "Time from queueing to result, operations that succeeded."},
	        {"p11mux_pool_clients", "gauge", "Client connections logged in to the pool."},
	};
	static const enum member_state states[] = {MEMBER_UP, MEMBER_DRAINING, MEMBER_DOWN,
	                                           MEMBER_PROBING, MEMBER_EXCLUDED};
	struct msnap s;
	size_t mi, i, k, b, st;
	uint64_t cum;

	for (mi = 0; mi < sizeof(m) / sizeof(m[0]); mi++) {
		out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", m[mi].name, m[mi].help, m[mi].name,
		           m[mi].type);
		for (i = 0; i < d->npools; i++) {
			struct pool *p = &d->pools[i];

			if (mi == 9) {
				out_printf(o, "%s{pool=\"", m[mi].name);
				out_prom_str(o, p->label);
				out_printf(o, "\"} %u\n", pool_clients(d, p));
				continue;
			}
			for (k = 0; k < p->nmembers; k++) {
				char lbl[256];
				struct out lo = {0};

				snapshot(&p->members[k], &s);
				out_printf(&lo, "pool=\"");
				out_prom_str(&lo, p->label);
				out_printf(&lo, "\",member=\"");
				out_prom_str(&lo, s.label);
				out_printf(&lo, "\"");
				snprintf(lbl, sizeof(lbl), "%s", lo.s != NULL ? lo.s : "");
				free(lo.s);
				switch (mi) {
				case 0:
					out_printf(o, "%s{%s} %d\n", m[mi].name, lbl,
					           s.state == MEMBER_UP);
					break;
				case 1:
					for (st = 0; st < 5; st++)
						out_printf(o, "%s{%s,state=\"%s\"} %d\n",
						           m[mi].name, lbl,
						           member_state_name(states[st]),
						           s.state == states[st]);
					break;
				case 2:
					out_printf(o, "%s{%s} %llu\n", m[mi].name, lbl,
					           (unsigned long long)s.done);
					break;
				case 3:
					out_printf(o, "%s{%s} %llu\n", m[mi].name, lbl,
					           (unsigned long long)s.errors);
					break;
				case 4:
					out_printf(o, "%s{%s} %llu\n", m[mi].name, lbl,
					           (unsigned long long)s.failovers);
					break;
				case 5:
					out_printf(o, "%s{%s} %u\n", m[mi].name, lbl, s.running);
					break;
				case 6:
					out_printf(o, "%s{%s} %u\n", m[mi].name, lbl, s.queued);
					break;
				case 7:
					out_printf(o, "%s{%s} %.6f\n", m[mi].name, lbl,
					           s.service_ms / 1000);
					break;
				case 8:
					cum = 0;
					for (b = 0; b < LAT_NBUCKETS; b++) {
						cum += s.lat_total[b];
						if (b < LAT_NBUCKETS - 1)
							out_printf(o,
							           "%s_bucket{%s,le=\"%g\"} %llu\n",
							           m[mi].name, lbl,
							           lat_bounds_ms[b] / 1000,
							           (unsigned long long)cum);
						else
							out_printf(
							        o,
							        "%s_bucket{%s,le=\"+Inf\"} %llu\n",
							        m[mi].name, lbl,
							        (unsigned long long)cum);
					}
					out_printf(o, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n",
					           m[mi].name, lbl, s.lat_sum_s, m[mi].name, lbl,
					           (unsigned long long)cum);
					break;
				}
			}
		}
	}
}

/* The member named (label or serial) in any pool; with a message when none or several. */
static struct member *
find_member(struct daemon *d, const char *name, struct out *err)
{
	struct member *found = NULL;
	size_t i, k, n = 0;

	for (i = 0; i < d->npools; i++)
		for (k = 0; k < d->pools[i].nmembers; k++) {
			struct member *m = &d->pools[i].members[k];

			if (strcmp(m->label, name) == 0 ||
			    (m->serial[0] && strcmp(m->serial, name) == 0)) {
				found = m;
				n++;
			}
		}
	if (n == 1)
		return found;
	if (n > 1) {
		out_printf(err, "error: \"%s\" names %zu members; use a serial number\n", name, n);
		return NULL;
	}
	out_printf(err, "error: no member \"%s\"; members:", name);
	for (i = 0; i < d->npools; i++)
		for (k = 0; k < d->pools[i].nmembers; k++)
			out_printf(err, " %s%s%s%s", d->pools[i].members[k].label,
			           d->pools[i].members[k].serial[0] ? " (" : "",
			           d->pools[i].members[k].serial,
			           d->pools[i].members[k].serial[0] ? ")" : "");
	out_printf(err, "\n");
	return NULL;
}

void
control_serve(struct daemon *d)
{
	struct timeval tv = {2, 0};
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct out o = {0};
	char line[256], who[64];
	struct passwd *pw;
	struct member *m;
	ssize_t got;
	size_t len = 0, done;
	int fd, reader, admin;

	if ((fd = accept4(d->control_fd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		close(fd);
		return;
	}
	pw = getpwuid(cred.uid);
	snprintf(who, sizeof(who), "%s (uid %lu)", pw != NULL ? pw->pw_name : "?",
	         (unsigned long)cred.uid);
	admin = cred.uid == 0 || cred.uid == geteuid();
	reader = admin || listed(cred.uid, cred.gid, d->cfg->control_uids, d->cfg->ncontrol_uids,
	                         d->cfg->control_gids, d->cfg->ncontrol_gids);
	while (len < sizeof(line) - 1 && (got = read(fd, line + len, sizeof(line) - 1 - len)) > 0) {
		len += (size_t)got;
		if (memchr(line, '\n', len) != NULL)
			break;
	}
	line[len] = '\0';
	line[strcspn(line, "\r\n")] = '\0';

	if (!reader) {
		out_printf(&o,
		           "error: user %s may not use the control socket (control_allowed_users, "
		           "control_allowed_groups in %s)\n",
		           who, d->cfg->path);
		log_warn("control: refused %s", who);
	} else if (strcmp(line, "status") == 0) {
		out_printf(&o, "ok\n");
		status_text(d, &o);
	} else if (strcmp(line, "status json") == 0) {
		out_printf(&o, "ok\n");
		status_json(d, &o);
	} else if (strcmp(line, "keys") == 0 || strcmp(line, "keys json") == 0) {
		struct out body = {0};
		int bad = keys_out(d, &body, line[4] != '\0');

		out_printf(&o, "%s\n%s", bad ? "inconsistent" : "ok", body.s != NULL ? body.s : "");
		free(body.s);
	} else if (strcmp(line, "metrics") == 0) {
		out_printf(&o, "ok\n");
		metrics(d, &o);
	} else if (strncmp(line, "drain ", 6) == 0 || strncmp(line, "resume ", 7) == 0) {
		int drain = line[0] == 'd';
		const char *name = line + (drain ? 6 : 7);

		if (!admin) {
			out_printf(&o,
			           "error: user %s may not %s members (root or the daemon's user "
			           "only)\n",
			           who, drain ? "drain" : "resume");
			log_warn("control: %s may not %s %s", who, drain ? "drain" : "resume",
			         name);
		} else if ((m = find_member(d, name, &o)) != NULL) {
			if ((drain ? member_drain(m) : member_resume(m)) == 0) {
				out_printf(&o, "ok\nmember %s %s\n", m->label,
				           drain ? "draining: it finishes its queue and takes no "
				                   "new work"
				                 : "back in service");
				log_info("control: %s %s %s", who, drain ? "drained" : "resumed",
				         m->label);
			} else {
				pthread_mutex_lock(&m->lock);
				out_printf(
				        &o, "error: member %s is %s; only %s members can be %s\n",
				        m->label, member_state_name(m->state),
				        drain ? "up" : "draining", drain ? "drained" : "resumed");
				pthread_mutex_unlock(&m->lock);
			}
		}
	} else {
		out_printf(&o,
		           "error: unknown command \"%s\" (status, status json, keys, keys json, "
		           "metrics, drain MEMBER, resume MEMBER)\n",
		           line);
	}
	if (o.failed)
		out_printf(&o, "error: out of memory\n");
	for (done = 0; o.s != NULL && done < o.len;) {
		got = send(fd, o.s + done, o.len - done, MSG_NOSIGNAL);
		if (got <= 0)
			break;
		done += (size_t)got;
	}
	free(o.s);
	close(fd);
}
