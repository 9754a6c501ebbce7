/*
 * status.c -- the live status page (status.h): a read-only HTTP server on
 * libmicrohttpd's own thread, and `farm status ADDR`, its terminal client.
 *
 * libmicrohttpd is loaded with dlopen when a server first starts, not linked
 * (as libssh2 and libedit are, lazy.h): Debian's libmicrohttpd12 pulls in
 * GnuTLS and its half-dozen libraries, and every farm process -- each worker
 * too -- would map them at exec for a page that few runs ask for. Only a
 * process given --status loads it; without the package, --status says which
 * to install (one line) and nothing else changes.
 *
 * What it answers: GET (or HEAD) of / (the page: status_page.html, compiled
 * in), /status.json and /status.txt (the same figures as a table); any other
 * path 404, any other method 405. Nothing it answers changes the run. With a
 * key (farm__status_start's key), /status.json and /status.txt need the token
 * BLAKE2b-256(key, "farm status") in hex, as ?token= or "Authorization: Bearer",
 * compared in constant time; without it they answer 401 and nothing else (the
 * page itself holds no figure and is served to anyone, so it can ask for the
 * token). A node's page (nodes/node.c) names its clients and counts their
 * jobs but carries no error: the jobs of every client run on that host and can
 * read a loopback page. Strangers cannot hold the run: at most STATUS_CONNS connections at
 * once, STATUS_PER_IP from one address, each dropped after STATUS_TIMEOUT
 * seconds idle, with a small memory limit; the engine's lock is held only
 * while the snapshot is copied (farm__engine_status_snap), never while a
 * request is read or answered.
 *
 * Threads: farm__status_start/stop on the owner's thread; the access handler
 * and the fill callback on libmicrohttpd's thread; farm__status_publish on the
 * owner's thread. st->mu guards the published snapshot and the rate samples.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sodium.h>
#include <microhttpd.h>
#include "farm.h"
#include "buf.h"
#include "clock.h"
#include "lazy.h"
#include "session.h"
#include "status.h"
#include "status_page.h"

#define LIBMICROHTTPD_SONAME "libmicrohttpd.so.12"   /* Debian's libmicrohttpd12 */
#define LIBMICROHTTPD_PACKAGE "libmicrohttpd12"
#define STATUS_CONNS 16            /* connections at once, at most */
#define STATUS_PER_IP 4            /* ...from one address */
#define STATUS_TIMEOUT 10          /* seconds a connection may stay idle */
#define STATUS_MEMORY (64u << 10)  /* bytes of memory a connection may use */
#define RATE_WINDOW 5.0            /* rate: jobs per second over this many seconds */
#define RATE_SAMPLES 64

#define MHD_FUNCS(X) \
  X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_create_response_from_buffer) \
  X(MHD_add_response_header) X(MHD_queue_response) X(MHD_destroy_response) \
  X(MHD_lookup_connection_value)

typedef struct mhd_table {
#define MHD_FIELD(f) __typeof__(f) *f;
  MHD_FUNCS(MHD_FIELD)
#undef MHD_FIELD
} mhd_table;
/* The table is the process's (filled once, read-only after: as ssh.c's). */
static mhd_table mhd;
static char mhd_err[400];
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;

static void mhd_load(void) {
  static const char *const names[] = { MHD_FUNCS(FARM_LAZY_NAME) };
#define t mhd
  void **slots[] = { MHD_FUNCS(FARM_LAZY_SLOT) };
#undef t
  farm__lazy_load(LIBMICROHTTPD_SONAME, LIBMICROHTTPD_PACKAGE, names, slots,
                  (int)(sizeof names / sizeof *names), mhd_err, sizeof mhd_err);
}

struct farm_status_srv {
  struct MHD_Daemon *d;
  farm_status_fill fill;
  void *arg;
  int keyed;
  char token[65];
  pthread_mutex_t mu;
  farm_status_snap pub;            /* [mu] published (fill NULL) */
  int has_pub;                     /* [mu] */
  double st[RATE_SAMPLES];         /* [mu] (time, done) samples, a ring */
  uint64_t sd[RATE_SAMPLES];
  int ns, at;
};

