/* The latency window (daemon/latency.c): percentiles within 5% of the true values, the
 * window's minute, and the recent count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "latency.h"

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The q-quantile of v[0..n) as lat_quantile counts it: the first value at which the count
 * reaches q * n. */
static double
true_quantile(double *v, size_t n, double q)
{
	size_t k;

	qsort(v, n, sizeof(*v), cmp);
	for (k = 0; k < n && (double)(k + 1) < q * (double)n; k++)
		;
	return v[k < n ? k : n - 1];
}

static void
check_within(double got, double want)
{
	double err = (got - want) / want;

	if (err < 0)
		err = -err;
	if (err > 0.05)
		fail_msg("%.4f ms is %.1f%% from %.4f ms", got, err * 100, want);
}

/* Several shapes of latency, spread over many seconds of the window: lognormal-ish (an HSM's
 * signatures), two modes (a fast and a slow member), and a long tail. */
static void
latency_percentiles_within_5_percent(void **state)
{
	static const double qs[] = {0.5, 0.9, 0.99};
	struct lat_window *w = calloc(1, sizeof(*w));
	double *v = malloc(20000 * sizeof(*v));
	unsigned shape, i, k;

	(void)state;
	assert_non_null(w);
	assert_non_null(v);
	srand(7);
	for (shape = 0; shape < 3; shape++) {
		memset(w, 0, sizeof(*w));
		for (i = 0; i < 20000; i++) {
			double u = (rand() + 1.0) / ((double)RAND_MAX + 2.0);

			v[i] = shape == 0   ? 50 + 40 * u * u
			       : shape == 1 ? (i % 3 ? 0.8 + u : 61 + 10 * u)
			                    : 0.2 / (u * u);
			lat_record(w, 1000 + i % 50, v[i]);
		}
		for (k = 0; k < 3; k++)
			check_within(lat_quantile(w, 1050, qs[k], 10, NULL),
			             true_quantile(v, 20000, qs[k]));
	}
	free(v);
	free(w);
}

/* Only the last minute counts; the recent count is of complete seconds. */
static void
latency_window(void **state)
{
	struct lat_window *w = calloc(1, sizeof(*w));
	uint64_t recent = 0;

	(void)state;
	assert_non_null(w);
	assert_true(lat_quantile(w, 100, 0.5, 10, &recent) < 0);
	lat_record(w, 100, 5);   /* falls out of the window by second 160 */
	lat_record(w, 150, 500); /* in the window at 160, and within its last 10 s */
	lat_record(w, 160, 500); /* the current second: in the window, not yet recent */
	check_within(lat_quantile(w, 160, 0.5, 10, &recent), 500);
	assert_int_equal(recent, 1);
	/* Slots are reused: second 220 takes 160's. */
	lat_record(w, 220, 1);
	check_within(lat_quantile(w, 221, 0.01, 10, &recent), 1);
	assert_int_equal(recent, 1);
	free(w);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(latency_percentiles_within_5_percent),
	        cmocka_unit_test(latency_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
