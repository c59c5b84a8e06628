/*
 * Keeping secrets (the PIN) out of swap and out of core files: memory on pages of its own,
 * mlock()ed and MADV_DONTDUMP, wiped when freed; and, for the daemon's own processes, no core
 * dumps at all. Never for the shim: it lives inside an application, whose process is not ours
 * to change.
 */
#ifndef P11MUX_SECRET_H
#define P11MUX_SECRET_H

#include <stddef.h>

/* len zeroed bytes (len > 0) on pages of their own, locked into RAM and left out of core
 * files. When mlock fails (RLIMIT_MEMLOCK too low) the memory is used unlocked, and the first
 * such failure in the process is logged as a warning. NULL when out of memory. The caller
 * frees it with p11mux_secret_free(). */
void *p11mux_secret_alloc(size_t len);

/* Wipes and unmaps memory from p11mux_secret_alloc(); NULL is fine. */
void p11mux_secret_free(void *p);

/* Locks the pages that hold p[0..len) into RAM and leaves them out of core files, for memory
 * that is not the caller's to allocate (a buffer's storage). They stay locked until unmapped.
 * A failing mlock is warned about as above. */
void p11mux_secret_lock(const void *p, size_t len);

/* Makes the calling process non-dumpable (no core file; other processes of the same user can
 * neither ptrace it nor read its /proc/PID/mem) and sets RLIMIT_CORE to 0, soft and hard,
 * whatever it inherited. For p11muxd and its helpers only. 0, or -1 with errno set. */
int p11mux_secret_protect_process(void);

#endif
