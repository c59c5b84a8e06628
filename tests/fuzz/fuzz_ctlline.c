/*
 * fuzz_ctlline: the control socket's command line (daemon/control.c), through control_answer(),
 * the path the control thread takes once a line is read, against a daemon without devices
 * (stubd.c). The first input byte gives the peer's rights (bit 0: may read, bit 1: admin) and
 * the states of pool-a's three members (2 bits each, from bit 2: up, draining, down,
 * excluded); the rest is what the peer sent.
 *
 * Checked (abort when broken): every answer is "ok", "inconsistent" or "error: ..." on its
 * first line and ends with a line feed; a peer that may not read gets a refusal whatever it
 * sent; a peer that is not an admin changes nothing (member states, the PIN counter); an admin
 * changes one member's state at most, and only with an "ok"; JSON answers are well-formed.
 */
#include "check.h"
#include "control.h"
#include "stubd.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct stubd sd;

/* Whether s is one JSON value followed by a line feed: strings escaped, brackets matched
 * (structure only; numbers and words are not parsed). */
static int
json_ok(const char *s)
{
	char stack[64];
	size_t depth = 0;
	int in_str = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (in_str) {
			if (c < 0x20)
				return 0;
			if (c == '\\' && *++s == '\0')
				return 0;
			in_str = c != '"';
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '{' || c == '[') {
			if (depth == sizeof(stack))
				return 0;
			stack[depth++] = c == '{' ? '}' : ']';
		} else if (c == '}' || c == ']') {
			if (depth == 0 || stack[--depth] != c)
				return 0;
		}
	}
	return !in_str && depth == 0;
}

static enum member_state
state_of(struct member *m)
{
	enum member_state st;

	p11mux_lock(&m->lock);
	st = m->state;
	p11mux_unlock(&m->lock);
	return st;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	stubd_open(&sd);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum member_state states[4] = {MEMBER_UP, MEMBER_DRAINING, MEMBER_DOWN,
	                                            MEMBER_EXCLUDED};
	enum member_state before[STUBD_NPOOLS][STUBD_NMEMBERS];
	struct pin_guard *g = &sd.pools[0].guard;
	int reader, admin, locked, ok;
	size_t i, k, changed = 0;
	char *a, *body;

	if (size == 0)
		return 0;
	stubd_reset(&sd);
	reader = data[0] & 1;
	admin = (data[0] >> 1) & 1;
	for (k = 0; k < STUBD_NMEMBERS; k++)
		sd.pools[0].members[k].state = states[(data[0] >> (2 + 2 * k)) & 3];
	/* A wrong PIN counted on pool-a, for unlock-pin to reset. */
	p11mux_lock(&g->lock);
	g->failures = 1;
	p11mux_unlock(&g->lock);
	for (i = 0; i < STUBD_NPOOLS; i++)
		for (k = 0; k < STUBD_NMEMBERS; k++)
			before[i][k] = sd.pools[i].members[k].state;
	CHECK((a = control_answer(&sd.d, (const char *)data + 1, size - 1, "fuzz (uid 4242)", admin,
	                          reader)) != NULL);
	ok = strncmp(a, "ok\n", 3) == 0;
	CHECK(ok || strncmp(a, "inconsistent\n", 13) == 0 || strncmp(a, "error: ", 7) == 0);
	CHECK(a[strlen(a) - 1] == '\n');
	CHECK(reader || strncmp(a, "error: user ", 12) == 0);
	body = strchr(a, '\n') + 1;
	if (*body == '{' || *body == '[')
		CHECK(json_ok(body));
	for (i = 0; i < STUBD_NPOOLS; i++)
		for (k = 0; k < STUBD_NMEMBERS; k++)
			changed += state_of(&sd.pools[i].members[k]) != before[i][k];
	CHECK(changed <= (admin && ok ? 1u : 0u));
	CHECK(guard_failures(g, &locked) == 1 || (admin && ok));
	free(a);
	return 0;
}
