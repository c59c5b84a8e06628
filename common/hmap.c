#include "hmap.h"
#include "err.h"

#include <stdlib.h>

struct entry {
	struct entry *next;
	uint64_t key;
	void *value;
};

struct p11mux_hmap {
	struct entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
};

static size_t
slot_of(uint64_t key, size_t nbuckets)
{
	/* A 64-bit finaliser (MurmurHash3's): every key bit reaches the low bits we keep. */
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	key *= 0xc4ceb9fe1a85ec53ull;
	key ^= key >> 33;
	return (size_t)key & (nbuckets - 1);
}

struct p11mux_hmap *
p11mux_hmap_new(void)
{
	struct p11mux_hmap *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	m->nbuckets = 16;
	if ((m->buckets = calloc(m->nbuckets, sizeof(*m->buckets))) == NULL) {
		free(m);
		return NULL;
	}
	return m;
}

void
p11mux_hmap_free(struct p11mux_hmap *m)
{
	struct entry *e, *next;
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nbuckets; i++)
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	free(m->buckets);
	free(m);
}

static void
grow(struct p11mux_hmap *m)
{
	struct entry **nb, *e, *next;
	size_t i, n = m->nbuckets * 2, s;

	/* Failing to grow only makes chains longer; the map stays correct. */
	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		return;
	for (i = 0; i < m->nbuckets; i++)
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			s = slot_of(e->key, n);
			e->next = nb[s];
			nb[s] = e;
		}
	free(m->buckets);
	m->buckets = nb;
	m->nbuckets = n;
}

int
p11mux_hmap_put(struct p11mux_hmap *m, uint64_t key, void *value)
{
	struct entry *e;
	size_t s = slot_of(key, m->nbuckets);

	for (e = m->buckets[s]; e != NULL; e = e->next)
		if (e->key == key) {
			e->value = value;
			return 0;
		}
	if ((e = malloc(sizeof(*e))) == NULL)
		return P11MUX_ERR_NOMEM;
	e->key = key;
	e->value = value;
	e->next = m->buckets[s];
	m->buckets[s] = e;
	if (++m->count > m->nbuckets)
		grow(m);
	return 0;
}

void *
p11mux_hmap_get(const struct p11mux_hmap *m, uint64_t key)
{
	struct entry *e;

	for (e = m->buckets[slot_of(key, m->nbuckets)]; e != NULL; e = e->next)
		if (e->key == key)
			return e->value;
	return NULL;
}

void *
p11mux_hmap_remove(struct p11mux_hmap *m, uint64_t key)
{
	struct entry **pe, *e;
	void *v;

	for (pe = &m->buckets[slot_of(key, m->nbuckets)]; (e = *pe) != NULL; pe = &e->next)
		if (e->key == key) {
			*pe = e->next;
			v = e->value;
			free(e);
			m->count--;
			return v;
		}
	return NULL;
}

size_t
p11mux_hmap_count(const struct p11mux_hmap *m)
{
	return m->count;
}

void
p11mux_hmap_foreach(const struct p11mux_hmap *m, void (*fn)(uint64_t, void *, void *), void *arg)
{
	struct entry *e;
	size_t i;

	for (i = 0; i < m->nbuckets; i++)
		for (e = m->buckets[i]; e != NULL; e = e->next)
			fn(e->key, e->value, arg);
}
