/* Unit tests of common/hmap.c: the u64 -> pointer map behind session and object handles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hmap.h"

#define MANY 10000

/* A distinct, recognisable pointer for key k (never dereferenced). */
static void *
val(uint64_t k)
{
	return (void *)(uintptr_t)(k * 2 + 1);
}

static void
hmap_empty(void **state)
{
	struct p11mux_hmap *m = p11mux_hmap_new();

	(void)state;
	assert_non_null(m);
	assert_int_equal(p11mux_hmap_count(m), 0);
	assert_null(p11mux_hmap_get(m, 0));
	assert_null(p11mux_hmap_get(m, 42));
	assert_null(p11mux_hmap_remove(m, 42));
	assert_int_equal(p11mux_hmap_count(m), 0);
	p11mux_hmap_free(m);
	p11mux_hmap_free(NULL);
}

static void
hmap_put_get_remove(void **state)
{
	struct p11mux_hmap *m = p11mux_hmap_new();
	int a, b, c;

	(void)state;
	assert_int_equal(p11mux_hmap_put(m, 1, &a), 0);
	assert_int_equal(p11mux_hmap_put(m, 0, &b), 0);
	assert_int_equal(p11mux_hmap_put(m, UINT64_MAX, &c), 0);
	assert_int_equal(p11mux_hmap_count(m), 3);
	assert_ptr_equal(p11mux_hmap_get(m, 1), &a);
	assert_ptr_equal(p11mux_hmap_get(m, 0), &b);
	assert_ptr_equal(p11mux_hmap_get(m, UINT64_MAX), &c);
	assert_null(p11mux_hmap_get(m, 2));

	assert_ptr_equal(p11mux_hmap_remove(m, 0), &b);
	assert_int_equal(p11mux_hmap_count(m), 2);
	assert_null(p11mux_hmap_get(m, 0));
	/* Removing again finds nothing and changes nothing. */
	assert_null(p11mux_hmap_remove(m, 0));
	assert_int_equal(p11mux_hmap_count(m), 2);
	assert_ptr_equal(p11mux_hmap_get(m, 1), &a);
	assert_ptr_equal(p11mux_hmap_get(m, UINT64_MAX), &c);
	/* A key can come back after removal. */
	assert_int_equal(p11mux_hmap_put(m, 0, &c), 0);
	assert_ptr_equal(p11mux_hmap_get(m, 0), &c);
	assert_int_equal(p11mux_hmap_count(m), 3);
	p11mux_hmap_free(m);
}

/* Putting an existing key replaces the value and does not add an entry. */
static void
hmap_overwrite(void **state)
{
	struct p11mux_hmap *m = p11mux_hmap_new();
	int a, b;

	(void)state;
	assert_int_equal(p11mux_hmap_put(m, 7, &a), 0);
	assert_int_equal(p11mux_hmap_put(m, 7, &b), 0);
	assert_int_equal(p11mux_hmap_count(m), 1);
	assert_ptr_equal(p11mux_hmap_get(m, 7), &b);
	/* A NULL value is stored like any other (get cannot tell it from absence, count can). */
	assert_int_equal(p11mux_hmap_put(m, 7, NULL), 0);
	assert_int_equal(p11mux_hmap_count(m), 1);
	assert_null(p11mux_hmap_get(m, 7));
	assert_null(p11mux_hmap_remove(m, 7));
	assert_int_equal(p11mux_hmap_count(m), 0);
	p11mux_hmap_free(m);
}

/* Keys spread in different ways: sequential handles, handles in the high bits, random. */
static uint64_t
key_of(int pattern, uint64_t i)
{
	switch (pattern) {
	case 0:
		return i + 1;
	case 1:
		return i << 32;
	case 2:
		return (i * 0x9E3779B97F4A7C15ull) ^ 0x5555;
	default:
		return UINT64_MAX - i;
	}
}