void farm__status_snap_free(farm_status_snap *s) {
  free(s->rows);
  free(s->clients);
  s->rows = NULL;
  s->clients = NULL;
  s->nrows = s->nclients = 0;
}

void farm__status_token(const unsigned char *key, char out[65]) {
  unsigned char h[32];
  crypto_generichash(h, sizeof h, (const unsigned char *)"farm status", 11, key, FARM_KEYLEN);
  sodium_bin2hex(out, 65, h, sizeof h);
  sodium_memzero(h, sizeof h);
}

int farm__status_addr(const char *addr, char *host, size_t nhost, int *port, char *err, size_t errlen) {
  const char *colon = strrchr(addr, ':');
  const char *p = colon ? colon + 1 : addr;
  char h[64];
  if (colon) snprintf(h, sizeof h, "%.*s", (int)(colon - addr), addr);
  else snprintf(h, sizeof h, "127.0.0.1");
  if (!strcmp(h, "localhost")) snprintf(h, sizeof h, "127.0.0.1");
  char *end;
  long v = strtol(p, &end, 10);
  struct in_addr in;
  if (!*p || *end || v < 1 || v > 65535 || (colon && (size_t)(colon - addr) >= sizeof h) ||
      inet_pton(AF_INET, h, &in) != 1) {
    snprintf(err, errlen, "a status address is PORT or HOST:PORT with an IPv4 address and a port "
             "from 1 to 65535 (e.g. 127.0.0.1:8642), not '%s'", addr);
    return -1;
  }
  snprintf(host, nhost, "%s", h);
  *port = (int)v;
  return (ntohl(in.s_addr) >> 24) == 127;
}

/* ---- rendering ---------------------------------------------------------------- */

static void put(farm_buf *b, const char *s) { farm__buf_put(b, s, strlen(s)); }

