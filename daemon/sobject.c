/* Session objects: who owns them, the quota, and their end (sobject.h). */
#include "sobject.h"

#include "daemon.h"
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int
apps_init(struct apps *a, unsigned max_objects, size_t max_bytes, unsigned max_uid_objects,
          size_t max_uid_bytes, unsigned max_total)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->reaped, NULL);
	a->ready = 1;
	a->max_objects = max_objects;
	a->max_bytes = max_bytes;
	a->max_uid_objects = max_uid_objects;
	a->max_uid_bytes = max_uid_bytes;
	a->max_total = max_total;
	if (getrandom(&a->instance, sizeof(a->instance), 0) != (ssize_t)sizeof(a->instance)) {
		log_error("getrandom: %s", strerror(errno));
		return -1;
	}
	/* Handles of an earlier daemon's objects, still in a shim's cache, are unlikely to be
	 * this one's: numbers start somewhere else each time. */
	a->next = (a->instance & 0x3fffffff) | 1;
	return 0;
}

static void
sobj_free(struct sobj *o)
{
	size_t i;

	for (i = 0; i < o->po.n; i++) {
		if (o->po.attrs[i].pValue != NULL)
			explicit_bzero(o->po.attrs[i].pValue, o->po.attrs[i].ulValueLen);
		free(o->po.attrs[i].pValue);
	}
	free(o->po.attrs);
	free(o->po.status);
	free(o->po.backend);
	free(o);
}

void
apps_destroy(struct apps *a)
{
	struct app *app, *next;
	struct sobj *o, *on;

	if (!a->ready)
		return;
	p11mux_lock(&a->lock);
	while (a->reapers > 0)
		pthread_cond_wait(&a->reaped, &a->lock);
	p11mux_unlock(&a->lock);
	for (app = a->list; app != NULL; app = next) {
		next = app->next;
		for (o = app->objs; o != NULL; o = on) {
			on = o->next;
			sobj_free(o);
		}
		free(app);
	}
	a->list = NULL;
	pthread_cond_destroy(&a->reaped);
	pthread_mutex_destroy(&a->lock);
	a->ready = 0;
}

/* A process's program name, as ps shows it; "?" when it cannot be read (another pid
 * namespace, a process gone). */
static void
read_comm(pid_t pid, char *dst, size_t n)
{
	char path[64];
	FILE *f;
	size_t len;

	snprintf(dst, n, "?");
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return;
	if (fgets(dst, (int)n, f) == NULL)
		snprintf(dst, n, "?");
	fclose(f);
	len = strlen(dst);
	while (len > 0 && dst[len - 1] == '\n')
		dst[--len] = '\0';
}

void
apps_op(struct apps *a, struct client *c)
{
	uint64_t sec = p11mux_now_ns() / 1000000000u;
	unsigned slot = (unsigned)(sec % 10);
	struct app *app = c->app;
	uint_fast64_t old;

	(void)a;
	if (app == NULL)
		return;
	atomic_fetch_add(&app->ops, 1);
	/* The first operation of a second claims its slot and restarts its count (another
	 * thread's increment in that instant may be lost: a figure for people, not an account). */
	old = atomic_load(&app->op_second[slot]);
	if (old != sec && atomic_compare_exchange_strong(&app->op_second[slot], &old, sec))
		atomic_store(&app->op_count[slot], 0);
	atomic_fetch_add(&app->op_count[slot], 1);
}

int
apps_list(struct apps *a, struct app_info **out, size_t *n)
{
	uint64_t sec = p11mux_now_ns() / 1000000000u, recent;
	struct app_info *v;
	struct app *app;
	size_t k = 0, i;

	*out = NULL;
	*n = 0;
	if (!a->ready)
		return 0;
	p11mux_lock(&a->lock);
	if ((v = calloc(a->napps + 1, sizeof(*v))) == NULL) {
		p11mux_unlock(&a->lock);
		return -1;
	}
	for (app = a->list; app != NULL; app = app->next) {
		if (app->conns == 0)
			continue;
		v[k].uid = app->uid;
		v[k].pid = app->pid;
		memcpy(v[k].comm, app->comm, sizeof(v[k].comm));
		v[k].conns = app->conns;
		v[k].objects = app->nobjs;
		v[k].ops = atomic_load(&app->ops);
		for (i = 0, recent = 0; i < 10; i++) {
			uint64_t s = atomic_load(&app->op_second[i]);

			if (s < sec && s + 10 >= sec)
				recent += atomic_load(&app->op_count[i]);
		}
		v[k].ops_per_s = (double)recent / 10;
		k++;
	}
	p11mux_unlock(&a->lock);
	*out = v;
	*n = k;
	return 0;
}