/* 10000 keys through several growths: every key stays reachable, counts stay right, and
 * removing half leaves the other half intact. */
static void
hmap_many_keys(void **state)
{
	int pattern;

	(void)state;
	for (pattern = 0; pattern < 4; pattern++) {
		struct p11mux_hmap *m = p11mux_hmap_new();
		uint64_t i;

		for (i = 0; i < MANY; i++) {
			assert_int_equal(p11mux_hmap_put(m, key_of(pattern, i), val(i)), 0);
			assert_int_equal(p11mux_hmap_count(m), i + 1);
		}
		for (i = 0; i < MANY; i++)
			assert_ptr_equal(p11mux_hmap_get(m, key_of(pattern, i)), val(i));
		/* Keys that were never put are absent. */
		for (i = MANY; i < MANY + 100; i++)
			assert_null(p11mux_hmap_get(m, key_of(pattern, i)));
		for (i = 0; i < MANY; i += 2)
			assert_ptr_equal(p11mux_hmap_remove(m, key_of(pattern, i)), val(i));
		assert_int_equal(p11mux_hmap_count(m), MANY / 2);
		for (i = 0; i < MANY; i++) {
			if (i % 2 == 0)
				assert_null(p11mux_hmap_get(m, key_of(pattern, i)));
			else
				assert_ptr_equal(p11mux_hmap_get(m, key_of(pattern, i)), val(i));
		}
		/* Overwrite every remaining key: the count does not move. */
		for (i = 1; i < MANY; i += 2)
			assert_int_equal(p11mux_hmap_put(m, key_of(pattern, i), val(i + 1)), 0);
		assert_int_equal(p11mux_hmap_count(m), MANY / 2);
		for (i = 1; i < MANY; i += 2)
			assert_ptr_equal(p11mux_hmap_get(m, key_of(pattern, i)), val(i + 1));
		/* Free with entries still in it (the leak checker watches). */
		p11mux_hmap_free(m);
	}
}

struct visit {
	unsigned char *seen; /* seen[i] counts visits of key i + 1 */
	size_t calls;
	int bad;
};

static void
visit_fn(uint64_t key, void *value, void *arg)
{
	struct visit *v = arg;

	v->calls++;
	if (key == 0 || key > MANY || value != val(key)) {
		v->bad++;
		return;
	}
	v->seen[key - 1]++;
}

/* foreach calls the function once per entry, with the entry's own value. */
static void
hmap_foreach_visits_each_once(void **state)
{
	struct p11mux_hmap *m = p11mux_hmap_new();
	struct visit v = {0};
	uint64_t k;
	size_t i;

	(void)state;
	v.seen = calloc(MANY, 1);
	assert_non_null(v.seen);
	for (k = 1; k <= MANY; k++)
		assert_int_equal(p11mux_hmap_put(m, k, val(k)), 0);
	for (k = 1; k <= MANY; k += 3)
		assert_ptr_equal(p11mux_hmap_remove(m, k), val(k));
	p11mux_hmap_foreach(m, visit_fn, &v);
	assert_int_equal(v.bad, 0);
	assert_int_equal(v.calls, p11mux_hmap_count(m));
	for (i = 0; i < MANY; i++)
		assert_int_equal(v.seen[i], (i % 3 == 0) ? 0 : 1);
	free(v.seen);

	/* An empty map visits nothing. */
	p11mux_hmap_free(m);
	m = p11mux_hmap_new();
	memset(&v, 0, sizeof(v));
	p11mux_hmap_foreach(m, visit_fn, &v);
	assert_int_equal(v.calls, 0);
	p11mux_hmap_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(hmap_empty),
	        cmocka_unit_test(hmap_put_get_remove),
	        cmocka_unit_test(hmap_overwrite),
	        cmocka_unit_test(hmap_many_keys),
	        cmocka_unit_test(hmap_foreach_visits_each_once),
	};

	return cmocka_run_group_tests_name("hmap", tests, NULL, NULL);
}
