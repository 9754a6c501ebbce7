/*
 * session.h -- who may talk to a node, and what nobody else can read or change
 * (session.c; libsodium).
 *
 * A farm key is 32 random bytes, kept as 64 hex digits in a file only its owner
 * can read (`farm keygen FILE`). Client and node each prove they know it over
 * two fresh nonces, the node first (pp checks only the client, with SHA-1, and
 * then talks in clear):
 *
 *   AUTH1  c->n  u8(cipher wanted) nonce_c[32] str(who: "host pid N")
 *   AUTH2  n->c  nonce_c[32] u8(cipher chosen) nonce_n[32] proof_n[32]
 *                (nonce_c echoed: an answer to an earlier, lost hello is skipped)
 *   AUTH3  c->n  proof_c[32]
 *   AUTHNO n->c  str(why)          (instead of AUTH2 or after AUTH3: refused)
 *
 *   proof_x = BLAKE2b-256(key = K, "farm proof " x | nonce_c | nonce_n | cipher)
 *   keys    = BLAKE2b-512(key = K, "farm keys" | nonce_c | nonce_n | cipher):
 *             the first half seals client->node frames, the second node->client
 *
 * After AUTH3 every frame on the link, both ways, is sealed with AES-256-GCM
 * (when both CPUs have it) or ChaCha20-Poly1305, under a nonce that counts the
 * frames of that direction: a frame injected, altered, dropped, replayed or
 * reordered fails to open, and the link is given up. A node without a key (only
 * on a loopback address) runs the same handshake with a key of zeros: frames are
 * numbered and sealed, but anyone on the host can connect.
 */
#ifndef FARM_SESSION_H
#define FARM_SESSION_H
#include <stddef.h>
#include <stdint.h>
#include "transport.h"

#define FARM_KEYLEN 32
#define FARM_NONCELEN 32

/* Read a key file: refuses one that group or others may read, as ssh does.
   0, or a negative code with one line in err. */
int  farm__key_load(const char *path, unsigned char key[FARM_KEYLEN], char *err, size_t errlen);
/* Write a new random key to path (mode 600; an existing file is not overwritten). */
int  farm__key_write(const char *path, char *err, size_t errlen);
/* Parse 64 hex digits (surrounding white space allowed): 0 or -1. */
int  farm__key_parse(const char *text, size_t n, unsigned char key[FARM_KEYLEN]);
void farm__key_hex(const unsigned char key[FARM_KEYLEN], char out[2 * FARM_KEYLEN + 1]);

/* The client's side, on a link just connected: run the handshake (at most
   timeout seconds); on success the link is sealed and 0 is returned, else a
   negative code (FARM_EAUTH: the key is wrong on one side) and err says why. */
int  farm__session_client(farm_link *l, const unsigned char key[FARM_KEYLEN], double timeout,
                          char *err, size_t errlen);

/* The node's side: a handshake in progress, fed one plain message at a time. */
typedef struct farm_hs {
  int state;                       /* 0: waiting for AUTH1, 1: for AUTH3 */
  int cipher;
  unsigned char nc[FARM_NONCELEN], nn[FARM_NONCELEN];
  char who[128];                   /* what the client says it is */
} farm_hs;
/* 0: go on (answered), 1: the link is sealed now, <0: refused (err says why;
   the client was told). */
int  farm__session_node(farm_hs *hs, farm_link *l, const unsigned char key[FARM_KEYLEN],
                        const void *msg, size_t n, char *err, size_t errlen);
#endif
