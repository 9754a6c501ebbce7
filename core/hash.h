/*
 * hash.h -- a table from 64-bit keys to pointers (hash.c): open addressing,
 * linear probing, deletion by backward shift (no tombstones), never more than
 * half full, so a probe is short and a miss ends at the first empty slot. The
 * one hash table of the tree: a peer's jobs in flight by id and the function
 * hashes it keeps (engine.c), the names nodes wrote (engine.c), a worker's kept
 * function blocks (worker.c), a node's jobs and functions (nodes/node.c).
 *
 * Any key is a key (0 too); a value is never NULL (NULL is how a slot says it
 * is empty, and what a miss returns): a set stores any pointer that is not.
 * Keys that are already random (the first bytes of a BLAKE2b hash) and keys
 * that are not (job ids counting up) are both mixed before use.
 *
 * No lock of its own and no thread: whoever owns the table (a lock, a thread)
 * guards it.
 */
#ifndef FARM_HASH_H
#define FARM_HASH_H
#include <stddef.h>
#include <stdint.h>

typedef struct farm_hash_slot { uint64_t key; void *val; } farm_hash_slot;
typedef struct farm_hash {
  farm_hash_slot *slot;            /* cap slots (a power of two; NULL while empty) */
  size_t cap, n;                   /* n of them in use */
} farm_hash;

void farm__hash_init(farm_hash *h);
void farm__hash_free(farm_hash *h);
/* Set key's value (replacing one there); val not NULL. 0, or FARM_ENOMEM (the
   table is as it was). */
int  farm__hash_put(farm_hash *h, uint64_t key, void *val);
/* Remove key; its value, or NULL when it was not there. */
void *farm__hash_del(farm_hash *h, uint64_t key);
/* Empty it, keeping its room. */
void farm__hash_clear(farm_hash *h);
/* The filled slots one by one: i starts at 0, and each call returns the next
   i (0: no more) with that slot's key and value. The table must not change
   meanwhile. */
size_t farm__hash_next(const farm_hash *h, size_t i, uint64_t *key, void **val);

/* (private) a 64-bit finalizer (MurmurHash3's fmix64) */
static inline size_t farm__hash_home(uint64_t k, size_t cap) {
  k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33;
  return (size_t)k & (cap - 1);
}

/* key's value, or NULL (inline: it is on the path of every result). */
static inline void *farm__hash_get(const farm_hash *h, uint64_t key) {
  if (!h->n) return NULL;
  size_t mask = h->cap - 1;
  for (size_t i = farm__hash_home(key, h->cap); h->slot[i].val; i = (i + 1) & mask)
    if (h->slot[i].key == key) return h->slot[i].val;
  return NULL;
}
#endif
