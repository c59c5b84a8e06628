/*
 * fuzz_config: the daemon's configuration file (daemon/config.c, libconfig syntax). The input
 * is the file. Inputs with libconfig's @include are skipped: it reads any other file, which is
 * not this parser's input.
 *
 * Checked (abort when broken): a file that is refused has one message, which names the file;
 * a file that is accepted gives a configuration that keeps every promise config.h and
 * docs/operations.md make: absolute paths, two distinct sockets, at least one pool, each with
 * a PIN file and a module, a label an NSS token can have, unique slot IDs, members with
 * tokens and NAME=VALUE environments, and every whole-number key within its range.
 */
#include "check.h"
#include "config.h"
#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define IN(v, lo, hi) ((v) >= (lo) && (v) <= (hi))

static void
check_members(const struct pool_config *p)
{
	size_t k, j;

	CHECK(p->members == NULL || p->nmembers > 0);
	for (k = 0; k < p->nmembers; k++) {
		const struct member_config *m = &p->members[k];

		CHECK(m->token != NULL && m->token[0] != '\0');
		for (j = 0; j < m->nenv; j++)
			CHECK(m->env[j][0] != '=' && strchr(m->env[j], '=') != NULL);
	}
}

static void
check_pool(const struct config *c, size_t i)
{
	const struct pool_config *p = &c->pools[i];
	size_t j;

	CHECK(p->pin_file != NULL && p->module != NULL);
	CHECK(p->label == NULL || (strchr(p->label, ':') == NULL && strlen(p->label) <= 32));
	CHECK(IN(p->slot_id, 0, 0x7fffffff));
	for (j = 0; j < i; j++)
		CHECK(c->pools[j].slot_id != p->slot_id);
	CHECK(p->scheduler == 0 || p->scheduler == 1);
	CHECK(IN(p->op_timeout_ms, 10, 3600000) && IN(p->max_attempts, 1, 64));
	CHECK(IN(p->probe_interval_ms, 10, 3600000) && IN(p->probe_max_ms, 10, 3600000));
	CHECK(p->probe_max_ms >= p->probe_interval_ms);
	CHECK(IN(p->workers_per_member, 1, 64) && p->pin_max_failures <= 1000);
	CHECK(p->state_dir == c->state_dir);
	check_members(p);
}

static void
check_config(const struct config *c, const char *path)
{
	const struct limits *l = &c->limits;
	size_t i;

	CHECK(strcmp(c->path, path) == 0);
	CHECK(c->socket[0] == '/' && c->control_socket[0] == '/' && c->state_dir[0] == '/');
	CHECK(strcmp(c->socket, c->control_socket) != 0);
	CHECK(IN(c->log_level, 0, 3));
	CHECK(IN(l->max_clients, 1, 1000000) && IN(l->max_clients_per_uid, 1, 1000000) &&
	      IN(l->max_clients_per_pid, 1, 1000000));
	CHECK(IN(l->hello_timeout_ms, 10, 3600000) && IN(l->frame_timeout_ms, 10, 3600000) &&
	      IN(l->write_timeout_ms, 10, 3600000));
	CHECK(c->npools > 0);
	for (i = 0; i < c->npools; i++)
		check_pool(c, i);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char include[] = "@include";
	const char *path = scratch_open("config");
	struct p11mux_err e = {""};
	struct config *c;
	size_t n = strlen(path);

	if (memmem(data, size, include, sizeof(include) - 1) != NULL)
		return -1; /* not added to the corpus */
	scratch_write(data, size);
	if ((c = config_load(path, &e)) == NULL) {
		/* "FILE:LINE: ..." (libconfig's syntax errors) or "FILE: ...". */
		CHECK(strncmp(e.msg, path, n) == 0 && e.msg[n] == ':');
		return 0;
	}
	check_config(c, path);
	config_free(c);
	return 0;
}
