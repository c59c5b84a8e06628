/* The fuzz target's body, shared by the libFuzzer entry point and the CTest driver. */
#ifndef P11MUX_TEST_FUZZ_PROTO_H
#define P11MUX_TEST_FUZZ_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* What fuzz_proto_one() found acceptable in its input. */
#define FUZZ_REQUEST_OK 1 /* a whole, valid request */
#define FUZZ_REPLY_OK   2 /* a whole, valid reply to the call its first four bytes name */
#define FUZZ_FRAME_OK   4 /* a stream that starts with at least one whole frame */

/* Feeds data to every decoder of bytes from another process: as a received request (decoded
 * field by field as the daemon does), as a received reply (as the shim does), and as a byte
 * stream of frames. Aborts on a broken invariant; returns a mask of FUZZ_*_OK. */
int fuzz_proto_one(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
