/*
 * transport.h -- every link farm has, behind one small interface.
 *
 * This is the only file pair that knows nanomsg. A link is one NN_PAIR socket
 * to one peer (never REQ/REP, which re-sends after 60 s, nor PUSH/PULL, which
 * deals work round-robin, for jobs: a node's lobby is REQ/REP, for the handshake
 * alone, and a node's announcements to a client are PUSH/PULL, one-way and
 * never a job). Sends never block the caller when asked not to: the
 * scheduler keeps what could not go yet and polls the link's send fd. To move
 * to nng, rewrite transport.c.
 */
#ifndef FARM_TRANSPORT_H
#define FARM_TRANSPORT_H
#include <stddef.h>
#include <stdint.h>
#include "buf.h"

typedef struct farm_link farm_link;

/* Open a link that binds (listen) or connects to url ("ipc:///path", "tcp://h:p").
   maxmsg: largest message accepted, in bytes (0: no limit).
   On failure returns a negative FARM_E* code and writes a message to err. */
int  farm__link_open(farm_link **out, const char *url, int bind, size_t maxmsg,
                     char *err, size_t errlen);
void farm__link_close(farm_link *l);
/* The largest message accepted from now on (0: no limit); nanomsg reads it as
   each message's header arrives, and drops a connection that announces more. */
int  farm__link_maxmsg(farm_link *l, size_t maxmsg);
/* Drop every connection of a link and take new ones at the same address (a
   bound link that a stranger holds: the peer it waits for reconnects). */
int  farm__link_rebind(farm_link *l);

/* A node's lobby (session.h): where clients say hello before each gets a link
   of its own. bind: the node's side, nanomsg REP (it answers each request on
   the connection it came from, so any number of clients, and strangers, can
   be connected at once and none holds the others off); else the client's side,
   REQ. Lobby messages are at most FARM_LOBBY_MAXMSG bytes: a longer one drops
   its connection before it is read. Only the handshake crosses a lobby, in
   request/answer pairs; REQ's re-send after a silence (1 s here) only repeats
   a hello, which the lobby answers the same way. */
#define FARM_LOBBY_MAXMSG 4096
int  farm__lobby_link_open(farm_link **out, const char *url, int bind, char *err, size_t errlen);

/* Where nodes announce themselves to a client that listens for them
   (announce.h: `farm run --listen`, `farm node --join`): bind, the client's
   side, a nanomsg PULL that only receives; else the node's, a PUSH that only
   sends (one-way: the node learns nothing from it, and needs nothing). At
   most FARM_LOBBY_MAXMSG bytes a message, as a lobby's. */
int  farm__join_link_open(farm_link **out, const char *url, int bind, char *err, size_t errlen);

/* Send n bytes (copied). nowait: return FARM_EAGAIN instead of blocking. */
int  farm__link_send(farm_link *l, const void *p, size_t n, int nowait);
/* Receive one message; *msg must be released with farm__link_free.
   nowait: FARM_EAGAIN when nothing is waiting. */
int  farm__link_recv(farm_link *l, void **msg, size_t *n, int nowait);
void farm__link_free(void *msg);

/* File descriptors that poll readable when a message can be received / sent. */
int  farm__link_rcvfd(farm_link *l);
int  farm__link_sndfd(farm_link *l);
const char *farm__link_error(void);   /* text of the last transport error */

/* Seal the link: from now on every frame sent is encrypted and authenticated
   under ktx, every frame received must open under krx, each direction numbered
   (session.h says how the keys are agreed). A frame that does not open makes
   farm__link_recv fail with FARM_EAUTH. */
enum { FARM_SEAL_AES = 1, FARM_SEAL_CHACHA = 2 };
void farm__link_seal(farm_link *l, int cipher, const unsigned char ktx[32], const unsigned char krx[32]);
void farm__link_unseal(farm_link *l);
int  farm__link_sealed(const farm_link *l);
/* After FARM_EAUTH: the frame that did not open, when it was small (a plain
   hello from a peer that took a dead one's place), else NULL. */
const void *farm__link_rejected(const farm_link *l, size_t *n);
int  farm__seal_best(void);           /* the cipher this CPU runs fastest */
/* A sealed link keeps a frame nanomsg could not take yet (it counts as sent):
   held says so, flush tries to send it (0: nothing is left held). */
int  farm__link_held(const farm_link *l);
int  farm__link_flush(farm_link *l);
/* Messages a link could not take yet, kept whole and in order in q (each with
   its length in front) for when it can: the engine keeps one per peer, the
   node one for its client; neither ever blocks on a link. send_queued sends
   msg now when nothing waits and the link takes it, else appends it (0, or
   a negative code: the link failed, or FARM_ENOMEM); flush_queued sends what
   waits (0 when nothing is left waiting, FARM_EAGAIN, or the link's error). */
int  farm__link_send_queued(farm_link *l, farm_buf *q, const void *msg, size_t n);
int  farm__link_flush_queued(farm_link *l, farm_buf *q);
/* When a sealed frame last arrived (farm__now() seconds; 0: never). */
double farm__link_last_recv(const farm_link *l);
/* Whether the TCP connection under a link that dials an IPv4 tcp:// address is
   up, which nanomsg does not say (it would dial again, silently): 1 while the
   kernel holds it established, 0 once it has closed (the peer is gone), -1 when
   that cannot be told (not such a link, or no connection of ours to that
   address at the first call). The first call looks for the link's socket among
   this process's descriptors in /proc (so it is made once connected); later
   ones read that socket's state alone. */
int farm__link_tcp_up(farm_link *l);

/* A TCP port free on IPv4 address addr (NULL: on every address) at this moment,
   for a link to bind (nanomsg cannot bind port 0 and say which it got); -1 if none. */
int  farm__free_port(const char *addr);

#define FARM_EAGAIN (-100)            /* internal: try again later */
#endif
