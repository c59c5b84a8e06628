/* The latency histogram of the last minute (latency.h). */
#include "latency.h"

#include <pthread.h>
#include <string.h>

/* bounds[i] is bucket i's upper bound; computed once, by multiplication (no libm). */
static double bounds[LAT_NFINE];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
make_bounds(void)
{
	double b = LAT_MIN_MS;
	unsigned i;

	for (i = 0; i < LAT_NFINE; i++) {
		b *= LAT_RATIO;
		bounds[i] = b;
	}
}

static unsigned
bucket(double ms)
{
	unsigned lo = 0, hi = LAT_NFINE - 1;

	pthread_once(&once, make_bounds);
	/* The first bucket whose upper bound exceeds ms. */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (ms < bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

void
lat_record(struct lat_window *w, uint64_t sec, double ms)
{
	unsigned slot = (unsigned)(sec % LAT_SECONDS);

	if (w->second[slot] != sec) {
		memset(w->count[slot], 0, sizeof(w->count[slot]));
		w->second[slot] = sec;
	}
	w->count[slot][bucket(ms)]++;
}

double
lat_quantile(const struct lat_window *w, uint64_t now, double q, unsigned seconds, uint64_t *recent)
{
	uint64_t n = 0, acc = 0, rec = 0, local[LAT_NFINE];
	unsigned i, b;
	double lo;

	memset(local, 0, sizeof(local));
	pthread_once(&once, make_bounds);
	for (i = 0; i < LAT_SECONDS; i++) {
		uint64_t s = w->second[i];

		if (s == 0 || s + LAT_SECONDS <= now || s > now)
			continue;
		for (b = 0; b < LAT_NFINE; b++) {
			local[b] += w->count[i][b];
			n += w->count[i][b];
			/* The current second is still filling: "the last N seconds" are the N
			 * complete ones before it. */
			if (s < now && s + seconds >= now)
				rec += w->count[i][b];
		}
	}
	if (recent != NULL)
		*recent = rec;
	if (n == 0)
		return -1;
	for (b = 0; b < LAT_NFINE; b++) {
		acc += local[b];
		if ((double)acc >= q * (double)n)
			break;
	}
	if (b == LAT_NFINE)
		b = LAT_NFINE - 1;
	lo = b == 0 ? 0 : bounds[b - 1];
	return (lo + bounds[b]) / 2;
}
