/* A daemon without devices (stubd.h). */
#include "stubd.h"
#include "check.h"
#include "scratch.h"
#include "thread.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const stubd_pins[STUBD_NPOOLS] = {"1234", "secret-pin"};
const char *const stubd_labels[STUBD_NPOOLS] = {"pool-a", "pool-b"};
/* Not 0 and 1: the slot must be looked up, not indexed. */
static const CK_SLOT_ID slot_ids[STUBD_NPOOLS] = {0, 7};

/* The pools' mechanisms: one without any capability, and key generation mechanisms, so that a
 * mechanism the pool lists can still be the wrong one. */
static const struct {
	CK_MECHANISM_TYPE type;
	CK_FLAGS flags;
} mechs[] = {
        {CKM_RSA_PKCS, CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_RSA_PKCS_PSS, CKF_SIGN | CKF_VERIFY},
        {CKM_SHA256_RSA_PKCS_PSS, CKF_SIGN | CKF_VERIFY},
        {CKM_SHA256_RSA_PKCS, CKF_SIGN | CKF_VERIFY},
        {CKM_RSA_PKCS_OAEP, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_ECDSA, CKF_SIGN | CKF_VERIFY},
        {CKM_SHA256, CKF_DIGEST},
        {CKM_AES_CBC, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_AES_CTR, CKF_ENCRYPT | CKF_DECRYPT},
        {CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR},
        {CKM_EC_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR},
        {CKM_AES_KEY_GEN, CKF_GENERATE},
        {CKM_DES3_KEY_GEN, 0},
};

/* An attribute list being built for one member object. */
struct alist {
	CK_ATTRIBUTE a[12];
	CK_RV st[12];
	size_t n;
};

static void
add(struct alist *l, CK_ATTRIBUTE_TYPE t, const void *v, size_t len)
{
	CHECK(l->n < sizeof(l->a) / sizeof(l->a[0]));
	l->a[l->n].type = t;
	l->a[l->n].pValue = NULL;
	l->a[l->n].ulValueLen = 0;
	l->st[l->n] = CKR_ATTRIBUTE_SENSITIVE; /* v NULL: a value the device does not give */
	if (v != NULL) {
		CHECK((l->a[l->n].pValue = malloc(len ? len : 1)) != NULL);
		memcpy(l->a[l->n].pValue, v, len);
		l->a[l->n].ulValueLen = len;
		l->st[l->n] = CKR_OK;
	}
	l->n++;
}

static void
add_ulong(struct alist *l, CK_ATTRIBUTE_TYPE t, CK_ULONG v)
{
	add(l, t, &v, sizeof(v));
}

static void
add_bool(struct alist *l, CK_ATTRIBUTE_TYPE t, CK_BBOOL v)
{
	add(l, t, &v, sizeof(v));
}

static void
add_str(struct alist *l, CK_ATTRIBUTE_TYPE t, const char *s)
{
	add(l, t, s, strlen(s));
}

