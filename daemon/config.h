/* The daemon's configuration file (libconfig syntax); see config/p11mux.conf.example. */
#ifndef P11MUXD_CONFIG_H
#define P11MUXD_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

#define CONFIG_DEFAULT_SOCKET  "/run/p11mux/p11mux.sock"
#define CONFIG_DEFAULT_CONTROL "/run/p11mux/control.sock"
#define CONFIG_DEFAULT_MODULE  "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
#define CONFIG_DEFAULT_STATE   "/var/lib/p11mux"

/* One configured member: a token, with its own module and environment when given as a
 * group. */
struct member_config {
	char *token;  /* serial number or label */
	char *module; /* NULL: the pool's */
	char **env;   /* KEY=VALUE for its helper, NULL-ended; NULL: none */
	size_t nenv;
	int line;
};

struct pool_config {
	char *label; /* NULL: the members' common label */
	char *module;
	struct member_config *members; /* NULL: every token present */
	size_t nmembers;
	char *pin_file;
	long slot_id;      /* -1: the pool's position (0, 1, ...) */
	int line;          /* where the pool starts, for later messages */
	int module_line;   /* where the module key is; 0: absent (the default) */
	int pin_file_line; /* where the pin_file key is */
	/* Scheduling and health; set at the top level, overridable per pool. */
	int scheduler;               /* enum sched_policy */
	unsigned op_timeout_ms;      /* a member that does not answer in this time goes down */
	unsigned max_attempts;       /* members tried for one operation */
	unsigned probe_interval_ms;  /* first probe of a member that went down */
	unsigned probe_max_ms;       /* back-off cap */
	unsigned workers_per_member; /* operations a member runs at once (1: a USB HSM) */
	unsigned pin_max_failures;   /* wrong PINs in a row that lock the pool (0: never) */
	const char *state_dir;       /* the daemon's (struct config) */
};

/* Connection limits and time-outs of the client socket (docs/security.md). */
struct limits {
	unsigned max_clients;             /* connections at once, from everybody */
	unsigned max_clients_per_uid;     /* ... from one user */
	unsigned max_clients_per_pid;     /* ... from one process */
	unsigned hello_timeout_ms;        /* from accept to the end of the handshake */
	unsigned frame_timeout_ms;        /* for the rest of a frame once its first byte came */
	unsigned write_timeout_ms;        /* for a reply the client does not read */
	unsigned session_objects;         /* session objects one application may hold */
	unsigned session_object_bytes;    /* ... and their size, in bytes */
	unsigned session_objects_per_uid; /* ... one user's processes together */
	unsigned session_object_bytes_per_uid;
	unsigned session_objects_total; /* ... everybody's together: what the devices can hold */
};

struct config {
	char *path;
	char *socket;
	char *socket_group; /* NULL: the daemon's group */
	uid_t *allowed_uids;
	size_t nallowed_uids;
	gid_t *allowed_gids;
	size_t nallowed_gids;
	char *control_socket;
	uid_t *control_uids; /* may read status, keys, metrics */
	size_t ncontrol_uids;
	gid_t *control_gids;
	size_t ncontrol_gids;
	int log_level;   /* enum p11mux_log_level */
	char *state_dir; /* what survives a restart: the PIN counters, the ticket key */
	struct limits limits;
	struct pool_config *pools;
	size_t npools;
};

/* Reads and checks path. On failure returns NULL with one line in e:
 * "FILE:LINE: KEY: what is wrong". The result is freed with config_free(). */
struct config *config_load(const char *path, struct p11mux_err *e);
void config_free(struct config *c);

#endif
