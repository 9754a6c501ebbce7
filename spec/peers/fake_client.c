/*
 * fake_client.c -- a client that is not farm.lua, for the tests of the node's
 * walls (spec/node_files_spec.lua): it holds the key, says hello at a real
 * `farm node`'s lobby (farm__lobby_client), and on its own sealed link sends a
 * SHARE of files whose names farm.lua would never send:
 *
 *   ../x  a/../../x  /ABS (the --abs path given)  ./.  ""  a//b  ok.txt
 *
 * each with the bytes "planted by fake_client\n" ("ok.txt" is a plain name:
 * the node must write that one, the rest it must skip and log). It waits for
 * the node's HELLO first (the session is up), sends the SHARE and a QUIT, and
 * exits 0; 1 when it cannot reach the node, 2 on a bad command line.
 *
 *   fake_client --connect tcp://127.0.0.1:PORT --key-file F --abs /path
 *
 * With --shm-job 1 in place of --abs, it sends instead one JOBS whose job says
 * its arguments are in shared memory (FN_SHM: offset 0, 100000 bytes), which
 * only a client's own local workers may be told (spec/shm_spec.lua): the node
 * must end the session, saying why, and read nothing.
 *
 * The messages are written with proto.c's writers, which check nothing about
 * what they carry, and not through the client (client.c), so that nothing
 * here depends on the client's own checks.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include "farm.h"
#include "buf.h"
#include "clock.h"
#include "proto.h"
#include "session.h"
#include "transport.h"

static void share_file(farm_buf *b, const char *name, size_t n) {
  static const char data[] = "planted by fake_client\n";
  farm_msg_share m = { .kind = FARM_SHARE_FILE, .name = name, .nname = n, .block = data,
                       .nblock = sizeof data - 1 };
  farm__proto_put_share(b, &m);
}

int main(int argc, char **argv) {
  const char *url = NULL, *keyfile = NULL, *abs = NULL;
  int shm = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--connect")) url = argv[i + 1];
    else if (!strcmp(argv[i], "--key-file")) keyfile = argv[i + 1];
    else if (!strcmp(argv[i], "--abs")) abs = argv[i + 1];
    else if (!strcmp(argv[i], "--shm-job")) shm = atoi(argv[i + 1]);
  }
  if (!url || !keyfile || (!shm && (!abs || abs[0] != '/'))) {
    fprintf(stderr, "usage: fake_client --connect URL --key-file F (--abs /PATH | --shm-job 1)\n");
    return 2;
  }
  unsigned char key[FARM_KEYLEN];
  char err[512];
  farm_link *l = NULL;
  if (sodium_init() < 0 || farm__key_load(keyfile, key, err, sizeof err) < 0 ||
      farm__lobby_client(url, key, 10.0, 1 << 20, &l, err, sizeof err) < 0) {
    fprintf(stderr, "fake_client: %s\n", err);
    return 1;
  }
  const char *names[] = { "../x", "a/../../x", abs, "./.", "", "a//b", "ok.txt" };
  int count = (int)(sizeof names / sizeof *names);
  /* the node's HELLO answers the BEAT farm__lobby_client sent: the session is up */
  int hello = 0;
  double until = farm__now() + 10;
  while (!hello && farm__now() < until) {
    void *m;
    size_t n;
    int rc = farm__link_recv(l, &m, &n, 1);
    if (rc == FARM_EAGAIN) {
      struct pollfd pfd = { .fd = farm__link_rcvfd(l), .events = POLLIN };
      poll(&pfd, 1, 100);
      continue;
    }
    if (rc < 0) break;
    farm_rd r;
    hello = farm__msg_open(&r, m, n, err, sizeof err) == FARM_MSG_HELLO;
    farm__link_free(m);
  }
  if (!hello) {
    fprintf(stderr, "fake_client: no HELLO from the node\n");
    farm__link_close(l);
    return 1;
  }
  farm_buf b;
  farm__buf_init(&b);
  if (shm) {
    static const unsigned char hash[FARM_HASHLEN];
    static const char fnb[] = "not a function block";
    farm_msg_job j = { .id = 1, .mode = FARM_MODE_CALL, .hash = hash, .fn = FARM_FN_FRESH,
                       .fnb = fnb, .nfn = sizeof fnb - 1, .shm = 1, .args_off = 0, .nargs = 100000 };
    farm__proto_put_jobs(&b, 0, 1);
    farm__proto_put_job(&b, &j);
    farm__proto_count(&b, 1);
    int rc = farm__link_send(l, b.p, b.n, 0);
    for (int i = 0; i < 50 && farm__link_held(l); i++) { farm__link_flush(l); usleep(20000); }
    usleep(300000);
    farm__buf_free(&b);
    farm__link_close(l);
    if (rc < 0) { fprintf(stderr, "fake_client: cannot send: %s\n", farm__link_error()); return 1; }
    fprintf(stderr, "fake_client: sent a job in shared memory\n");
    return 0;
  }
  farm__proto_put_list(&b, FARM_MSG_SHARE);
  for (int i = 0; i < count; i++) share_file(&b, names[i], strlen(names[i]));
  farm__proto_count(&b, (uint32_t)count);
  int rc = farm__link_send(l, b.p, b.n, 0);
  /* the node reads its link in order: the SHARE is done when it ends the
     session on the QUIT (the spec waits for that in the node's log) */
  farm__proto_put_empty(&b, FARM_MSG_QUIT);
  if (rc == 0) rc = farm__link_send(l, b.p, b.n, 0);
  for (int i = 0; i < 50 && farm__link_held(l); i++) { farm__link_flush(l); usleep(20000); }
  usleep(300000);                  /* (nanomsg sends from a thread of its own) */
  farm__buf_free(&b);
  farm__link_close(l);
  if (rc < 0) {
    fprintf(stderr, "fake_client: cannot send: %s\n", farm__link_error());
    return 1;
  }
  fprintf(stderr, "fake_client: shared %d files\n", count);
  return 0;
}