static void putf(farm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(farm_buf *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) farm__buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void jstr(farm_buf *b, const char *s) {
  farm__buf_u8(b, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') { farm__buf_u8(b, '\\'); farm__buf_u8(b, *p); }
    else if (*p == '\n') put(b, "\\n");
    else if (*p == '\t') put(b, "\\t");
    else if (*p < 0x20 || *p == 0x7f) putf(b, "\\u%04x", *p);
    else farm__buf_u8(b, *p);
  }
  farm__buf_u8(b, '"');
}

static void jnum(farm_buf *b, double x) {
  if (isfinite(x)) putf(b, "%.3f", x); else put(b, "null");
}

/* The rate lately, from the samples taken at each look (mu held). */
static double rate_of(farm_status_srv *st, const farm_status_snap *s) {
  double now = farm__now();
  uint64_t done = s->done + s->failed;
  st->st[st->at] = now;
  st->sd[st->at] = done;
  st->at = (st->at + 1) % RATE_SAMPLES;
  if (st->ns < RATE_SAMPLES) st->ns++;
  double t0 = now;
  uint64_t d0 = done;
  for (int i = 0; i < st->ns; i++)
    if (st->st[i] < t0 && now - st->st[i] <= RATE_WINDOW) { t0 = st->st[i]; d0 = st->sd[i]; }
  if (now - t0 >= 0.5 && done >= d0) return (double)(done - d0) / (now - t0);
  return s->elapsed > 0 ? (double)done / s->elapsed : 0;   /* too soon: the run's average */
}

static void render_json(farm_buf *b, const farm_status_snap *s, double rate) {
  uint64_t left = s->total > s->done + s->failed ? s->total - s->done - s->failed : 0;
  put(b, "{\"kind\":"); jstr(b, s->kind);
  put(b, ",\"name\":"); jstr(b, s->name);
  putf(b, ",\"total\":%llu,\"done\":%llu,\"running\":%llu,\"failed\":%llu,\"queued\":%llu,\"rate\":",
       (unsigned long long)s->total, (unsigned long long)s->done, (unsigned long long)s->running,
       (unsigned long long)s->failed, (unsigned long long)s->queued);
  jnum(b, rate);
  put(b, ",\"eta\":");
  jnum(b, left == 0 ? 0 : rate > 0 ? (double)left / rate : NAN);
  put(b, ",\"elapsed\":"); jnum(b, s->elapsed);
  put(b, ",\"nodes\":[");
  for (int i = 0; i < s->nrows; i++) {
    const farm_status_row *r = &s->rows[i];
    put(b, i ? ",{\"name\":" : "{\"name\":"); jstr(b, r->name);
    put(b, ",\"kind\":"); jstr(b, r->kind);
    put(b, ",\"state\":"); jstr(b, r->state);
    putf(b, ",\"workers\":%d,\"busy\":%d,\"done\":%llu,\"clients\":", r->workers, r->busy,
         (unsigned long long)r->done);
    if (!strcmp(s->kind, "node")) {             /* a node's own row: whom it serves */
      put(b, "[");
      for (int k = 0; k < s->nclients; k++) {
        const farm_status_client *c = &s->clients[k];
        put(b, k ? ",{\"name\":" : "{\"name\":"); jstr(b, c->name);
        putf(b, ",\"workers\":%d,\"active\":%s,\"done\":%llu,\"failed\":%llu}", c->workers,
             c->active ? "true" : "false", (unsigned long long)c->done, (unsigned long long)c->failed);
      }
      put(b, "]}");
    } else putf(b, "%d}", r->clients);
  }
  put(b, "],\"errors\":[");
  for (int i = 0; i < s->nerrors; i++) {
    const farm_status_error *e = &s->errors[i];
    putf(b, "%s{\"job\":%llu,\"worker\":", i ? "," : "", (unsigned long long)e->job);
    jstr(b, e->worker);
    put(b, ",\"message\":"); jstr(b, e->msg);
    put(b, ",\"traceback\":"); jstr(b, e->tb);
    put(b, "}");
  }
  put(b, "]}\n");
}

/* One line of a text field: up to its first newline, at most n bytes. */
static void first_line(farm_buf *b, const char *s, int n) {
  int k = 0;
  while (s[k] && s[k] != '\n' && k < n) k++;
  farm__buf_put(b, s, (size_t)k);
}

static void render_text(farm_buf *b, const farm_status_snap *s, double rate) {
  uint64_t left = s->total > s->done + s->failed ? s->total - s->done - s->failed : 0;
  putf(b, "farm %s %.100s: %llu of %llu done, %llu running, %llu failed, %.1f jobs/s", s->kind, s->name,
       (unsigned long long)s->done, (unsigned long long)s->total, (unsigned long long)s->running,
       (unsigned long long)s->failed, rate);
  if (left && rate > 0) putf(b, ", ETA %.0f s", (double)left / rate);
  putf(b, ", up %.0f s\n\n", s->elapsed);
  putf(b, "%-28s %-9s %7s %5s %9s\n", "NODE", "STATE", "WORKERS", "BUSY", "DONE");
  for (int i = 0; i < s->nrows; i++) {
    const farm_status_row *r = &s->rows[i];
    putf(b, "%-28.63s %-9s %7d %5d %9llu\n", r->name, r->state, r->workers, r->busy, (unsigned long long)r->done);
  }
  if (s->nclients) {
    putf(b, "\n%-36s %7s %6s %9s %7s\n", "CLIENT", "WORKERS", "BUSY", "DONE", "FAILED");
    for (int k = 0; k < s->nclients; k++) {
      const farm_status_client *c = &s->clients[k];
      putf(b, "%-36.127s %7d %6s %9llu %7llu\n", c->name, c->workers, c->active ? "yes" : "no",
           (unsigned long long)c->done, (unsigned long long)c->failed);
    }
  }
  if (s->nerrors) {
    put(b, "\nLAST ERRORS\n");
    for (int i = 0; i < s->nerrors; i++) {
      putf(b, "job %llu on %.63s: ", (unsigned long long)s->errors[i].job, s->errors[i].worker);
      first_line(b, s->errors[i].msg, 400);
      put(b, "\n");
    }
  }
}

/* ---- the server ---------------------------------------------------------------- */

static void copy_snap(farm_status_snap *to, const farm_status_snap *from) {
  *to = *from;
  to->rows = from->nrows ? malloc((size_t)from->nrows * sizeof *to->rows) : NULL;
  to->clients = from->nclients ? malloc((size_t)from->nclients * sizeof *to->clients) : NULL;
  if (to->rows) memcpy(to->rows, from->rows, (size_t)from->nrows * sizeof *to->rows); else to->nrows = 0;
  if (to->clients) memcpy(to->clients, from->clients, (size_t)from->nclients * sizeof *to->clients);
  else to->nclients = 0;
}

void farm__status_publish(farm_status_srv *st, const farm_status_snap *s) {
  if (!st) return;
  farm_status_snap c;
  copy_snap(&c, s);
  pthread_mutex_lock(&st->mu);
  farm__status_snap_free(&st->pub);
  st->pub = c;
  st->has_pub = 1;
  pthread_mutex_unlock(&st->mu);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, const char *type,
                              const void *body, size_t n, const char *allow) {
  struct MHD_Response *r = mhd.MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  mhd.MHD_add_response_header(r, "Content-Type", type);
  mhd.MHD_add_response_header(r, "Cache-Control", "no-store");
  mhd.MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  mhd.MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  mhd.MHD_add_response_header(r, "X-Frame-Options", "DENY");
  mhd.MHD_add_response_header(r, "Content-Security-Policy",
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
      "frame-ancestors 'none'");
  if (allow) mhd.MHD_add_response_header(r, "Allow", allow);
  enum MHD_Result rc = mhd.MHD_queue_response(c, code, r);
  mhd.MHD_destroy_response(r);
  return rc;
}

static int token_ok(farm_status_srv *st, struct MHD_Connection *c) {
  if (!st->keyed) return 1;
  const char *t = mhd.MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
  const char *h = mhd.MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (!t && h && !strncmp(h, "Bearer ", 7)) t = h + 7;
  if (!t || strlen(t) != 64) return 0;
  return sodium_memcmp(t, st->token, 64) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *nupload, void **con_cls) {
  (void)version; (void)upload; (void)nupload; (void)con_cls;
  farm_status_srv *st = cls;
  int page = !strcmp(url, "/"), json = !strcmp(url, "/status.json"), text = !strcmp(url, "/status.txt");
  static const char nf[] = "not found: farm's status page has /, /status.json and /status.txt\n";
  if (!page && !json && !text) return answer(c, 404, "text/plain; charset=utf-8", nf, sizeof nf - 1, NULL);
  if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
    static const char na[] = "method not allowed: the status page is read-only (GET)\n";
    return answer(c, 405, "text/plain; charset=utf-8", na, sizeof na - 1, "GET, HEAD");
  }
  if (page) return answer(c, 200, "text/html; charset=utf-8", farm_status_page, sizeof farm_status_page - 1, NULL);
  if (!token_ok(st, c)) {
    static const char na[] = "{\"error\":\"this page needs its token: ?token=HEX or Authorization: Bearer HEX\"}\n";
    return answer(c, 401, "application/json", na, sizeof na - 1, NULL);
  }
  farm_status_snap s;
  memset(&s, 0, sizeof s);
  if (st->fill) st->fill(st->arg, &s);
  pthread_mutex_lock(&st->mu);
  if (!st->fill && st->has_pub) copy_snap(&s, &st->pub);
  double rate = rate_of(st, &s);
  pthread_mutex_unlock(&st->mu);
  farm_buf b;
  farm__buf_init(&b);
  if (json) render_json(&b, &s, rate); else render_text(&b, &s, rate);
  farm__status_snap_free(&s);
  enum MHD_Result rc = answer(c, 200, json ? "application/json" : "text/plain; charset=utf-8",
                              b.p ? b.p : "", b.n, NULL);
  farm__buf_free(&b);
  return rc;
}

