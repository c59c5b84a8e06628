/*
 * Unit tests of daemon/view.c: the pool's objects built from what each member holds, the
 * virtual handles, and a member remapped when it rejoins. No device: member objects are made
 * here, as a helper would describe them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "view.h"

#define NMEMBERS 3

static const struct view_member members[NMEMBERS] = {{"hsm1", 1}, {"hsm2", 1}, {"hsm3", 1}};

/* An attribute list under construction. */
struct alist {
	CK_ATTRIBUTE a[8];
	CK_RV st[8];
	size_t n;
};

static void
add(struct alist *l, CK_ATTRIBUTE_TYPE t, const void *v, size_t len)
{
	l->a[l->n].type = t;
	l->a[l->n].pValue = malloc(len ? len : 1);
	assert_non_null(l->a[l->n].pValue);
	memcpy(l->a[l->n].pValue, v, len);
	l->a[l->n].ulValueLen = len;
	l->st[l->n] = CKR_OK;
	l->n++;
}

/* A member object: class, key type, CKA_ID, label, and key material (an RSA modulus, an EC
 * point, or nothing). */
static struct mobject *
mk(size_t member, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, const char *id,
   const char *label, const char *material)
{
	struct alist l = {.n = 0};
	CK_ATTRIBUTE *attrs;
	CK_RV *st;
	CK_BBOOL yes = CK_TRUE;
	static const uint8_t e[] = {1, 0, 1};

	add(&l, CKA_CLASS, &cls, sizeof(cls));
	add(&l, CKA_ID, id, strlen(id));
	add(&l, CKA_LABEL, label, strlen(label));
	if (cls == CKO_PRIVATE_KEY)
		add(&l, CKA_PRIVATE, &yes, sizeof(yes));
	if (kt == CKK_RSA && material != NULL) {
		add(&l, CKA_MODULUS, material, strlen(material));
		add(&l, CKA_PUBLIC_EXPONENT, e, sizeof(e));
	}
	if (kt == CKK_EC && material != NULL)
		add(&l, CKA_EC_POINT, material, strlen(material));
	attrs = calloc(l.n, sizeof(*attrs));
	st = calloc(l.n, sizeof(*st));
	assert_non_null(attrs);
	assert_non_null(st);
	memcpy(attrs, l.a, l.n * sizeof(*attrs));
	memcpy(st, l.st, l.n * sizeof(*st));
	return mobject_new(member, h, cls, kt, attrs, st, l.n);
}

/* A view of the objects (fingerprinted here), in slot 0 unless said otherwise. */
static void
build(struct view *v, CK_SLOT_ID slot, struct mobject **all, size_t n)
{
	struct p11mux_err e = {""};

	memset(v, 0, sizeof(*v));
	v->slot = slot;
	v->label = "pool";
	v->nmembers = NMEMBERS;
	assert_int_equal(mobjects_fingerprint(all, n), 0);
	assert_int_equal(view_build(v, members, all, n, &e), 0);
}

static void
free_all(struct mobject **all, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		mobject_free(all[i]);
}

static CK_OBJECT_HANDLE
backend(const struct pobject *o, size_t k)
{
	return __atomic_load_n(&o->backend[k], __ATOMIC_ACQUIRE);
}