CK_RV
apps_bind(struct apps *a, struct client *c, uint64_t id)
{
	struct app *app;

	if (c->app != NULL)
		return CKR_FUNCTION_FAILED;
	p11mux_lock(&a->lock);
	for (app = a->list; app != NULL; app = app->next)
		if (app->id == id && app->uid == c->uid && app->pid == c->pid)
			break;
	if (app == NULL) {
		if ((app = calloc(1, sizeof(*app))) == NULL) {
			p11mux_unlock(&a->lock);
			return CKR_HOST_MEMORY;
		}
		app->id = id;
		app->uid = c->uid;
		app->pid = c->pid;
		read_comm(c->pid, app->comm, sizeof(app->comm));
		app->next = a->list;
		a->list = app;
		a->napps++;
	}
	app->conns++;
	c->app = app;
	p11mux_unlock(&a->lock);
	return CKR_OK;
}

void
apps_unbind(struct apps *a, struct client *c)
{
	if (c->app == NULL)
		return;
	p11mux_lock(&a->lock);
	if (--c->app->conns == 0)
		c->app->idle_ns = p11mux_now_ns();
	p11mux_unlock(&a->lock);
	c->app = NULL;
}

CK_RV
apps_reserve(struct apps *a, struct client *c, size_t n, size_t bytes)
{
	struct app *app = c->app, *other;
	size_t uid_objs = 0, uid_bytes = 0, all = 0;
	CK_RV rv = CKR_OK;

	if (app == NULL)
		return CKR_FUNCTION_FAILED;
	p11mux_lock(&a->lock);
	for (other = a->list; other != NULL; other = other->next) {
		all += other->nobjs;
		if (other->uid == app->uid) {
			uid_objs += other->nobjs;
			uid_bytes += other->bytes;
		}
	}
	if (app->nobjs + n > a->max_objects || app->bytes + bytes > a->max_bytes ||
	    uid_objs + n > a->max_uid_objects || uid_bytes + bytes > a->max_uid_bytes ||
	    all + n > a->max_total) {
		a->refused++;
		rv = CKR_DEVICE_MEMORY;
	} else {
		app->nobjs += n;
		app->bytes += bytes;
	}
	p11mux_unlock(&a->lock);
	if (rv != CKR_OK)
		log_warn("client pid %ld uid %lu: session object quota reached (%u objects, %zu "
		         "bytes at most a process, %u and %zu a user, %u in all); refused with "
		         "CKR_DEVICE_MEMORY",
		         (long)c->pid, (unsigned long)c->uid, a->max_objects, a->max_bytes,
		         a->max_uid_objects, a->max_uid_bytes, a->max_total);
	return rv;
}

void
apps_release(struct apps *a, struct client *c, size_t n, size_t bytes)
{
	p11mux_lock(&a->lock);
	c->app->nobjs -= n;
	c->app->bytes -= bytes;
	p11mux_unlock(&a->lock);
}

/* An attribute's CK_BBOOL value in mo; dflt when absent. */
static int
mobject_bool(const struct mobject *mo, CK_ATTRIBUTE_TYPE t, int dflt)
{
	size_t i;

	for (i = 0; i < mo->n; i++)
		if (mo->attrs[i].type == t && mo->status[i] == CKR_OK &&
		    mo->attrs[i].pValue != NULL && mo->attrs[i].ulValueLen == sizeof(CK_BBOOL))
			return *(CK_BBOOL *)mo->attrs[i].pValue != CK_FALSE;
	return dflt;
}

CK_OBJECT_HANDLE
sobj_add(struct apps *a, struct client *c, struct pool *p, size_t idx, uint64_t gen,
         CK_SESSION_HANDLE session, struct mobject *mo, size_t bytes)
{
	struct sobj *o;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	size_t i;

	if ((o = calloc(1, sizeof(*o))) == NULL ||
	    (o->po.backend = calloc(VIEW_MAX_MEMBERS, sizeof(*o->po.backend))) == NULL) {
		free(o);
		mobject_free(mo);
		return CK_INVALID_HANDLE;
	}
	for (i = 0; i < VIEW_MAX_MEMBERS; i++)
		o->po.backend[i] = CK_INVALID_HANDLE;
	o->po.backend[idx] = mo->h;
	o->po.index = POBJECT_NO_INDEX; /* the members' "no key" service time */
	o->po.cls = mo->cls;
	o->po.ktype = mo->ktype;
	o->po.private = mobject_bool(mo, CKA_PRIVATE, 1);
	o->po.attrs = mo->attrs;
	o->po.status = mo->status;
	o->po.n = mo->n;
	mo->attrs = NULL;
	mo->status = NULL;
	mo->n = 0;
	mobject_free(mo);
	o->pool = p;
	o->member = idx;
	o->gen = gen;
	o->session = session;
	o->bytes = bytes;
	p11mux_lock(&a->lock);
	h = P11MUX_SESSION_OBJECT | (a->next++ & 0x7fffffff);
	if ((a->next & 0x7fffffff) == 0)
		a->next = 1;
	o->po.handle = h;
	snprintf(o->po.desc, sizeof(o->po.desc), "session object %lu of pid %ld", h & 0x7fffffff,
	         (long)c->pid);
	o->next = c->app->objs;
	c->app->objs = o;
	a->made++;
	p11mux_unlock(&a->lock);
	return h;
}