/* The attributes of object `which` as member k holds it. */
static void
object_attrs(struct alist *l, enum stubd_object which, size_t k, CK_OBJECT_CLASS *cls,
             CK_KEY_TYPE *kt)
{
	static const uint8_t e65537[] = {1, 0, 1};

	*kt = (CK_KEY_TYPE)-1;
	switch (which) {
	case STUBD_RSA_PRIV:
	case STUBD_RSA_PRIV_OPEN:
		*cls = CKO_PRIVATE_KEY;
		*kt = CKK_RSA;
		add_str(l, CKA_ID, which == STUBD_RSA_PRIV ? "\x01" : "\x04");
		add_str(l, CKA_LABEL, which == STUBD_RSA_PRIV ? "rsa" : "open");
		add_bool(l, CKA_PRIVATE, which == STUBD_RSA_PRIV);
		add_bool(l, CKA_SIGN, CK_TRUE);
		add_bool(l, CKA_DECRYPT, CK_TRUE);
		add_str(l, CKA_MODULUS, which == STUBD_RSA_PRIV ? "modulus-rsa" : "modulus-open");
		add(l, CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537));
		add(l, CKA_PRIVATE_EXPONENT, NULL, 0);
		break;
	case STUBD_RSA_PUB:
		*cls = CKO_PUBLIC_KEY;
		*kt = CKK_RSA;
		add_str(l, CKA_ID, "\x01");
		add_str(l, CKA_LABEL, "rsa");
		add_bool(l, CKA_PRIVATE, CK_FALSE);
		add_bool(l, CKA_VERIFY, CK_TRUE);
		add_bool(l, CKA_ENCRYPT, CK_TRUE);
		add_str(l, CKA_MODULUS, "modulus-rsa");
		add(l, CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537));
		break;
	case STUBD_CERT:
	case STUBD_CERT_SPLIT:
		*cls = CKO_CERTIFICATE;
		add_ulong(l, CKA_CERTIFICATE_TYPE, CKC_X_509);
		add_str(l, CKA_ID, which == STUBD_CERT ? "\x01" : "\x05");
		add_str(l, CKA_LABEL, which == STUBD_CERT ? "rsa" : "split");
		add_bool(l, CKA_PRIVATE, CK_FALSE);
		add_str(l, CKA_VALUE,
		        which == STUBD_CERT ? "0\x82 cert-rsa"
		        : k == 2            ? "0\x82 cert-v2"
		                            : "0\x82 cert-v1");
		break;
	case STUBD_EC_PRIV:
		*cls = CKO_PRIVATE_KEY;
		*kt = CKK_EC;
		add_str(l, CKA_ID, "\x02");
		add_str(l, CKA_LABEL, "ec");
		add_bool(l, CKA_PRIVATE, CK_TRUE);
		add_bool(l, CKA_SIGN, CK_FALSE);
		add_str(l, CKA_EC_PARAMS, "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07");
		add_str(l, CKA_EC_POINT, "\x04\x41 point");
		break;
	case STUBD_AES:
		*cls = CKO_SECRET_KEY;
		*kt = CKK_AES;
		add_str(l, CKA_ID, "\x03");
		add_str(l, CKA_LABEL, "aes");
		add_bool(l, CKA_ENCRYPT, CK_TRUE);
		add_bool(l, CKA_DECRYPT, CK_TRUE);
		add_ulong(l, CKA_VALUE_LEN, 32);
		add_str(l, CKA_CHECK_VALUE, "\xa1\xb2\xc3");
		break;
	case STUBD_DATA_PRIV:
		*cls = CKO_DATA;
		add_str(l, CKA_LABEL, "secret-data");
		add_str(l, CKA_APPLICATION, "app");
		add_bool(l, CKA_PRIVATE, CK_TRUE);
		add_str(l, CKA_VALUE, "data");
		break;
	default:
		abort();
	}
	/* First, as devices list it. */
	add_ulong(l, CKA_CLASS, *cls);
	if (*kt != (CK_KEY_TYPE)-1)
		add_ulong(l, CKA_KEY_TYPE, *kt);
}

static struct mobject *
member_object(enum stubd_object which, size_t k)
{
	struct alist l = {.n = 0};
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE *attrs;
	CK_RV *st;
	struct mobject *o;

	object_attrs(&l, which, k, &cls, &kt);
	CHECK((attrs = calloc(l.n, sizeof(*attrs))) != NULL);
	CHECK((st = calloc(l.n, sizeof(*st))) != NULL);
	memcpy(attrs, l.a, l.n * sizeof(*attrs));
	memcpy(st, l.st, l.n * sizeof(*st));
	CHECK((o = mobject_new(k, 100 * (k + 1) + which, cls, kt, attrs, st, l.n)) != NULL);
	return o;
}

/* The view, from every member's objects (member 2 lacks the EC key). */
static void
build_view(struct pool *p)
{
	struct view_member vm[STUBD_NMEMBERS];
	struct mobject *all[STUBD_NMEMBERS * STUBD_NOBJECTS];
	struct p11mux_err e = {""};
	size_t k, n = 0, i;
	int w;

	for (k = 0; k < STUBD_NMEMBERS; k++) {
		vm[k].label = p->members[k].label;
		vm[k].up = 1;
		for (w = 0; w < STUBD_NOBJECTS; w++)
			if (!(w == STUBD_EC_PRIV && k == 2))
				all[n++] = member_object((enum stubd_object)w, k);
	}
	CHECK(mobjects_fingerprint(all, n) == 0);
	p->view.slot = p->slot.id;
	p->view.label = p->label;
	p->view.nmembers = p->nmembers;
	CHECK(view_build(&p->view, vm, all, n, &e) == 0);
	for (i = 0; i < n; i++)
		mobject_free(all[i]);
	/* Member 0 lists every object, in enum order: the view keeps that order. */
	CHECK(p->view.nobjects == STUBD_NOBJECTS);
	CHECK(p->view.objects[STUBD_RSA_PRIV]->cls == CKO_PRIVATE_KEY);
	CHECK(p->view.objects[STUBD_RSA_PRIV]->private);
	CHECK(!p->view.objects[STUBD_RSA_PRIV_OPEN]->private);
	CHECK(p->view.objects[STUBD_DATA_PRIV]->cls == CKO_DATA);
	CHECK(p->view.objects[STUBD_CERT_SPLIT]->holding[2] == HOLD_DIFFERENT);
}

