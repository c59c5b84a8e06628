#!/usr/bin/env bash
# Fork safety: a child never uses its parent's connections, gets CKR_CRYPTOKI_NOT_INITIALIZED
# until it calls C_Initialize, then works with the key handle the parent found.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" fork "$KEYS/rsa.pub.pem" || fail "fork"
stop_daemon
pass "forked child re-initialised"
