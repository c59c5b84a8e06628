/*
 * The file a fuzz target hands to code that reads one (config_load, pin_read): made once,
 * mode 0600 and owned by the fuzzing user (as a PIN file must be), in /dev/shm when there is
 * one, rewritten for each input, removed at exit.
 */
#ifndef P11MUX_FUZZ_SCRATCH_H
#define P11MUX_FUZZ_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

/* Makes the file (once; aborts when it cannot); its path. name goes into the file's name. */
const char *scratch_open(const char *name);
/* Replaces the file's content with p[0..n). Aborts when it cannot. */
void scratch_write(const uint8_t *p, size_t n);

#endif
