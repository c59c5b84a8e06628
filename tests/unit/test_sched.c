/* The scheduler's choice of member, from snapshots of the members' load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "scheduler.h"

static void
test_none_eligible(void **state)
{
	struct sched_candidate c[2] = {{0, 0, 1, 1.0}, {0, 0, 1, 1.0}};

	(void)state;
	assert_int_equal(sched_pick(SCHED_LEAST_LOADED, c, 2, 0), -1);
	assert_int_equal(sched_pick(SCHED_ROUND_ROBIN, c, 2, 0), -1);
	assert_int_equal(sched_pick(SCHED_LEAST_LOADED, c, 0, 0), -1);
}

static void
test_least_loaded_prefers_idle(void **state)
{
	struct sched_candidate c[3] = {{1, 4, 1, 10}, {1, 0, 1, 10}, {1, 2, 1, 10}};

	(void)state;
	for (unsigned rr = 0; rr < 6; rr++)
		assert_int_equal(sched_pick(SCHED_LEAST_LOADED, c, 3, rr), 1);
}

static void
test_idle_pool_takes_turns(void **state)
{
	struct sched_candidate c[3] = {{1, 0, 1, 10}, {1, 0, 1, 11}, {1, 0, 1, 12}};
	int seen[3] = {0};

	(void)state;
	/* Service times within the tie band: an idle pool spreads its work. */
	for (unsigned rr = 0; rr < 30; rr++)
		seen[sched_pick(SCHED_LEAST_LOADED, c, 3, rr)]++;
	assert_int_equal(seen[0], 10);
	assert_int_equal(seen[1], 10);
	assert_int_equal(seen[2], 10);
}

static void
test_slow_member_gets_its_share(void **state)
{
	/* Two members, one three times slower, each running one operation at a time. Feed
	 * 400 operations, each taking its member's service time, and count: least-loaded
	 * gives the slow member about a quarter (its capacity share: 1 / (1 + 3)). */
	struct sched_candidate c[2] = {{1, 0, 1, 10}, {1, 0, 1, 30}};
	double busy_until[2] = {0, 0}, now = 0;
	int count[2] = {0, 0}, i, k;

	(void)state;
	for (i = 0; i < 400; i++) {
		now = i * 7.5; /* arrivals faster than both members together can serve */
		for (k = 0; k < 2; k++) {
			double left = busy_until[k] - now;

			c[k].load = left > 0 ? (unsigned)(left / c[k].service_ms + 0.999) : 0;
		}
		k = sched_pick(SCHED_LEAST_LOADED, c, 2, (unsigned)i);
		assert_true(k == 0 || k == 1);
		busy_until[k] = (busy_until[k] > now ? busy_until[k] : now) + c[k].service_ms;
		count[k]++;
	}
	assert_in_range(count[1], 70, 130);
	assert_in_range(count[0], 270, 330);
}

static void
test_round_robin_rotates(void **state)
{
	struct sched_candidate c[3] = {{1, 9, 1, 10}, {0, 0, 1, 10}, {1, 0, 1, 10}};

	(void)state;
	assert_int_equal(sched_pick(SCHED_ROUND_ROBIN, c, 3, 0), 0);
	assert_int_equal(sched_pick(SCHED_ROUND_ROBIN, c, 3, 1), 2); /* 1 is not eligible */
	assert_int_equal(sched_pick(SCHED_ROUND_ROBIN, c, 3, 2), 2);
	assert_int_equal(sched_pick(SCHED_ROUND_ROBIN, c, 3, 3), 0);
}

static void
test_workers_share_load(void **state)
{
	/* A member running 4 at once with 3 queued finishes a new one after one service
	 * time; a single-worker member with 1 queued after two. */
	struct sched_candidate c[2] = {{1, 3, 4, 10}, {1, 1, 1, 10}};

	(void)state;
	assert_int_equal(sched_pick(SCHED_LEAST_LOADED, c, 2, 1), 0);
}

static void
test_ewma(void **state)
{
	double a = sched_ewma(0, 80);

	(void)state;
	assert_true(a == 80);
	a = sched_ewma(a, 160);
	assert_true(a == 90);
	for (int i = 0; i < 200; i++)
		a = sched_ewma(a, 20);
	assert_true(a > 19.99 && a < 20.01);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_none_eligible),
	        cmocka_unit_test(test_least_loaded_prefers_idle),
	        cmocka_unit_test(test_idle_pool_takes_turns),
	        cmocka_unit_test(test_slow_member_gets_its_share),
	        cmocka_unit_test(test_round_robin_rotates),
	        cmocka_unit_test(test_workers_share_load),
	        cmocka_unit_test(test_ewma),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
