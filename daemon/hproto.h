/*
 * The helper protocol: between p11muxd and the process it runs for each member
 * (docs/protocol.md, "The helper protocol"). It is not the client protocol: only p11muxd
 * speaks it, on socketpairs: one control channel (finding the token, the login, reading the
 * objects) and one channel per worker (workers_per_member), each carrying one request at a
 * time. Built on the same framing and codec as the client protocol (common/transport.c,
 * common/proto.c).
 */
#ifndef P11MUXD_HPROTO_H
#define P11MUXD_HPROTO_H

#include "proto.h"

enum helper_call {
	HELPER_TOKENS = 1,    /* list the module's tokens (discovery, --list-tokens) */
	HELPER_INIT,          /* load the module and find the member's token */
	HELPER_LOGIN,         /* log in to it */
	HELPER_FIND,          /* every object's handle */
	HELPER_READ,          /* one object's attributes */
	HELPER_OP,            /* a cryptographic operation */
	HELPER_RANDOM,        /* random bytes */
	HELPER_CREATE,        /* a session object */
	HELPER_GENERATE,      /* a session key */
	HELPER_GENERATE_PAIR, /* a session key pair */
	HELPER_DESTROY,       /* a session object destroyed */
	HELPER_CALL_COUNT     /* one past the last */
};

extern const struct p11mux_call_desc helper_calls[HELPER_CALL_COUNT];
extern const struct p11mux_proto helper_proto;

/* The file descriptors a helper finds its channels on: the control channel, then the
 * operation channels (HELPER_OP_FD + i); how many is in $P11MUX_HELPER_CHANNELS. */
#define HELPER_CTL_FD 3
#define HELPER_OP_FD  4
/* The largest frame on a channel, either way. A request carries what the client's request
 * did (at most P11MUX_FRAME_MAX) and a few bytes more (the call, the key's handle). */
#define HELPER_FRAME_MAX (P11MUX_FRAME_MAX + 4096u)
/* Operation channels of one helper, at most (workers_per_member's cap). */
#define HELPER_MAX_CHANNELS 64

#endif
