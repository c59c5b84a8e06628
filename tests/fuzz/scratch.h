/*
 * Scratch files of the fuzz targets, in /dev/shm when there is one (else /tmp), named
 * p11mux-fuzz-NAME-PID-XXXXXX and removed at exit. A target that crashes or is stopped does
 * not run its exit handlers: the next one to start removes what processes no longer running
 * left behind.
 *
 * The file a target hands to code that reads one (config_load, pin_read) is made once, mode
 * 0600 and owned by the fuzzing user (as a PIN file must be), and rewritten for each input.
 */
#ifndef P11MUX_FUZZ_SCRATCH_H
#define P11MUX_FUZZ_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

/* Makes the file (once; aborts when it cannot); its path. name goes into the file's name. */
const char *scratch_open(const char *name);
/* Replaces the file's content with p[0..n). Aborts when it cannot. */
void scratch_write(const uint8_t *p, size_t n);
/* Makes a directory (mode 0700) the same way, into path (n bytes); removed at exit with the
 * files in it. Aborts when it cannot. */
void scratch_mkdir(const char *name, char *path, size_t n);

#endif