/* What build_slot_info() and build_mechanisms() would make of the members. */
static void
build_slot(struct pool *p)
{
	size_t i, n = sizeof(mechs) / sizeof(mechs[0]);

	p->slot.id = slot_ids[p->index];
	p11mux_pad(p->slot.slot.slotDescription, sizeof(p->slot.slot.slotDescription), p->label);
	p11mux_pad(p->slot.slot.manufacturerID, sizeof(p->slot.slot.manufacturerID), "p11mux");
	p->slot.slot.flags = CKF_TOKEN_PRESENT;
	p11mux_pad(p->slot.token.label, sizeof(p->slot.token.label), p->label);
	p11mux_pad(p->slot.token.manufacturerID, sizeof(p->slot.token.manufacturerID), "p11mux");
	p11mux_pad(p->slot.token.model, sizeof(p->slot.token.model), "pool");
	p11mux_pad(p->slot.token.serialNumber, sizeof(p->slot.token.serialNumber), p->label);
	p->slot.token.flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
	/* The second pool's members have no RNG. */
	p->has_rng = p->index == 0;
	if (p->has_rng)
		p->slot.token.flags |= CKF_RNG;
	p->slot.token.ulMaxPinLen = 255;
	CHECK((p->slot.mechs = calloc(n, sizeof(*p->slot.mechs))) != NULL);
	CHECK((p->slot.infos = calloc(n, sizeof(*p->slot.infos))) != NULL);
	for (i = 0; i < n; i++) {
		p->slot.mechs[i] = mechs[i].type;
		p->slot.infos[i].flags = mechs[i].flags;
		p->slot.infos[i].ulMinKeySize = 256;
		p->slot.infos[i].ulMaxKeySize = 4096;
	}
	p->slot.nmechs = n;
}

static void
open_members(struct pool *p)
{
	struct p11mux_err e = {""};
	char name[33];
	size_t k;

	CHECK((p->members = calloc(P11MUX_POOL_MAX_MEMBERS, sizeof(*p->members))) != NULL);
	for (k = 0; k < STUBD_NMEMBERS; k++) {
		struct member *m = &p->members[k];

		snprintf(name, sizeof(name), "hsm-%c%zu", 'a' + (int)p->index, k + 1);
		CHECK(member_init(m, p, k, name, &p->plain, &e) == 0);
		snprintf(m->serial, sizeof(m->serial), "%c%zu00", 'A' + (int)p->index, k + 1);
		m->state = MEMBER_UP;
		m->generation = 1;
		m->up_ns = p11mux_now_ns();
		p->nmembers++;
	}
}

static void
open_pool(struct stubd *s, size_t i)
{
	struct pool_config *cfg = &s->pcfg[i];
	struct pool *p = &s->pools[i];
	struct p11mux_err e = {""};
	size_t k;

	cfg->label = (char *)stubd_labels[i];
	cfg->module = "/stub/module.so";
	cfg->pin_file = "/stub/pin";
	cfg->slot_id = (long)slot_ids[i];
	cfg->op_timeout_ms = 1000;
	cfg->max_attempts = 3;
	cfg->probe_interval_ms = 1000;
	cfg->probe_max_ms = 30000;
	cfg->workers_per_member = 1;
	cfg->pin_max_failures = 3;
	cfg->state_dir = s->state_dir;
	for (k = 0; k < STUBD_NMEMBERS; k++) {
		snprintf(s->mnames[i][k], sizeof(s->mnames[i][k]), "hsm-%c%zu", 'a' + (int)i,
		         k + 1);
		s->mcfg[i][k].token = s->mnames[i][k];
	}
	cfg->members = s->mcfg[i];
	cfg->nmembers = STUBD_NMEMBERS;
	memset(p, 0, sizeof(*p));
	p->index = i;
	p->cfg = cfg;
	p->exe = "/stub/p11muxd";
	p->plain.module = cfg->module;
	p->policy = i == 0 ? SCHED_LEAST_LOADED : SCHED_ROUND_ROBIN;
	pthread_mutex_init(&p->quarantine.lock, NULL);
	snprintf(p->label, sizeof(p->label), "%s", stubd_labels[i]);
	CHECK((p->pin = strdup(stubd_pins[i])) != NULL);
	p->pinlen = strlen(p->pin);
	CHECK(guard_open(&p->guard, s->state_dir, p->label, cfg->pin_max_failures, p->pin,
	                 p->pinlen, &e) == 0);
	open_members(p);
	build_slot(p);
	build_view(p);
	for (k = 0; k < p->nmembers; k++) {
		p->members[k].nsvc = p->view.nobjects + 1;
		CHECK((p->members[k].svc = calloc(p->members[k].nsvc, sizeof(double))) != NULL);
	}
}