/* c's application's live object h of pool p, or NULL. Lock held. */
static struct sobj **
find_locked(struct client *c, const struct pool *p, CK_OBJECT_HANDLE h)
{
	struct sobj **op;

	if (c->app == NULL)
		return NULL;
	for (op = &c->app->objs; *op != NULL; op = &(*op)->next)
		if ((*op)->po.handle == h && (*op)->pool == p && !(*op)->dead)
			return op;
	return NULL;
}

struct sobj *
sobj_get(struct apps *a, struct client *c, const struct pool *p, CK_OBJECT_HANDLE h)
{
	struct sobj **op, *o = NULL;

	p11mux_lock(&a->lock);
	if ((op = find_locked(c, p, h)) != NULL) {
		o = *op;
		o->refs++;
	}
	p11mux_unlock(&a->lock);
	return o;
}

void
sobj_put(struct apps *a, struct sobj *o)
{
	int gone, destroy;
	CK_RV rv;

	p11mux_lock(&a->lock);
	gone = --o->refs == 0 && o->dead;
	destroy = o->destroy;
	p11mux_unlock(&a->lock);
	if (!gone)
		return;
	/* Nothing to do when its helper is gone: the object went with it. */
	if (destroy && (rv = pool_pinned_destroy(o->pool, o->member, o->gen, &o->po)) != CKR_OK &&
	    rv != CKR_DEVICE_REMOVED)
		log_warn("pool \"%s\": %s could not be destroyed on its member: %s", o->pool->label,
		         o->po.desc, p11mux_rv_name(rv));
	sobj_free(o);
}

/* Unlinks o from its application (which gets its quota back) and marks it dead; the caller
 * holds a reference. Lock held. */
static void
unlink_locked(struct app *app, struct sobj **op)
{
	struct sobj *o = *op;

	*op = o->next;
	o->next = NULL;
	o->dead = 1;
	app->nobjs--;
	app->bytes -= o->bytes;
}

void
sobj_lost(struct apps *a, struct sobj *o)
{
	struct app *app;
	struct sobj **op;

	p11mux_lock(&a->lock);
	for (app = a->list; app != NULL && !o->dead; app = app->next)
		for (op = &app->objs; *op != NULL; op = &(*op)->next)
			if (*op == o) {
				unlink_locked(app, op);
				a->lost++;
				break;
			}
	p11mux_unlock(&a->lock);
}

/* Has o (dead, unlinked) destroyed on its member once no request uses it, and drops the
 * caller's reference. */
static void
destroy_on_member(struct apps *a, struct sobj *o)
{
	p11mux_lock(&a->lock);
	o->destroy = 1;
	p11mux_unlock(&a->lock);
	sobj_put(a, o);
}

CK_RV
sobj_destroy(struct apps *a, struct client *c, struct pool *p, CK_OBJECT_HANDLE h)
{
	struct sobj **op, *o;

	p11mux_lock(&a->lock);
	if ((op = find_locked(c, p, h)) == NULL) {
		p11mux_unlock(&a->lock);
		return CKR_OBJECT_HANDLE_INVALID;
	}
	o = *op;
	o->refs++;
	unlink_locked(c->app, op);
	a->destroyed++;
	p11mux_unlock(&a->lock);
	destroy_on_member(a, o);
	return CKR_OK;
}

/* Unlinks the objects of app in pool p (NULL: all pools) made in session (0: all;
 * P11MUX_DROP_PRIVATE: the private ones) onto a list, each with a reference for the caller.
 * Lock held. */
static struct sobj *
take_locked(struct apps *a, struct app *app, const struct pool *p, CK_SESSION_HANDLE session)
{
	struct sobj **op = &app->objs, *taken = NULL, *o;

	while (*op != NULL) {
		o = *op;
		if (o->dead || (p != NULL && o->pool != p) ||
		    (session == P11MUX_DROP_PRIVATE ? !o->po.private
		                                    : session != 0 && o->session != session)) {
			op = &o->next;
			continue;
		}
		o->refs++;
		unlink_locked(app, op);
		a->destroyed++;
		o->next = taken;
		taken = o;
	}
	return taken;
}