int farm__status_start(farm_status_srv **out, const char *addr, const unsigned char *key,
                       farm_status_fill fill, void *arg, char *err, size_t errlen) {
  *out = NULL;
  char host[64];
  int port;
  if (farm__status_addr(addr, host, sizeof host, &port, err, errlen) < 0) return -1;
  pthread_once(&mhd_once, mhd_load);
  if (mhd_err[0]) { snprintf(err, errlen, "--status: %s", mhd_err); return -1; }
  /* the socket is ours to bind, so that a port in use says so */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  inet_pton(AF_INET, host, &sa.sin_addr);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0) {
    snprintf(err, errlen, "--status %s: cannot listen there: %s%s", addr, strerror(errno),
             errno == EADDRINUSE ? " (pick another port)" : errno == EADDRNOTAVAIL
             ? " (the address must be one of this host's, or 0.0.0.0)" : "");
    if (fd >= 0) close(fd);
    return -1;
  }
  farm_status_srv *st = calloc(1, sizeof *st);
  if (!st) { close(fd); snprintf(err, errlen, "out of memory"); return -1; }
  pthread_mutex_init(&st->mu, NULL);
  st->fill = fill;
  st->arg = arg;
  if (key) { st->keyed = 1; farm__status_token(key, st->token); }
  /* its thread takes no signal: they are the owner's (a node's signalfd, a
     run's Ctrl-C), as the engine's loop thread takes none */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  st->d = mhd.MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, st,
                               MHD_OPTION_LISTEN_SOCKET, fd,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)STATUS_CONNS,
                               MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)STATUS_PER_IP,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)STATUS_TIMEOUT,
                               MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)STATUS_MEMORY,
                               MHD_OPTION_END);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!st->d) {
    close(fd);
    pthread_mutex_destroy(&st->mu);
    free(st);
    snprintf(err, errlen, "--status %s: libmicrohttpd would not start", addr);
    return -1;
  }
  *out = st;
  return 0;
}

