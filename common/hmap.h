/*
 * A map from 64-bit handles to pointers, used for the shim's sessions and the daemon's
 * object handles. Not thread-safe: the owner's lock protects it. The map never owns the
 * values.
 */
#ifndef P11MUX_HMAP_H
#define P11MUX_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct p11mux_hmap;

/* New empty map, or NULL when out of memory. */
struct p11mux_hmap *p11mux_hmap_new(void);
/* Frees the map (not the values); NULL is fine. */
void p11mux_hmap_free(struct p11mux_hmap *m);
/* Stores value under key, replacing any previous value. 0, or P11MUX_ERR_NOMEM. */
int p11mux_hmap_put(struct p11mux_hmap *m, uint64_t key, void *value);
/* The value under key, or NULL. */
void *p11mux_hmap_get(const struct p11mux_hmap *m, uint64_t key);
/* Removes key and returns its value, or NULL when absent. */
void *p11mux_hmap_remove(struct p11mux_hmap *m, uint64_t key);
size_t p11mux_hmap_count(const struct p11mux_hmap *m);
/* Calls fn for each entry, in no particular order; fn must not change the map. */
void p11mux_hmap_foreach(const struct p11mux_hmap *m,
                         void (*fn)(uint64_t key, void *value, void *arg), void *arg);

#endif
