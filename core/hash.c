/*
 * hash.c -- the one hash table (hash.h): 64-bit keys to pointers, open
 * addressing. Runs on whichever thread owns the table.
 *
 * Linear probing keeps a probe inside a cache line or two; at most half full
 * it stays short even for keys that crowd. A deleted entry's gap is closed by
 * moving back the entries after it that may not stay past it (Knuth's
 * algorithm R), so there are no tombstones and a long-lived table (a peer's
 * jobs in flight, millions of ids over a run) never needs rebuilding.
 * It does not shrink: a table's owner is as large as its busiest moment.
 */
#include <stdlib.h>
#include <string.h>
#include "farm.h"
#include "hash.h"

#define MIN_CAP 64

void farm__hash_init(farm_hash *h) { memset(h, 0, sizeof *h); }

void farm__hash_free(farm_hash *h) {
  free(h->slot);
  farm__hash_init(h);
}

void farm__hash_clear(farm_hash *h) {
  if (h->slot) memset(h->slot, 0, h->cap * sizeof *h->slot);
  h->n = 0;
}

static int grow(farm_hash *h) {
  size_t cap = h->cap ? 2 * h->cap : MIN_CAP;
  farm_hash_slot *t = calloc(cap, sizeof *t);
  if (!t) return FARM_ENOMEM;
  for (size_t i = 0; i < h->cap; i++) {
    if (!h->slot[i].val) continue;
    size_t k = farm__hash_home(h->slot[i].key, cap);
    while (t[k].val) k = (k + 1) & (cap - 1);
    t[k] = h->slot[i];
  }
  free(h->slot);
  h->slot = t;
  h->cap = cap;
  return 0;
}

int farm__hash_put(farm_hash *h, uint64_t key, void *val) {
  if (2 * (h->n + 1) > h->cap && grow(h) < 0) return FARM_ENOMEM;
  size_t mask = h->cap - 1, i = farm__hash_home(key, h->cap);
  for (; h->slot[i].val; i = (i + 1) & mask)
    if (h->slot[i].key == key) { h->slot[i].val = val; return 0; }
  h->slot[i].key = key;
  h->slot[i].val = val;
  h->n++;
  return 0;
}

void *farm__hash_del(farm_hash *h, uint64_t key) {
  if (!h->n) return NULL;
  size_t mask = h->cap - 1, i = farm__hash_home(key, h->cap);
  while (h->slot[i].val && h->slot[i].key != key) i = (i + 1) & mask;
  void *val = h->slot[i].val;
  if (!val) return NULL;
  h->slot[i].val = NULL;
  h->n--;
  /* close the gap: an entry further on moves into it unless its home lies
     (cyclically) after the gap and at or before where it sits */
  for (size_t k = (i + 1) & mask; h->slot[k].val; k = (k + 1) & mask) {
    size_t home = farm__hash_home(h->slot[k].key, h->cap);
    if (((k - home) & mask) >= ((k - i) & mask)) {
      h->slot[i] = h->slot[k];
      h->slot[k].val = NULL;
      i = k;
    }
  }
  return val;
}

size_t farm__hash_next(const farm_hash *h, size_t i, uint64_t *key, void **val) {
  for (; i < h->cap; i++)
    if (h->slot[i].val) {
      if (key) *key = h->slot[i].key;
      if (val) *val = h->slot[i].val;
      return i + 1;
    }
  return 0;
}
