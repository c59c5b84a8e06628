/* The pool's PIN counter and the login tickets (daemon/guard.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "log.h"
#include "thread.h"

#define PIN "648219"

struct fixture {
	char dir[64];
	struct pin_guard g;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/p11mux-guard.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	p11mux_log_set_level(P11MUX_LOG_ERROR);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	guard_close(&f->g);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int
open_guard(struct fixture *f, unsigned max, const char *pin)
{
	struct p11mux_err e = {""};
	int r = guard_open(&f->g, f->dir, "my pool", max, pin, strlen(pin), &e);

	if (r != 0)
		print_error("%s\n", e.msg);
	return r;
}

static CK_RV
login(struct fixture *f, const char *pin, const uint8_t *ticket, size_t tlen, uid_t uid,
      uint8_t out[GUARD_TICKET_LEN])
{
	return guard_login(&f->g, PIN, strlen(PIN), (const uint8_t *)pin, strlen(pin), ticket, tlen,
	                   uid, 1234, out);
}

/* Three wrong PINs lock; the right one is refused then; each check waits longer. */
static void
guard_locks_after_max(void **state)
{
	struct fixture *f = *state;
	uint8_t t[GUARD_TICKET_LEN];
	uint64_t start, second, third;
	int locked;

	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(guard_flags(&f->g), 0);
	start = p11mux_now_ns();
	assert_int_equal(login(f, "000000", NULL, 0, 1000, t), CKR_PIN_INCORRECT);
	assert_int_equal(guard_flags(&f->g), CKF_USER_PIN_COUNT_LOW);
	assert_int_equal(login(f, "000001", NULL, 0, 1000, t), CKR_PIN_INCORRECT);
	second = p11mux_now_ns();
	assert_int_equal(guard_flags(&f->g), CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY);
	assert_int_equal(login(f, "000002", NULL, 0, 1000, t), CKR_PIN_INCORRECT);
	third = p11mux_now_ns();
	/* The second check waited 0.1 s after the first failure, the third 0.2 s after the
	 * second failure. The delay runs from the failure, which is before the call returns
	 * (the count is saved and logged after it): measured from the calls' returns, the
	 * third wait can look shorter on a loaded machine, so it is measured from the start. */
	assert_true(second - start >= 100000000u);
	assert_true(third - start >= 300000000u);
	assert_int_equal(guard_flags(&f->g), CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED);
	assert_int_equal(login(f, PIN, NULL, 0, 1000, t), CKR_PIN_LOCKED);
	assert_int_equal(login(f, "000003", NULL, 0, 1000, t), CKR_PIN_LOCKED);
	assert_int_equal(guard_failures(&f->g, &locked), 3);
	assert_true(locked);
}

/* The count survives a restart (a new guard on the same directory); unlock resets it. */
static void
guard_survives_restart(void **state)
{
	struct fixture *f = *state;
	uint8_t t[GUARD_TICKET_LEN];
	int locked;

	assert_int_equal(open_guard(f, 2, PIN), 0);
	assert_int_equal(login(f, "1", NULL, 0, 0, t), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, "2", NULL, 0, 0, t), CKR_PIN_INCORRECT);
	guard_close(&f->g);
	assert_int_equal(open_guard(f, 2, PIN), 0);
	assert_int_equal(guard_failures(&f->g, &locked), 2);
	assert_true(locked);
	assert_int_equal(login(f, PIN, NULL, 0, 0, t), CKR_PIN_LOCKED);
	assert_int_equal(guard_unlock(&f->g, &(struct p11mux_err){""}), 0);
	assert_int_equal(login(f, PIN, NULL, 0, 0, t), CKR_OK);
	guard_close(&f->g);
	assert_int_equal(open_guard(f, 2, PIN), 0);
	assert_int_equal(guard_failures(&f->g, &locked), 0);
}

/* A right PIN resets the count before the lock. */
static void
guard_right_pin_resets(void **state)
{
	struct fixture *f = *state;
	uint8_t t[GUARD_TICKET_LEN];
	int locked;

	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(login(f, "x", NULL, 0, 0, t), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, "y", NULL, 0, 0, t), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, PIN, NULL, 0, 0, t), CKR_OK);
	assert_int_equal(guard_failures(&f->g, &locked), 0);
	assert_int_equal(guard_flags(&f->g), 0);
	/* With a valid ticket too (a process that logged in before: p11diff's wrong-pin row). */
	assert_int_equal(login(f, "z", NULL, 0, 0, t), CKR_PIN_INCORRECT);
	assert_int_equal(guard_flags(&f->g), CKF_USER_PIN_COUNT_LOW);
	assert_int_equal(login(f, PIN, t, sizeof(t), 0, t), CKR_OK);
	assert_int_equal(guard_failures(&f->g, &locked), 0);
	assert_int_equal(guard_flags(&f->g), 0);
}