/* The same key on every member is one object, used on all of them with their own handles. */
static void
view_same_key_everywhere(void **state)
{
	struct mobject *all[NMEMBERS];
	struct view v;
	size_t k;

	(void)state;
	for (k = 0; k < NMEMBERS; k++)
		all[k] = mk(k, 100 + k, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	build(&v, 0, all, NMEMBERS);
	assert_int_equal(v.nobjects, 1);
	assert_true(v.objects[0]->private);
	assert_int_not_equal(v.objects[0]->handle, 0);
	assert_ptr_equal(view_object(&v, v.objects[0]->handle), v.objects[0]);
	for (k = 0; k < NMEMBERS; k++) {
		assert_int_equal(backend(v.objects[0], k), 100 + k);
		assert_int_equal(v.objects[0]->holding[k], HOLD_SAME);
	}
	free_all(all, NMEMBERS);
	view_free(&v);
}

/* Two members hold key A, one holds B under the same name: A wins, the third is not used for
 * it; a member that lacks the object is not used either. */
static void
view_majority_and_lacking(void **state)
{
	struct mobject *all[5];
	const struct pobject *o;
	const uint8_t *p;
	struct view v;
	size_t len;

	(void)state;
	all[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-B");
	all[1] = mk(1, 11, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	all[2] = mk(2, 12, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	all[3] = mk(0, 20, CKO_CERTIFICATE, (CK_ULONG)-1, "\x01", "tls", NULL);
	all[4] = mk(2, 22, CKO_CERTIFICATE, (CK_ULONG)-1, "\x01", "tls", NULL);
	build(&v, 0, all, 5);
	assert_int_equal(v.nobjects, 2);
	o = v.objects[0]->cls == CKO_PRIVATE_KEY ? v.objects[0] : v.objects[1];
	assert_int_equal(pobject_material(o, &p, &len), 1);
	assert_int_equal(len, strlen("MODULUS-A"));
	assert_memory_equal(p, "MODULUS-A", len);
	assert_int_equal(backend(o, 0), CK_INVALID_HANDLE);
	assert_int_equal(o->holding[0], HOLD_DIFFERENT);
	assert_int_equal(backend(o, 1), 11);
	assert_int_equal(backend(o, 2), 12);
	o = v.objects[0]->cls == CKO_CERTIFICATE ? v.objects[0] : v.objects[1];
	assert_int_equal(o->holding[1], HOLD_LACKS);
	assert_int_equal(backend(o, 0), 20);
	assert_int_equal(backend(o, 2), 22);
	free_all(all, 5);
	view_free(&v);
}

/* One member each: the variant on the member listed first wins. */
static void
view_tie_goes_to_first_member(void **state)
{
	struct mobject *all[2];
	struct view v;

	(void)state;
	/* The daemon reads the members in their order: hsm1's objects come first. */
	all[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	all[1] = mk(1, 11, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-B");
	build(&v, 0, all, 2);
	assert_int_equal(v.nobjects, 1);
	assert_int_equal(backend(v.objects[0], 0), 10);
	assert_int_equal(v.objects[0]->holding[1], HOLD_DIFFERENT);
	free_all(all, 2);
	view_free(&v);
}

/* A handle depends on the object's identity only: not on the members' handles or their
 * order, so that every run of the daemon gives the same one; another slot, another key or
 * another label give another handle. */
static void
view_handles_from_identity(void **state)
{
	struct mobject *a[2], *b[2], *c[1], *d[1];
	struct view va, vb, vc, vd;

	(void)state;
	a[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	a[1] = mk(1, 11, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	b[0] = mk(1, 77, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	b[1] = mk(0, 88, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	c[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-C");
	d[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "web", "MODULUS-A");
	build(&va, 0, a, 2);
	build(&vb, 0, b, 2);
	build(&vc, 0, c, 1);
	build(&vd, 1, d, 1);
	assert_int_equal(va.objects[0]->handle, vb.objects[0]->handle);
	assert_int_not_equal(va.objects[0]->handle, vc.objects[0]->handle);
	assert_int_not_equal(va.objects[0]->handle, vd.objects[0]->handle);
	assert_true(va.objects[0]->handle <= 0x7fffffff);
	free_all(a, 2);
	free_all(b, 2);
	free_all(c, 1);
	free_all(d, 1);
	view_free(&va);
	view_free(&vb);
	view_free(&vc);
	view_free(&vd);
}

/* An EC private key that carries no point is matched through the public key with the same
 * CKA_ID on its member. */
static void
view_ec_private_key_by_its_public_key(void **state)
{
	struct mobject *all[6];
	const struct pobject *priv = NULL;
	struct view v;
	size_t i;

	(void)state;
	for (i = 0; i < 3; i++) {
		all[2 * i] = mk(i, 30 + i, CKO_PRIVATE_KEY, CKK_EC, "\x02", "ec", NULL);
		all[2 * i + 1] = mk(i, 40 + i, CKO_PUBLIC_KEY, CKK_EC, "\x02", "ec",
		                    i < 2 ? "POINT-1" : "POINT-2");
	}
	build(&v, 0, all, 6);
	for (i = 0; i < v.nobjects; i++)
		if (v.objects[i]->cls == CKO_PRIVATE_KEY)
			priv = v.objects[i];
	assert_non_null(priv);
	assert_int_equal(backend(priv, 0), 30);
	assert_int_equal(backend(priv, 1), 31);
	assert_int_equal(priv->holding[2], HOLD_DIFFERENT);
	free_all(all, 6);
	view_free(&v);
}

/* A member that rejoins is mapped again: a new handle for the same key is taken, a key that
 * changed is not used, one that vanished is lacking. */
static void
view_remap_member(void **state)
{
	struct mobject *all[3], *again[1], *changed[1];
	struct view_change chg;
	struct view v;

	(void)state;
	all[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	all[1] = mk(1, 11, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	all[2] = mk(2, 12, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	build(&v, 0, all, 3);
	again[0] = mk(1, 99, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	changed[0] = mk(2, 98, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-Z");
	assert_int_equal(mobjects_fingerprint(again, 1), 0);
	assert_int_equal(mobjects_fingerprint(changed, 1), 0);
	assert_int_equal(view_remap(&v, 1, "hsm2", again, 1, &chg), 0);
	assert_int_equal(chg.held, 1);
	assert_int_equal(backend(v.objects[0], 1), 99);
	assert_int_equal(view_remap(&v, 2, "hsm3", changed, 1, &chg), 0);
	assert_int_equal(chg.held, 0);
	assert_int_equal(chg.added, 0); /* another key under a known name is not a new object */
	assert_int_equal(backend(v.objects[0], 2), CK_INVALID_HANDLE);
	assert_int_equal(v.objects[0]->holding[2], HOLD_DIFFERENT);
	assert_int_equal(view_remap(&v, 0, "hsm1", NULL, 0, &chg), 0);
	assert_int_equal(chg.held, 0);
	assert_int_equal(v.objects[0]->holding[0], HOLD_LACKS);
	assert_int_equal(chg.withdrawn, 0); /* hsm2 holds it still */
	assert_int_equal(v.nobjects, 1);
	free_all(all, 3);
	free_all(again, 1);
	free_all(changed, 1);
	view_free(&v);
}

/* Runs view_remap for member k with n objects (fingerprinted here). */
static struct view_change
rescan(struct view *v, size_t k, struct mobject **objs, size_t n)
{
	struct view_change chg;

	assert_int_equal(mobjects_fingerprint(objs, n), 0);
	assert_int_equal(view_remap(v, k, members[k].label, objs, n, &chg), 0);
	return chg;
}

/* A rescan adds the keys new to the pool, under the handle their identity gives, withdraws
 * the ones no member holds any more, and brings them back with the same handle; a reader's
 * copy of the object array stays valid while the view grows. */
static void
view_rescan_adds_and_withdraws(void **state)
{
	struct mobject *all[3], *a0[2], *a1[2], *none[1], *a2[1], *b[1], *c0[1], *c1[1], *many[40];
	struct pobject *const *old;
	struct view v, vb;
	struct view_change chg;
	CK_OBJECT_HANDLE ha, hb;
	uint64_t version;
	size_t k, n, nold;
	char label[16];

	(void)state;
	for (k = 0; k < 3; k++)
		all[k] = mk(k, 10 + k, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	build(&v, 0, all, 3);
	ha = v.objects[0]->handle;
	version = view_version(&v);
	old = view_objects(&v, &nold);

	/* hsm1 now holds a second key too: a new object, used on hsm1 alone. */
	a0[0] = mk(0, 20, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	a0[1] = mk(0, 21, CKO_PRIVATE_KEY, CKK_RSA, "\x02", "tls-2027", "MODULUS-B");
	chg = rescan(&v, 0, a0, 2);
	assert_int_equal(chg.held, 2);
	assert_int_equal(chg.added, 1);
	assert_int_equal(v.nobjects, 2);
	assert_true(view_version(&v) != version);
	hb = v.objects[1]->handle;
	assert_ptr_equal(view_object(&v, hb), v.objects[1]);
	assert_int_equal(backend(v.objects[1], 0), 21);
	assert_int_equal(backend(v.objects[1], 1), CK_INVALID_HANDLE);
	/* Its handle is the one a start-up would have given it. */
	b[0] = mk(0, 5, CKO_PRIVATE_KEY, CKK_RSA, "\x02", "tls-2027", "MODULUS-B");
	build(&vb, 0, b, 1);
	assert_int_equal(vb.objects[0]->handle, hb);
	view_free(&vb);

	/* hsm2 got it as well: mapped, nothing new. */
	a1[0] = mk(1, 30, CKO_PRIVATE_KEY, CKK_RSA, "\x02", "tls-2027", "MODULUS-B");
	a1[1] = mk(1, 31, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	version = view_version(&v);
	chg = rescan(&v, 1, a1, 2);
	assert_int_equal(chg.added, 0);
	assert_int_equal(backend(v.objects[1], 1), 30);
	assert_int_equal(view_version(&v), version);

	/* The old key deleted everywhere: withdrawn when the last holder is rescanned. */
	c0[0] = mk(0, 21, CKO_PRIVATE_KEY, CKK_RSA, "\x02", "tls-2027", "MODULUS-B");
	c1[0] = mk(1, 30, CKO_PRIVATE_KEY, CKK_RSA, "\x02", "tls-2027", "MODULUS-B");
	chg = rescan(&v, 0, c0, 1);
	assert_int_equal(chg.withdrawn, 0);
	chg = rescan(&v, 1, c1, 1);
	assert_int_equal(chg.withdrawn, 0);
	chg = rescan(&v, 2, none, 0);
	assert_int_equal(chg.withdrawn, 1);
	assert_null(view_object(&v, ha));
	assert_true(pobject_withdrawn(v.objects[0]));
	/* ... and back, with the same handle, when a member holds it again. */
	a2[0] = mk(2, 40, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	chg = rescan(&v, 2, a2, 1);
	assert_int_equal(chg.revived, 1);
	assert_ptr_equal(view_object(&v, ha), v.objects[0]);

	/* A member leaving takes what only it held. */
	assert_int_equal(view_member_gone(&v, 2), 1);
	assert_null(view_object(&v, ha));
	assert_int_equal(view_member_gone(&v, 1), 0);
	assert_int_equal(view_member_gone(&v, 0), 1);
	assert_null(view_object(&v, hb));

	/* Many new keys: the array is replaced, the reader's old copy still reads. */
	for (k = 0; k < 40; k++) {
		snprintf(label, sizeof(label), "k%zu", k);
		many[k] = mk(0, 100 + k, CKO_PRIVATE_KEY, CKK_RSA, "\x03", label, label);
	}
	chg = rescan(&v, 0, many, 40);
	assert_int_equal(chg.added, 40);
	view_objects(&v, &n);
	assert_int_equal(n, 42);
	for (k = 0; k < nold; k++)
		assert_int_equal(old[k]->handle, ha);
	for (k = 0; k < 40; k++)
		assert_non_null(view_object(&v, v.objects[2 + k]->handle));
	free_all(all, 3);
	free_all(a0, 2);
	free_all(a1, 2);
	free_all(a2, 1);
	free_all(b, 1);
	free_all(c0, 1);
	free_all(c1, 1);
	free_all(many, 40);
	view_free(&v);
}

/* An object the member listed but whose attributes could not be read keeps what the member
 * held under its handle (not withdrawn); a session object (CKA_TOKEN false) never becomes a
 * pool object. */
static void
view_rescan_unread_and_session(void **state)
{
	struct mobject *all[1], *again[2];
	CK_BBOOL no = CK_FALSE;
	struct view_change chg;
	struct view v;
	CK_ATTRIBUTE *a;
	CK_RV *st;

	(void)state;
	all[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	build(&v, 0, all, 1);
	again[0] = mobject_new(0, 10, CKO_DATA, (CK_KEY_TYPE)-1, NULL, NULL, 0);
	assert_non_null(again[0]);
	again[0]->unread = 1;
	a = calloc(1, sizeof(*a));
	st = calloc(1, sizeof(*st));
	assert_non_null(a);
	assert_non_null(st);
	a->type = CKA_TOKEN;
	a->pValue = malloc(1);
	assert_non_null(a->pValue);
	memcpy(a->pValue, &no, 1);
	a->ulValueLen = 1;
	again[1] = mobject_new(0, 77, CKO_SECRET_KEY, CKK_AES, a, st, 1);
	assert_non_null(again[1]);
	chg = rescan(&v, 0, again, 2);
	assert_int_equal(chg.held, 1);
	assert_int_equal(chg.added, 0);
	assert_int_equal(chg.withdrawn, 0);
	assert_int_equal(backend(v.objects[0], 0), 10);
	assert_int_equal(v.nobjects, 1);
	free_all(all, 1);
	free_all(again, 2);
	view_free(&v);
}

/* A find template matches by value; a template attribute the object lacks, or a NULL value,
 * does not. */
static void
view_matches(void **state)
{
	CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY, cert = CKO_CERTIFICATE;
	CK_ATTRIBUTE t1[] = {{CKA_CLASS, &priv, sizeof(priv)}, {CKA_ID, "\x01", 1}};
	CK_ATTRIBUTE t2[] = {{CKA_CLASS, &cert, sizeof(cert)}};
	CK_ATTRIBUTE t3[] = {{CKA_SUBJECT, "x", 1}};
	CK_ATTRIBUTE t4[] = {{CKA_ID, NULL, 1}};
	struct mobject *all[1];
	struct view v;

	(void)state;
	all[0] = mk(0, 10, CKO_PRIVATE_KEY, CKK_RSA, "\x01", "tls", "MODULUS-A");
	build(&v, 0, all, 1);
	assert_true(pobject_matches(v.objects[0], t1, 2));
	assert_true(pobject_matches(v.objects[0], NULL, 0));
	assert_false(pobject_matches(v.objects[0], t2, 1));
	assert_false(pobject_matches(v.objects[0], t3, 1));
	assert_false(pobject_matches(v.objects[0], t4, 1));
	assert_true(pobject_bool(v.objects[0], CKA_PRIVATE, 0));
	assert_true(pobject_bool(v.objects[0], CKA_SIGN, 1));
	assert_null(view_object(&v, v.objects[0]->handle ^ 1));
	free_all(all, 1);
	view_free(&v);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(view_same_key_everywhere),
	        cmocka_unit_test(view_majority_and_lacking),
	        cmocka_unit_test(view_tie_goes_to_first_member),
	        cmocka_unit_test(view_handles_from_identity),
	        cmocka_unit_test(view_ec_private_key_by_its_public_key),
	        cmocka_unit_test(view_remap_member),
	        cmocka_unit_test(view_rescan_adds_and_withdraws),
	        cmocka_unit_test(view_rescan_unread_and_session),
	        cmocka_unit_test(view_matches),
	};

	/* The warnings the view logs (a member lacks a key...) are expected here. */
	p11mux_log_set_level(P11MUX_LOG_ERROR);
	return cmocka_run_group_tests_name("view", tests, NULL, NULL);
}