int farm__status_open(farm_status_srv **out, const char *addr, const char *keyfile, int token,
                      farm_status_fill fill, void *arg, char *err, size_t errlen) {
  char host[64];
  int port;
  if (out) *out = NULL;
  int lo = farm__status_addr(addr, host, sizeof host, &port, err, errlen);
  if (lo < 0) return -1;
  if (!keyfile || !*keyfile) keyfile = getenv("FARM_KEY_FILE");
  int have = keyfile && *keyfile;
  if (!lo && !have) {
    snprintf(err, errlen, "--status %s: the page would show this farm to anyone who reaches that address; "
             "give --key-file F (the page then asks for its token) or listen on 127.0.0.1", addr);
    return -1;
  }
  if (token && !have) {
    snprintf(err, errlen, "--status-token needs the farm key (--key-file F): the token is made from it");
    return -1;
  }
  unsigned char key[FARM_KEYLEN];
  int keyed = have && (token || !lo);
  if (keyed && farm__key_load(keyfile, key, err, errlen) < 0) return -1;
  int rc = out ? farm__status_start(out, addr, keyed ? key : NULL, fill, arg, err, errlen) : 0;
  sodium_memzero(key, sizeof key);
  return rc;
}

void farm__status_stop(farm_status_srv *st) {
  if (!st) return;
  mhd.MHD_stop_daemon(st->d);       /* closes the listening socket, joins its thread */
  farm__status_snap_free(&st->pub);
  pthread_mutex_destroy(&st->mu);
  sodium_memzero(st->token, sizeof st->token);
  free(st);
}

/* ---- farm status ADDR: GET /status.txt by hand ---------------------------------- */

static int status_fail(const char *fmt, const char *a) {
  fputs("farm status: ", stderr);
  fprintf(stderr, fmt, a);
  fputs("\n", stderr);
  return 2;
}