/* A ticket alone logs in its own uid only; with the right PIN it passes a lockout for any
 * uid (a forked worker that became another user); a wrong PIN with it is counted. */
static void
guard_tickets(void **state)
{
	struct fixture *f = *state;
	uint8_t t0[GUARD_TICKET_LEN], t33[GUARD_TICKET_LEN], bad[GUARD_TICKET_LEN];
	int locked;

	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(login(f, PIN, NULL, 0, 0, t0), CKR_OK);
	assert_int_equal(login(f, "", t0, sizeof(t0), 0, t33), CKR_OK);
	assert_int_equal(login(f, "", t0, sizeof(t0), 33, t33), CKR_PIN_INCORRECT);
	memcpy(bad, t0, sizeof(bad));
	bad[10] ^= 1;
	assert_int_equal(login(f, "", bad, sizeof(bad), 0, t33), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, "", t0, sizeof(t0) - 1, 0, t33), CKR_PIN_INCORRECT);
	assert_int_equal(guard_failures(&f->g, &locked), 0); /* tickets alone are not PINs */
	/* Lock the pool. */
	assert_int_equal(login(f, "1", NULL, 0, 5, t33), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, "2", NULL, 0, 5, t33), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, "3", NULL, 0, 5, t33), CKR_PIN_INCORRECT);
	assert_int_equal(login(f, PIN, NULL, 0, 33, t33), CKR_PIN_LOCKED);
	/* Root's ticket and the right PIN let uid 33 in, and give it a ticket of its own. */
	assert_int_equal(login(f, PIN, t0, sizeof(t0), 33, t33), CKR_OK);
	assert_int_equal(login(f, "", t33, sizeof(t33), 33, bad), CKR_OK);
	assert_int_equal(login(f, "", t0, sizeof(t0), 0, bad), CKR_OK);
	/* A wrong PIN with a valid ticket is the counted way: locked. */
	assert_int_equal(login(f, "4", t0, sizeof(t0), 0, bad), CKR_PIN_LOCKED);
}

/* A new PIN, or a new key, makes the old tickets void. */
static void
guard_ticket_void_after_pin_or_key_change(void **state)
{
	struct fixture *f = *state;
	uint8_t t[GUARD_TICKET_LEN], u[GUARD_TICKET_LEN];
	char path[128];

	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(login(f, PIN, NULL, 0, 7, t), CKR_OK);
	guard_close(&f->g);
	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(login(f, "", t, sizeof(t), 7, u), CKR_OK); /* a restart keeps it */
	guard_close(&f->g);
	assert_int_equal(open_guard(f, 3, "another"), 0);
	assert_int_equal(
	        guard_login(&f->g, "another", 7, (const uint8_t *)"", 0, t, sizeof(t), 7, 1, u),
	        CKR_PIN_INCORRECT);
	guard_close(&f->g);
	snprintf(path, sizeof(path), "%s/ticket.key", f->dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(login(f, "", t, sizeof(t), 7, u), CKR_PIN_INCORRECT);
}

/* A spoilt counter file counts as locked; a state directory others may write is refused. */
static void
guard_spoilt_state(void **state)
{
	struct fixture *f = *state;
	struct p11mux_err e = {""};
	char path[160];
	FILE *fp;
	int locked;

	snprintf(path, sizeof(path), "%s/pin.my%%20pool", f->dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs("garbage\n", fp);
	fclose(fp);
	assert_int_equal(open_guard(f, 3, PIN), 0);
	assert_int_equal(guard_failures(&f->g, &locked), 3);
	assert_true(locked);
	guard_close(&f->g);
	snprintf(path, sizeof(path), "%s/ticket.key", f->dir);
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(guard_open(&f->g, f->dir, "my pool", 3, PIN, 6, &e), -1);
	assert_non_null(strstr(e.msg, "chmod 600"));
	guard_close(&f->g);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(chmod(f->dir, 0777), 0);
	assert_int_equal(guard_open(&f->g, f->dir, "my pool", 3, PIN, 6, &e), -1);
	assert_non_null(strstr(e.msg, "chmod 700"));
	assert_int_equal(chmod(f->dir, 0700), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(guard_locks_after_max, setup, teardown),
	        cmocka_unit_test_setup_teardown(guard_survives_restart, setup, teardown),
	        cmocka_unit_test_setup_teardown(guard_right_pin_resets, setup, teardown),
	        cmocka_unit_test_setup_teardown(guard_tickets, setup, teardown),
	        cmocka_unit_test_setup_teardown(guard_ticket_void_after_pin_or_key_change, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(guard_spoilt_state, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
