/*
 * transport.c -- links over nanomsg (see transport.h for why it looks like this).
 *
 * Lessons kept here: NN_RCVMAXSIZE defaults to 1 MiB and silently drops larger
 * messages, so every link sets it; ipc:// rather than inproc:// between
 * processes; readiness comes from NN_RCVFD/NN_SNDFD so one poll() serves all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <nanomsg/nn.h>
#include <nanomsg/pair.h>
#include "farm.h"
#include "transport.h"

struct farm_link {
  int sock;
  int rcvfd, sndfd;
};

const char *farm__link_error(void) { return nn_strerror(nn_errno()); }

int farm__link_open(farm_link **out, const char *url, int bind, size_t maxmsg,
                    char *err, size_t errlen) {
  farm_link *l = calloc(1, sizeof *l);
  if (!l) return FARM_ENOMEM;
  l->sock = nn_socket(AF_SP, NN_PAIR);
  if (l->sock < 0) goto fail;
  int max = maxmsg == 0 || maxmsg > 0x7fffffff ? -1 : (int)maxmsg;
  if (nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0) goto fail;
  int linger = 0;   /* close() does not wait for unsent messages to a dead peer */
  nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_LINGER, &linger, sizeof linger);
  int ivl = 20;     /* reconnect quickly: a worker connects right after exec */
  nn_setsockopt(l->sock, NN_SOL_SOCKET, NN_RECONNECT_IVL, &ivl, sizeof ivl);
  if ((bind ? nn_bind(l->sock, url) : nn_connect(l->sock, url)) < 0) goto fail;
  size_t sz = sizeof l->rcvfd;
  if (nn_getsockopt(l->sock, NN_SOL_SOCKET, NN_RCVFD, &l->rcvfd, &sz) < 0) goto fail;
  sz = sizeof l->sndfd;
  if (nn_getsockopt(l->sock, NN_SOL_SOCKET, NN_SNDFD, &l->sndfd, &sz) < 0) goto fail;
  *out = l;
  return 0;
fail:
  snprintf(err, errlen, "cannot %s %s: %s", bind ? "listen on" : "connect to", url,
           nn_strerror(nn_errno()));
  if (l->sock >= 0) nn_close(l->sock);
  free(l);
  return FARM_ELINK;
}

void farm__link_close(farm_link *l) {
  if (!l) return;
  nn_close(l->sock);
  free(l);
}

int farm__link_send(farm_link *l, const void *p, size_t n, int nowait) {
  for (;;) {
    int rc = nn_send(l->sock, p, n, nowait ? NN_DONTWAIT : 0);
    if (rc >= 0) return 0;
    if (nn_errno() == EAGAIN) return FARM_EAGAIN;
    if (nn_errno() == EINTR && !nowait) continue;
    return FARM_ELINK;
  }
}

int farm__link_recv(farm_link *l, void **msg, size_t *n, int nowait) {
  for (;;) {
    void *buf = NULL;
    int rc = nn_recv(l->sock, &buf, NN_MSG, nowait ? NN_DONTWAIT : 0);
    if (rc >= 0) { *msg = buf; *n = (size_t)rc; return 0; }
    if (nn_errno() == EAGAIN) return FARM_EAGAIN;
    if (nn_errno() == EINTR && !nowait) continue;
    return FARM_ELINK;
  }
}

void farm__link_free(void *msg) { if (msg) nn_freemsg(msg); }
int farm__link_rcvfd(farm_link *l) { return l->rcvfd; }
int farm__link_sndfd(farm_link *l) { return l->sndfd; }