static const char status_usage[] =
  "usage: farm status ADDR [--key-file F] [--url]\n"
  "  print the figures of a farm run or node started with --status ADDR, as a table\n"
  "  ADDR          PORT or HOST:PORT (e.g. 127.0.0.1:8642)\n"
  "  --key-file F  the farm key, when the page needs its token (default $FARM_KEY_FILE)\n"
  "  --url         print the page's address for a browser instead, with the token (from\n"
  "                the key) in its #fragment, which the browser never sends\n";

int farm__status_main(int argc, char **argv) {
  const char *addr = NULL, *keyfile = NULL;
  int url = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { fputs(status_usage, stdout); return 0; }
    if (!strcmp(argv[i], "--url")) { url = 1; continue; }
    if (!strcmp(argv[i], "--key-file")) {
      if (i + 1 >= argc) return status_fail("%s needs a path", argv[i]);
      keyfile = argv[++i];
    } else if (argv[i][0] == '-') return status_fail("unknown option '%s' (see farm status --help)", argv[i]);
    else if (!addr) addr = argv[i];
    else return status_fail("unexpected argument '%s' (see farm status --help)", argv[i]);
  }
  if (!addr) return status_fail("%s", "needs the address of a status page: farm status 127.0.0.1:8642");
  if (!keyfile || !*keyfile) keyfile = getenv("FARM_KEY_FILE");
  char host[64], err[600], auth[128] = "";
  int port;
  if (farm__status_addr(addr, host, sizeof host, &port, err, sizeof err) < 0) return status_fail("%s", err);
  if (keyfile && *keyfile) {
    unsigned char key[FARM_KEYLEN];
    if (sodium_init() < 0 || farm__key_load(keyfile, key, err, sizeof err) < 0) return status_fail("%s", err);
    char tok[65];
    farm__status_token(key, tok);
    sodium_memzero(key, sizeof key);
    if (url) {
      printf("http://%s:%d/#token=%s\n", host, port, tok);
      sodium_memzero(tok, sizeof tok);
      return 0;
    }
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    sodium_memzero(tok, sizeof tok);
  }
  if (url) { printf("http://%s:%d/\n", host, port); return 0; }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  inet_pton(AF_INET, host, &sa.sin_addr);
  struct timeval tv = { .tv_sec = 10 };
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    fprintf(stderr, "farm status: cannot reach %s: %s (is a farm running there with --status?)\n",
            addr, strerror(errno));
    if (fd >= 0) close(fd);
    return 1;
  }
  char req[512];
  int nreq = snprintf(req, sizeof req, "GET /status.txt HTTP/1.0\r\nHost: %s:%d\r\n%sConnection: close\r\n\r\n",
                      host, port, auth);
  sodium_memzero(auth, sizeof auth);
  farm_buf b;
  farm__buf_init(&b);
  int ok = write(fd, req, (size_t)nreq) == nreq;
  sodium_memzero(req, sizeof req);
  while (ok && b.n < (16u << 20)) {
    if (farm__buf_reserve(&b, 65536) < 0) break;
    ssize_t r = read(fd, b.p + b.n, 65536);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { ok = r == 0; break; }
    b.n += (size_t)r;
  }
  close(fd);
  int code = 0;
  const char *body = NULL;
  if (ok && farm__buf_u8(&b, 0) == 0) {
    sscanf(b.p, "HTTP/%*d.%*d %d", &code);
    body = strstr(b.p, "\r\n\r\n");
  }
  int rc = 0;
  if (!body) { fprintf(stderr, "farm status: %s answered nothing readable\n", addr); rc = 1; }
  else if (code == 401)
    rc = status_fail("%s", keyfile && *keyfile ? "the page refused the key's token: is it the farm's key? (--key-file F)"
                                               : "the page needs a token: pass the farm's key with --key-file F");
  else if (code != 200) { fprintf(stderr, "farm status: %s answered HTTP %d\n", addr, code); rc = 1; }
  else fputs(body + 4, stdout);
  farm__buf_free(&b);
  return rc;
}
