/*
 * The fuzz targets' check of an invariant: says where and what failed, then aborts (libFuzzer
 * then keeps the input as a crash).
 */
#ifndef P11MUX_FUZZ_CHECK_H
#define P11MUX_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