void
stubd_open(struct stubd *s)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	/* The PIN counter is saved (and synced) on every wrong PIN: a memory file system keeps
	 * that cheap. */
	scratch_mkdir("state", s->state_dir, sizeof(s->state_dir));
	s->cfg.path = "/stub/p11mux.conf";
	s->cfg.socket = "/stub/p11mux.sock";
	s->cfg.control_socket = "/stub/control.sock";
	s->cfg.state_dir = s->state_dir;
	s->cfg.limits = (struct limits){4096, 2048, 256, 5000, 5000, 5000, 4, 16384, 6, 32768, 8};
	s->cfg.pools = s->pcfg;
	s->cfg.npools = STUBD_NPOOLS;
	for (i = 0; i < STUBD_NPOOLS; i++)
		open_pool(s, i);
	s->d.cfg = &s->cfg;
	s->d.pools = s->pools;
	s->d.npools = STUBD_NPOOLS;
	s->d.listen_fd = s->d.control_fd = -1;
	s->d.stop_pipe[0] = s->d.stop_pipe[1] = -1;
	s->d.max_clients = s->cfg.limits.max_clients;
	pthread_mutex_init(&s->d.lock, NULL);
	p11mux_cond_init(&s->d.gone);
	CHECK(apps_init(&s->d.apps, s->cfg.limits.session_objects,
	                s->cfg.limits.session_object_bytes, s->cfg.limits.session_objects_per_uid,
	                s->cfg.limits.session_object_bytes_per_uid,
	                s->cfg.limits.session_objects_total) == 0);
	lograte_init(&s->d.refused, "refused connections or accept errors");
	lograte_init(&s->d.dropped, "connections closed for a time-out or an error");
	lograte_init(&s->d.ctl_refused, "control connections refused");
	lograte_init(&s->d.ctl_dropped, "control connections closed for a time-out");
}

void
stubd_no_delay(struct stubd *s)
{
	size_t i;

	for (i = 0; i < STUBD_NPOOLS; i++) {
		p11mux_lock(&s->pools[i].guard.lock);
		s->pools[i].guard.next_ns = 0;
		p11mux_unlock(&s->pools[i].guard.lock);
	}
}

static void
reset_member(struct member *m)
{
	char drain[64];

	p11mux_lock(&m->lock);
	m->state = MEMBER_UP;
	m->lost = 0;
	m->lost_status = 0;
	m->lone_failures = 0;
	m->killed_gen = UINT64_MAX;
	m->reason[0] = '\0';
	m->running = m->queued = 0;
	p11mux_unlock(&m->lock);
	/* What lose_locked() wrote for the member thread, which does not run. */
	while (read(m->wake[0], drain, sizeof(drain)) > 0)
		;
}

void
stubd_reset(struct stubd *s)
{
	struct p11mux_err e = {""};
	size_t i, k;
	int locked;

	for (i = 0; i < STUBD_NPOOLS; i++) {
		struct pool *p = &s->pools[i];

		if (guard_failures(&p->guard, &locked) != 0)
			CHECK(guard_unlock(&p->guard, &e) == 0);
		p11mux_lock(&p->quarantine.lock);
		memset(p->quarantine.e, 0, sizeof(p->quarantine.e));
		p->quarantine.next = 0;
		atomic_store(&p->quarantine.count, 0);
		p11mux_unlock(&p->quarantine.lock);
		for (k = 0; k < p->nmembers; k++)
			reset_member(&p->members[k]);
	}
	/* Session objects of the input before are gone, as with a daemon restart. */
	apps_destroy(&s->d.apps);
	CHECK(apps_init(&s->d.apps, s->cfg.limits.session_objects,
	                s->cfg.limits.session_object_bytes, s->cfg.limits.session_objects_per_uid,
	                s->cfg.limits.session_object_bytes_per_uid,
	                s->cfg.limits.session_objects_total) == 0);
	stubd_no_delay(s);
}

const struct pobject *
stubd_object(const struct stubd *s, size_t pool, enum stubd_object which)
{
	return s->pools[pool].view.objects[which];
}

void
stubd_client_init(struct stubd *s, struct client *c, uid_t uid, pid_t pid)
{
	memset(c, 0, sizeof(*c));
	c->d = &s->d;
	c->fd = -1;
	c->uid = uid;
	c->gid = uid;
	c->pid = pid;
	c->accepted_ns = p11mux_now_ns();
	CHECK((c->logged_in = calloc(STUBD_NPOOLS + 1, 1)) != NULL);
}

void
stubd_client_free(struct client *c)
{
	if (c->d != NULL && c->app != NULL && c->d->apps.ready)
		apps_unbind(&c->d->apps, c);
	c->app = NULL;
	free(c->logged_in);
	c->logged_in = NULL;
}
