/*
 * What an administrator asks of a configuration without starting the daemon: p11muxd -t
 * (every file it names is usable; no device is touched) and p11muxd --list-tokens (what each
 * module shows; no session, no login).
 */
#ifndef P11MUXD_INSPECT_H
#define P11MUXD_INSPECT_H

#include "config.h"

/* Checks, without calling into any module, that each module file the configuration names
 * exists and loads as a PKCS#11 module (dlopen, C_GetFunctionList found), and that each pin
 * file passes pin_check_file(). Prints every problem on stderr as "FILE:LINE: KEY: ...";
 * 0 when there was none, else -1. */
int inspect_check(const struct config *cfg);

/* Lists on stdout, pool by pool, the tokens each module shows (slot, label, serial, maker,
 * model, flags, whether it is a member) and the members it does not show, through discovery
 * helpers started from exe: one per distinct module and environment. 0, or -1 when a module
 * could not list its tokens (said on stderr). */
int inspect_tokens(const struct config *cfg, const char *exe);

#endif
