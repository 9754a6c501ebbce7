/*
 * session.h -- who may talk to a node, and what nobody else can read or change
 * (session.c; libsodium).
 *
 * A farm key is 32 random bytes, kept as 64 hex digits in a file only its owner
 * can read (`farm keygen FILE`). Client and node each prove they know it over
 * two fresh nonces, the node first (pp checks only the client, with SHA-1, and
 * then talks in clear). On one PAIR link (a node srun started dials its client,
 * whose port it is; other nodes say hello at a lobby, below, in the same words):
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
/*
 * The lobby. A standing node, and a node started over SSH, do not hand their
 * listening port to the first connection that comes: they listen with a lobby
 * (transport.h: nanomsg REP, which answers each request on the connection it
 * came from), and each client that proves it knows the key is given a link of
 * its own, on a port of its own, served by a process of its own (nodes/node.c).
 * So a stranger's connection, idle or busy, holds nobody off, and messages
 * before the handshake are at most FARM_LOBBY_MAXMSG bytes.
 *
 *   AUTH1  c->n  as above                       (the lobby answers AUTH2)
 *   AUTH3  c->n  nonce_c[32] proof_c[32]        (the nonce says whose hello it answers)
 *   AUTHOK n->c  uvar(port)                      (go there: the link of your own)
 *   AUTHNO n->c  str(why)
 *   AUTHNO c->n  str(why) nonce_c[32]            (the node's proof was wrong: it hears so)
 *
 * The client then connects a PAIR link to that port, seals it with the keys
 * above, and speaks first (a BEAT); the node's side answers HELLO once a frame
 * has opened under those keys, and gives up the link if none does within
 * FARM_LOBBY_DEADLINE seconds.
 */
#ifndef FARM_SESSION_H
#define FARM_SESSION_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"
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

#define FARM_LOBBY_DEADLINE 5.0    /* seconds for a handshake, or a first frame */
#define FARM_LOBBY_PENDING 256     /* hellos answered and awaiting their AUTH3 */
#define FARM_LOBBY_RATE 500        /* hellos answered per second at most */

/* The client's side: say hello at the lobby at url ("tcp://addr:port"), then
   connect and seal a link of its own (maxmsg as farm__link_open). 0 with *out
   set, or a negative code with one line in err (FARM_EAUTH: a key is wrong;
   FARM_ETIMEDOUT: no answer). */
int  farm__lobby_client(const char *url, const unsigned char key[FARM_KEYLEN], double timeout,
                        size_t maxmsg, farm_link **out, char *err, size_t errlen);

/* The node's side: the hellos it has answered (no pointers: a lobby is a plain
   value, zeroed to start). */
typedef struct farm_lobby_hs {
  unsigned char nc[FARM_NONCELEN], nn[FARM_NONCELEN];
  int cipher;
  double at;                       /* when AUTH1 came (0: a free slot) */
  char who[128];
} farm_lobby_hs;
typedef struct farm_lobby {
  farm_lobby_hs hs[FARM_LOBBY_PENDING];
  double window;                   /* the second the rate is counted in, */
  int answered;                    /* ...and the hellos answered in it */
  uint64_t unanswered, refused;    /* for the log: hellos over the rate; proofs wrong */
} farm_lobby;
/* A client that proved it knows the key: the node's keys for its link. */
typedef struct farm_lobby_client {
  int cipher;
  unsigned char ktx[32], krx[32];
  char who[128];
} farm_lobby_client;
/* One message that came to the lobby. Returns 0 with the answer in out (an
   AUTH2, or an AUTHNO; out->n == 0: none, the message is ignored: a stranger's
   bytes, or a hello over the rate, which REQ asks again); FARM_EAUTH when one
   side's key is not the other's (err says which; acc->who who it said it was;
   the answer is in out); or 1: acc says who proved it knows the key, and the
   caller gives it a link and answers with farm__lobby_welcome (or
   farm__lobby_refuse). err says why a message was ignored. */
int  farm__lobby_answer(farm_lobby *lb, const unsigned char key[FARM_KEYLEN], const void *msg,
                        size_t n, farm_buf *out, farm_lobby_client *acc, char *err, size_t errlen);
void farm__lobby_welcome(farm_buf *out, int port);
void farm__lobby_refuse(farm_buf *out, const char *why);
/* The node's side of a client's own link: seal it with acc's keys. */
void farm__lobby_seal(farm_link *l, const farm_lobby_client *acc);
#endif
