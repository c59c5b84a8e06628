/*
 * Operation latencies over the last minute, for `p11muxctl status`, its JSON and the metrics:
 * a log-linear histogram per second (HDR-style: bucket i holds [LAT_MIN_MS * LAT_RATIO^i,
 * LAT_MIN_MS * LAT_RATIO^(i+1))), so that a percentile is known within half a bucket, 2.5% of
 * its value (the coarse buckets of the Prometheus histogram were 2.5 times apart). Pure: the
 * caller holds whatever lock protects the window, and gives the time.
 */
#ifndef P11MUXD_LATENCY_H
#define P11MUXD_LATENCY_H

#include <stdint.h>

#define LAT_MIN_MS  0.01 /* 10 us: below it, the first bucket */
#define LAT_RATIO   1.05
#define LAT_NFINE   330 /* up to 0.01 ms * 1.05^330 = 99 s; above it, the last bucket */
#define LAT_SECONDS 60

struct lat_window {
	uint64_t second[LAT_SECONDS]; /* which second (monotonic) a slot holds; 0: none */
	uint32_t count[LAT_SECONDS][LAT_NFINE];
};

/* Counts one operation of ms milliseconds that ended in second sec. */
void lat_record(struct lat_window *w, uint64_t sec, double ms);
/*
 * The q-quantile (0..1) of the operations of the last LAT_SECONDS seconds before second now, in
 * milliseconds (the middle of its bucket), or -1 when there were none. *recent (may be NULL)
 * gets how many ended in the `seconds` complete seconds before now.
 */
double lat_quantile(const struct lat_window *w, uint64_t now, double q, unsigned seconds,
                    uint64_t *recent);

#endif