static void
destroy_list(struct apps *a, struct sobj *o)
{
	struct sobj *next;

	for (; o != NULL; o = next) {
		next = o->next;
		destroy_on_member(a, o);
	}
}

void
sobj_drop(struct apps *a, struct client *c, struct pool *p, CK_SESSION_HANDLE session)
{
	struct sobj *taken;

	if (c->app == NULL)
		return;
	p11mux_lock(&a->lock);
	taken = take_locked(a, c->app, p, session);
	p11mux_unlock(&a->lock);
	destroy_list(a, taken);
}

struct reaper {
	struct apps *a;
	struct sobj *objs;
};

static void *
reap(void *arg)
{
	struct reaper *r = arg;

	struct apps *a = r->a;

	destroy_list(a, r->objs);
	free(r);
	p11mux_lock(&a->lock);
	a->reapers--;
	pthread_cond_broadcast(&a->reaped);
	p11mux_unlock(&a->lock);
	return NULL;
}

int
apps_sweep(struct apps *a)
{
	uint64_t now = p11mux_now_ns();
	struct sobj *taken = NULL, *t;
	struct app **ap, *app;
	struct reaper *r;
	pthread_t th;
	int waiting = 0;

	p11mux_lock(&a->lock);
	for (ap = &a->list; *ap != NULL;) {
		app = *ap;
		if (app->conns > 0) {
			ap = &app->next;
			continue;
		}
		if (app->objs != NULL && now - app->idle_ns < APP_GRACE_S * 1000000000ull) {
			waiting = 1;
			ap = &app->next;
			continue;
		}
		if (app->objs != NULL) {
			log_info("client pid %ld uid %lu is gone: its %zu session objects are "
			         "destroyed",
			         (long)app->pid, (unsigned long)app->uid, app->nobjs);
			t = take_locked(a, app, NULL, 0);
			while (t != NULL) {
				struct sobj *next = t->next;

				t->next = taken;
				taken = t;
				t = next;
			}
		}
		*ap = app->next;
		a->napps--;
		free(app);
	}
	p11mux_unlock(&a->lock);
	if (taken == NULL)
		return waiting;
	/* Device calls do not belong in the accept loop. */
	if ((r = malloc(sizeof(*r))) != NULL) {
		r->a = a;
		r->objs = taken;
		p11mux_lock(&a->lock);
		a->reapers++;
		p11mux_unlock(&a->lock);
		if (pthread_create(&th, NULL, reap, r) == 0) {
			pthread_detach(th);
			return waiting;
		}
		p11mux_lock(&a->lock);
		a->reapers--;
		p11mux_unlock(&a->lock);
		free(r);
	}
	destroy_list(a, taken);
	return waiting;
}

void
apps_strike(struct apps *a, struct client *c)
{
	p11mux_lock(&a->lock);
	a->struck[a->next_strike].uid = c->uid;
	a->struck[a->next_strike].until_ns = p11mux_now_ns() + QUARANTINE_S * 1000000000ull;
	a->next_strike = (a->next_strike + 1) % (sizeof(a->struck) / sizeof(a->struck[0]));
	p11mux_unlock(&a->lock);
	log_error("client pid %ld uid %lu: making a session object cost a member's helper; this "
	          "user makes none for %d s",
	          (long)c->pid, (unsigned long)c->uid, QUARANTINE_S);
}

int
apps_struck(struct apps *a, uid_t uid)
{
	uint64_t now = p11mux_now_ns();
	size_t i;
	int found = 0;

	p11mux_lock(&a->lock);
	for (i = 0; i < sizeof(a->struck) / sizeof(a->struck[0]) && !found; i++)
		found = a->struck[i].until_ns > now && a->struck[i].uid == uid;
	p11mux_unlock(&a->lock);
	return found;
}

size_t
apps_count_pool(struct apps *a, const struct pool *p, size_t idx)
{
	struct app *app;
	struct sobj *o;
	size_t n = 0;

	if (!a->ready)
		return 0;
	p11mux_lock(&a->lock);
	for (app = a->list; app != NULL; app = app->next)
		for (o = app->objs; o != NULL; o = o->next)
			n += !o->dead && o->pool == p && (idx == SIZE_MAX || o->member == idx);
	p11mux_unlock(&a->lock);
	return n;
}

void
apps_count(struct apps *a, size_t *napps, size_t *nobjs, size_t *bytes)
{
	struct app *app;

	*nobjs = *bytes = 0;
	p11mux_lock(&a->lock);
	*napps = a->napps;
	for (app = a->list; app != NULL; app = app->next) {
		*nobjs += app->nobjs;
		*bytes += app->bytes;
	}
	p11mux_unlock(&a->lock);
}
