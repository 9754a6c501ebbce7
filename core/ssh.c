/*
 * ssh.c -- starting a command on another host over SSH, with libssh2 1.10
 * (ssh.h says what; this says how).
 *
 * libssh2 (and OpenSSL's libcrypto under it) is loaded when the first host is
 * started, not at exec: linked in, every farm process -- the client and each
 * worker -- paid about a millisecond at start-up for it, though only SSH launching
 * uses it. libssh2.h still gives the types and constants; the functions are
 * reached through one table, filled by dlopen/dlsym and libssh2_init once per
 * process (pthread_once) and read-only after. That is the only global state:
 * everything else hangs off the farm_ssh object.
 *
 * Launch runs libssh2 in blocking mode, with the session's timeout set before
 * each call to what is left of o->timeout; it waits for the first line
 * non-blocking, with poll(2) bounded by the same deadline. Afterwards the
 * session stays non-blocking for farm__ssh_poll.
 *
 * Host keys, by OpenSSH's rules. libssh2_knownhost_checkp(host, port) would
 * also accept a portless `host key` line for any port (libssh2 1.10,
 * src/knownhost.c, knownhost_check: it tries "[host]:port", then the plain
 * host). OpenSSH does not: on a port other than 22 it looks up "[host]:port"
 * and nothing else. So this calls libssh2_knownhost_check (no port) with the
 * very string OpenSSH looks up: "host" on port 22, "[host]:port" on any other.
 * libssh2 compares that string whole with plain entries (strcmp) and with
 * hashed ones (HMAC-SHA1 of the whole string under the entry's salt, as
 * `ssh-keygen -H` made it), so a portless line, hashed or not, never matches
 * "[host]:port".
 *
 * known_hosts is read a line at a time with libssh2_knownhost_readline rather
 * than libssh2_knownhost_readfile: readfile stops at the first line it cannot
 * parse (and drops every line after it); here such a line is skipped alone.
 * libssh2 1.10 knows no markers: it reads `@revoked HOSTS TYPE KEY` as an
 * entry for a host named "@revoked" whose key is of an unknown type (checked:
 * readfile neither fails nor honours it), so a revocation would be silently
 * lost. Marker lines are therefore kept from libssh2 and read here:
 * `@revoked` keys are gathered (see revoked_add) and the host's key is
 * compared with each before anything else is asked of known_hosts;
 * `@cert-authority` lines are ignored (libssh2 1.10 does not take host
 * certificates, so a CA could never vouch for a key here anyway).
 *
 * Threads: the client's connecting threads, one per host (peer_node.c).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libssh2.h>
#include "farm.h"
#include "lazy.h"
#include "ssh.h"
#include "sshconfig.h"

#define LBUF 16384                 /* a stream's bytes not yet passed on as lines */
#define CLOSE_SECONDS 1.0          /* farm__ssh_close waits at most this long */
#define HOMEMAX (PATH_MAX - 100)   /* room for "/.ssh/known_hosts" and such after $HOME */

typedef struct lbuf { char b[LBUF]; size_t n; } lbuf;

struct farm_ssh {
  int fd;
  LIBSSH2_SESSION *sess;
  LIBSSH2_CHANNEL *ch;
  char addr[NI_MAXHOST];
  char name[400];                  /* "user@host:port" for messages */
  lbuf out, err;                   /* stdout and stderr not yet passed to log */
  char lasterr[300];               /* the last non-empty stderr line */
  int flushed;                     /* the partial last lines were passed on at EOF */
  int state;                       /* 0 running, 1 closed, <0 failed */
  char why[512];
  int shut;                        /* the socket was shut down to end the waits */
};

/* ---- libssh2, loaded at first use (see the top) ---------------------------- */

#define LIBSSH2_SONAME "libssh2.so.1"     /* Debian's libssh2-1 */
#define LIBSSH2_PACKAGE "libssh2-1"

/* every libssh2 function this file calls (the macros of libssh2.h, such as
   libssh2_session_init or libssh2_channel_exec, come down to these) */
#define SSH2_FUNCS(X) \
  X(libssh2_init) X(libssh2_free) X(libssh2_hostkey_hash) \
  X(libssh2_session_init_ex) X(libssh2_session_free) X(libssh2_session_handshake) \
  X(libssh2_session_disconnect_ex) X(libssh2_session_set_blocking) X(libssh2_session_set_timeout) \
  X(libssh2_session_block_directions) X(libssh2_session_hostkey) X(libssh2_session_method_pref) \
  X(libssh2_session_last_error) X(libssh2_session_last_errno) \
  X(libssh2_knownhost_init) X(libssh2_knownhost_free) X(libssh2_knownhost_readline) X(libssh2_knownhost_check) \
  X(libssh2_userauth_list) X(libssh2_userauth_authenticated) X(libssh2_userauth_publickey_fromfile_ex) \
  X(libssh2_agent_init) X(libssh2_agent_connect) X(libssh2_agent_list_identities) X(libssh2_agent_get_identity) \
  X(libssh2_agent_userauth) X(libssh2_agent_disconnect) X(libssh2_agent_free) \
  X(libssh2_channel_open_ex) X(libssh2_channel_process_startup) X(libssh2_channel_write_ex) \
  X(libssh2_channel_read_ex) X(libssh2_channel_eof) X(libssh2_channel_send_eof) X(libssh2_channel_close) \
  X(libssh2_channel_wait_closed) X(libssh2_channel_free) X(libssh2_channel_get_exit_status) \
  X(libssh2_channel_get_exit_signal)

static struct ssh2 {
#define SSH2_FIELD(f) __typeof__(f) *f;
  SSH2_FUNCS(SSH2_FIELD)
#undef SSH2_FIELD
} ssh2;
static char ssh2_err[400];        /* why libssh2 cannot be used; "" once it can */
static pthread_once_t ssh2_once = PTHREAD_ONCE_INIT;

static void ssh2_load(void) {
  static const char *const names[] = { SSH2_FUNCS(FARM_LAZY_NAME) };
#define t ssh2
  void **slots[] = { SSH2_FUNCS(FARM_LAZY_SLOT) };
#undef t
  int n = (int)(sizeof names / sizeof *names);
  if (farm__lazy_load(LIBSSH2_SONAME, LIBSSH2_PACKAGE, names, slots, n, ssh2_err, sizeof ssh2_err) < 0) return;
  if (ssh2.libssh2_init(0) != 0) snprintf(ssh2_err, sizeof ssh2_err, "libssh2 failed to initialize");
}

/* From here on, a call of libssh2_x goes through the table: the header's
   prototypes still check every call, and nothing links with libssh2. */
#define libssh2_init (*ssh2.libssh2_init)
#define libssh2_free (*ssh2.libssh2_free)
#define libssh2_hostkey_hash (*ssh2.libssh2_hostkey_hash)
#define libssh2_session_init_ex (*ssh2.libssh2_session_init_ex)
#define libssh2_session_free (*ssh2.libssh2_session_free)
#define libssh2_session_handshake (*ssh2.libssh2_session_handshake)
#define libssh2_session_disconnect_ex (*ssh2.libssh2_session_disconnect_ex)
#define libssh2_session_set_blocking (*ssh2.libssh2_session_set_blocking)
#define libssh2_session_set_timeout (*ssh2.libssh2_session_set_timeout)
#define libssh2_session_block_directions (*ssh2.libssh2_session_block_directions)
#define libssh2_session_hostkey (*ssh2.libssh2_session_hostkey)
#define libssh2_session_method_pref (*ssh2.libssh2_session_method_pref)
#define libssh2_session_last_error (*ssh2.libssh2_session_last_error)
#define libssh2_session_last_errno (*ssh2.libssh2_session_last_errno)
#define libssh2_knownhost_init (*ssh2.libssh2_knownhost_init)
#define libssh2_knownhost_free (*ssh2.libssh2_knownhost_free)
#define libssh2_knownhost_readline (*ssh2.libssh2_knownhost_readline)
#define libssh2_knownhost_check (*ssh2.libssh2_knownhost_check)
#define libssh2_userauth_list (*ssh2.libssh2_userauth_list)
#define libssh2_userauth_authenticated (*ssh2.libssh2_userauth_authenticated)
#define libssh2_userauth_publickey_fromfile_ex (*ssh2.libssh2_userauth_publickey_fromfile_ex)
#define libssh2_agent_init (*ssh2.libssh2_agent_init)
#define libssh2_agent_connect (*ssh2.libssh2_agent_connect)
#define libssh2_agent_list_identities (*ssh2.libssh2_agent_list_identities)
#define libssh2_agent_get_identity (*ssh2.libssh2_agent_get_identity)
#define libssh2_agent_userauth (*ssh2.libssh2_agent_userauth)
#define libssh2_agent_disconnect (*ssh2.libssh2_agent_disconnect)
#define libssh2_agent_free (*ssh2.libssh2_agent_free)
#define libssh2_channel_open_ex (*ssh2.libssh2_channel_open_ex)
#define libssh2_channel_process_startup (*ssh2.libssh2_channel_process_startup)
#define libssh2_channel_write_ex (*ssh2.libssh2_channel_write_ex)
#define libssh2_channel_read_ex (*ssh2.libssh2_channel_read_ex)
#define libssh2_channel_eof (*ssh2.libssh2_channel_eof)
#define libssh2_channel_send_eof (*ssh2.libssh2_channel_send_eof)
#define libssh2_channel_close (*ssh2.libssh2_channel_close)
#define libssh2_channel_wait_closed (*ssh2.libssh2_channel_wait_closed)
#define libssh2_channel_free (*ssh2.libssh2_channel_free)
#define libssh2_channel_get_exit_status (*ssh2.libssh2_channel_get_exit_status)
#define libssh2_channel_get_exit_signal (*ssh2.libssh2_channel_get_exit_signal)

/* ---- small things -------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long left_ms(double deadline) {
  double r = (deadline - now_s()) * 1000.0;
  if (r < 1.0) return 0;
  if (r > 86400000.0) return 86400000L;
  return (long)r;
}

/* Make s one printable line: control characters become spaces. */
static void oneline(char *s) {
  for (; *s; s++) if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = ' ';
}

/* "host NAME: " + the message, one line. */
__attribute__((format(printf, 4, 5)))
static void say(char *err, size_t errlen, const char *name, const char *fmt, ...) {
  if (!err || !errlen) return;
  int k = snprintf(err, errlen, "host %s: ", name);
  if (k < 0) { err[0] = 0; return; }
  if ((size_t)k < errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  oneline(err);
}

/* Why a call on an established session failed, in words. */
static const char *lost(LIBSSH2_SESSION *sess, int rc) {
  switch (rc) {
  case LIBSSH2_ERROR_SOCKET_RECV: return "the connection was closed or reset";
  case LIBSSH2_ERROR_SOCKET_SEND: return "cannot send on the connection";
  case LIBSSH2_ERROR_SOCKET_DISCONNECT: return "the host disconnected";
  case LIBSSH2_ERROR_TIMEOUT: return "timed out";
  default: break;
  }
  char *msg = NULL;
  libssh2_session_last_error(sess, &msg, NULL, 0);
  return msg && *msg ? msg : "unknown error";
}

static const char *lasterror(LIBSSH2_SESSION *sess) {
  char *msg = NULL;
  if (!sess) return "no session";
  libssh2_session_last_error(sess, &msg, NULL, 0);
  return msg && *msg ? msg : "unknown error";
}

static size_t b64(const unsigned char *p, size_t n, char *out, int pad) {
  static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t k = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
    out[k++] = al[v >> 18 & 63]; out[k++] = al[v >> 12 & 63];
    out[k++] = al[v >> 6 & 63];  out[k++] = al[v & 63];
  }
  if (n - i == 1) {
    unsigned v = (unsigned)p[i] << 16;
    out[k++] = al[v >> 18 & 63]; out[k++] = al[v >> 12 & 63];
    if (pad) { out[k++] = '='; out[k++] = '='; }
  } else if (n - i == 2) {
    unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
    out[k++] = al[v >> 18 & 63]; out[k++] = al[v >> 12 & 63]; out[k++] = al[v >> 6 & 63];
    if (pad) out[k++] = '=';
  }
  out[k] = 0;
  return k;
}

/* The host key's types: libssh2's, known_hosts' (libssh2's name for it), the
   name in a key line, and ssh-keyscan -t's. */
static const struct ktype {
  int hostkey, known;
  const char *name, *scan;
} ktypes[] = {                     /* in OpenSSH's order of preference */
  { LIBSSH2_HOSTKEY_TYPE_ED25519,   LIBSSH2_KNOWNHOST_KEY_ED25519,   "ssh-ed25519",         "ed25519" },
  { LIBSSH2_HOSTKEY_TYPE_ECDSA_256, LIBSSH2_KNOWNHOST_KEY_ECDSA_256, "ecdsa-sha2-nistp256", "ecdsa" },
  { LIBSSH2_HOSTKEY_TYPE_ECDSA_384, LIBSSH2_KNOWNHOST_KEY_ECDSA_384, "ecdsa-sha2-nistp384", "ecdsa" },
  { LIBSSH2_HOSTKEY_TYPE_ECDSA_521, LIBSSH2_KNOWNHOST_KEY_ECDSA_521, "ecdsa-sha2-nistp521", "ecdsa" },
  { LIBSSH2_HOSTKEY_TYPE_RSA,       LIBSSH2_KNOWNHOST_KEY_SSHRSA,    "ssh-rsa",             "rsa" },
  { LIBSSH2_HOSTKEY_TYPE_DSS,       LIBSSH2_KNOWNHOST_KEY_SSHDSS,    "ssh-dss",             "dsa" },
};
#define NKTYPES (sizeof ktypes / sizeof ktypes[0])

/* ---- the end of a session -------------------------------------------------- */

/* Set the session's timeout to what is left before deadline; when nothing is
   left, shut the socket down so that every later call fails at once. */
static void bound(farm_ssh *s, double deadline) {
  long ms = left_ms(deadline);
  if (ms <= 0) {
    if (!s->shut && s->fd >= 0) shutdown(s->fd, SHUT_RDWR);
    s->shut = 1;
    ms = 1;
  }
  libssh2_session_set_timeout(s->sess, ms);
}

/* Close the channel (its stdin first), disconnect, free; at most `secs`. */
static void teardown(farm_ssh *s, double secs) {
  if (!s) return;
  double deadline = now_s() + secs;
  if (s->sess) {
    libssh2_session_set_blocking(s->sess, 1);
    if (s->ch) {
      bound(s, deadline);
      libssh2_channel_send_eof(s->ch);
      bound(s, deadline);
      libssh2_channel_close(s->ch);
      /* a timeout leaves the channel unfreed: shut the socket, then it frees */
      for (int i = 0; i < 3; i++) {
        bound(s, deadline);
        if (libssh2_channel_free(s->ch) == 0) break;
        deadline = 0;
      }
      s->ch = NULL;
    }
    bound(s, deadline);
    libssh2_session_disconnect(s->sess, "farm: done");
    for (int i = 0; i < 3; i++) {
      bound(s, deadline);
      if (libssh2_session_free(s->sess) == 0) break;
      deadline = 0;
    }
    s->sess = NULL;
  }
  if (s->fd >= 0) close(s->fd);
  free(s);
}

void farm__ssh_close(farm_ssh *s) { teardown(s, CLOSE_SECONDS); }

const char *farm__ssh_addr(const farm_ssh *s) { return s ? s->addr : ""; }

int farm__ssh_fd(const farm_ssh *s) { return s ? s->fd : -1; }

/* ---- connecting ---------------------------------------------------------- */

static int tcp_connect(farm_ssh *s, const char *host, int port, double deadline, double total,
                       char *err, size_t errlen) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g) {
    say(err, errlen, s->name, "unknown host (%s)", g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    return FARM_ESSH;
  }
  int lasterr = 0, timedout = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) { lasterr = errno; continue; }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
      if (errno != EINPROGRESS) { lasterr = errno; close(fd); continue; }
      struct pollfd p = { .fd = fd, .events = POLLOUT };
      int pr;
      do pr = poll(&p, 1, (int)left_ms(deadline)); while (pr < 0 && errno == EINTR);
      if (pr <= 0) { timedout = 1; close(fd); break; }
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
      if (soerr) { lasterr = soerr; close(fd); continue; }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, s->addr, sizeof s->addr, NULL, 0, NI_NUMERICHOST))
      s->addr[0] = 0;
    s->fd = fd;
    freeaddrinfo(res);
    return 0;
  }
  freeaddrinfo(res);
  if (timedout) say(err, errlen, s->name, "no answer within %g s (connecting to port %d)", total, port);
  else if (lasterr == ECONNREFUSED) say(err, errlen, s->name, "connection refused (is sshd running there?)");
  else say(err, errlen, s->name, "cannot connect (%s)", strerror(lasterr ? lasterr : EHOSTUNREACH));
  return FARM_ESSH;
}

/* ---- the host key ---------------------------------------------------------- */

/* The keys known_hosts marks `@revoked`: each as the blob a host sends
   (libssh2_session_hostkey), with the line it is on, for the message. */
typedef struct revoked_key { unsigned char *blob; size_t len; unsigned long line; } revoked_key;
typedef struct revoked_keys { revoked_key *v; size_t n; } revoked_keys;

static void revoked_free(revoked_keys *rv) {
  for (size_t i = 0; i < rv->n; i++) free(rv->v[i].blob);
  free(rv->v);
  rv->v = NULL;
  rv->n = 0;
}

/* Decode n bytes of base64 (padding optional) into out, which has room for
   n / 4 * 3 + 3 bytes. The length, or -1 when it is not base64. */
static long unb64(const char *s, size_t n, unsigned char *out) {
  while (n > 0 && s[n - 1] == '=') n--;
  if (n % 4 == 1) return -1;
  size_t k = 0;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i], d;
    if (c >= 'A' && c <= 'Z') d = c - 'A';
    else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
    else if (c >= '0' && c <= '9') d = c - '0' + 52;
    else if (c == '+') d = 62;
    else if (c == '/') d = 63;
    else return -1;
    v = v << 6 | (unsigned)d;
    if (i % 4 == 3) { out[k++] = (unsigned char)(v >> 16); out[k++] = (unsigned char)(v >> 8); out[k++] = (unsigned char)v; v = 0; }
  }
  if (n % 4 == 2) out[k++] = (unsigned char)(v >> 4);
  else if (n % 4 == 3) { out[k++] = (unsigned char)(v >> 10); out[k++] = (unsigned char)(v >> 2); }
  return (long)k;
}

/* A `@revoked HOSTS TYPE BASE64 [comment]` line (p just after the marker):
   its key joins rv, whatever the host patterns say. OpenSSH heeds a @revoked
   line only for the hosts its patterns match (hostfile.c loads the matching
   lines alone); but what is revoked is the key, which a thief may present as
   any host, so farm refuses it everywhere -- stricter, never laxer. For the
   same reason a @revoked line that cannot be read is an error, not skipped as
   OpenSSH skips it: the user meant to refuse something, and a typo must not
   quietly let it in. -1 with why on such a line or out of memory. */
static int revoked_add(revoked_keys *rv, char *p, unsigned long line, char *why, size_t whylen) {
  char *field[3];
  size_t flen[3];
  for (int i = 0; i < 3; i++) {               /* hosts, type, base64 */
    while (*p == ' ' || *p == '\t') p++;
    field[i] = p;
    flen[i] = strcspn(p, " \t");
    p += flen[i];
    if (!flen[i] || (i && *field[i] == '#')) {
      snprintf(why, whylen, "~/.ssh/known_hosts line %lu: a @revoked line needs host patterns, a key "
               "type and a key (@revoked HOSTS TYPE BASE64); fix or remove that line", line);
      return -1;
    }
  }
  unsigned char *blob = malloc(flen[2] / 4 * 3 + 3);
  if (!blob) { snprintf(why, whylen, "out of memory"); return -1; }
  long n = unb64(field[2], flen[2], blob);
  /* the blob names its type first (uint32 length, name): it must be the line's */
  if (n < 4 + (long)flen[1] ||
      ((size_t)blob[0] << 24 | (size_t)blob[1] << 16 | (size_t)blob[2] << 8 | blob[3]) != flen[1] ||
      memcmp(blob + 4, field[1], flen[1])) {
    free(blob);
    snprintf(why, whylen, "~/.ssh/known_hosts line %lu: the key on a @revoked line is not a base64 "
             "key of type %.*s; fix or remove that line", line, (int)(flen[1] < 40 ? flen[1] : 40), field[1]);
    return -1;
  }
  revoked_key *v = realloc(rv->v, (rv->n + 1) * sizeof *v);
  if (!v) { free(blob); snprintf(why, whylen, "out of memory"); return -1; }
  rv->v = v;
  rv->v[rv->n++] = (revoked_key){ .blob = blob, .len = (size_t)n, .line = line };
  return 0;
}

/* Read known_hosts into kh, a line at a time (see the top), and its @revoked
   keys into rv (the caller frees them with revoked_free, also on error). A
   missing file is an empty one. */
static int read_known(LIBSSH2_KNOWNHOSTS *kh, revoked_keys *rv, const char *path,
                      char *why, size_t whylen) {
  FILE *f = fopen(path, "re");
  if (!f) {
    if (errno == ENOENT || errno == ENOTDIR) return 0;
    snprintf(why, whylen, "cannot read ~/.ssh/known_hosts (%s)", strerror(errno));
    return -1;
  }
  char *l = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned long line = 0;
  int rc = 0;
  while (rc == 0 && (n = getline(&l, &cap, f)) >= 0) {
    line++;
    while (n > 0 && (l[n - 1] == '\n' || l[n - 1] == '\r')) l[--n] = 0;
    char *p = l;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '#') continue;
    if (*p == '@') {               /* a marker: never libssh2's (see the top) */
      size_t mlen = strcspn(p, " \t");
      if (mlen == 8 && !memcmp(p, "@revoked", 8)) rc = revoked_add(rv, p + 8, line, why, whylen);
      continue;                    /* @cert-authority, or one OpenSSH does not know either */
    }
    libssh2_knownhost_readline(kh, p, strlen(p), LIBSSH2_KNOWNHOST_FILE_OPENSSH);
  }
  free(l);
  fclose(f);
  return rc;
}

/* Put the key types known_hosts has for this host first in the host key
   algorithms offered (as OpenSSH does): libssh2 would otherwise pick ECDSA
   over ed25519, and a host known by its ed25519 key would look unknown. */
static void prefer_known(LIBSSH2_SESSION *sess, LIBSSH2_KNOWNHOSTS *kh, const char *khname) {
  char pref[400] = "";
  size_t k = 0;
  int known[NKTYPES];
  for (size_t i = 0; i < NKTYPES; i++) {
    /* a key that matches nothing: MISMATCH says an entry of this type exists */
    known[i] = libssh2_knownhost_check(kh, khname, "-", 1, LIBSSH2_KNOWNHOST_TYPE_PLAIN |
                                       LIBSSH2_KNOWNHOST_KEYENC_BASE64 | ktypes[i].known, NULL)
               == LIBSSH2_KNOWNHOST_CHECK_MISMATCH;
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < NKTYPES; i++)
      if (known[i] == !pass)
        k += (size_t)snprintf(pref + k, sizeof pref - k, "%s%s", k ? "," : "", ktypes[i].name);
  libssh2_session_method_pref(sess, LIBSSH2_METHOD_HOSTKEY, pref);
}

/* Append "khname type base64" to ~/.ssh/known_hosts (making ~/.ssh 0700 and
   the file 0600 when missing). */
static int add_known(const char *home, const char *khname, const char *tname,
                     const char *key, size_t klen, char *why, size_t whylen) {
  char dir[PATH_MAX], path[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/.ssh", home);
  snprintf(path, sizeof path, "%s/.ssh/known_hosts", home);
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    snprintf(why, whylen, "cannot make ~/.ssh (%s)", strerror(errno));
    return -1;
  }
  int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(why, whylen, "cannot write ~/.ssh/known_hosts (%s)", strerror(errno));
    return -1;
  }
  struct stat st;
  char last = '\n';
  if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1) last = '\n';
  size_t cap = strlen(khname) + strlen(tname) + klen * 4 / 3 + 16;
  char *line = malloc(cap);
  if (!line) { close(fd); snprintf(why, whylen, "out of memory"); return -1; }
  int k = snprintf(line, cap, "%s%s %s ", last == '\n' ? "" : "\n", khname, tname);
  k += (int)b64((const unsigned char *)key, klen, line + k, 1);
  line[k++] = '\n';
  ssize_t w = write(fd, line, (size_t)k);
  int e = errno;
  free(line);
  if (close(fd) < 0 && w == k) { w = -1; e = errno; }
  if (w != k) {
    snprintf(why, whylen, "cannot write ~/.ssh/known_hosts (%s)", w < 0 ? strerror(e) : "short write");
    return -1;
  }
  return 0;
}

/* The host's key against known_hosts: 0 when it may be trusted. A key marked
   @revoked is refused first, whatever else known_hosts says of the host and
   whatever accept_new, so it is never accepted and never appended. */
static int check_hostkey(farm_ssh *s, LIBSSH2_KNOWNHOSTS *kh, const revoked_keys *rv,
                         const char *host, int port, const char *khname, const char *home,
                         const farm_ssh_opts *o, char *err, size_t errlen) {
  size_t klen = 0;
  int type = 0;
  const char *key = libssh2_session_hostkey(s->sess, &klen, &type);
  if (!key || !klen) {
    say(err, errlen, s->name, "the host sent no host key (%s)", lasterror(s->sess));
    return FARM_ESSH;
  }
  const struct ktype *t = NULL;
  for (size_t i = 0; i < NKTYPES; i++) if (ktypes[i].hostkey == type) t = &ktypes[i];
  if (!t) {
    say(err, errlen, s->name, "the host's key is of a type libssh2 does not know");
    return FARM_ESSH;
  }
  char fp[64] = "SHA256:?";
  const unsigned char *h = (const unsigned char *)libssh2_hostkey_hash(s->sess, LIBSSH2_HOSTKEY_HASH_SHA256);
  if (h) { memcpy(fp, "SHA256:", 7); b64(h, 32, fp + 7, 0); }
  for (size_t i = 0; i < rv->n; i++) {
    if (rv->v[i].len != klen || memcmp(rv->v[i].blob, key, klen)) continue;
    /* OpenSSH: "Host key for HOST was revoked and you cannot connect to it" */
    say(err, errlen, s->name, "the host key (%s %s) is marked @revoked in ~/.ssh/known_hosts line %lu: "
        "it was revoked and you cannot connect to it (a stolen key may be posing as the host); the "
        "host needs a new key: ask its administrator", t->name, fp, rv->v[i].line);
    return FARM_ESSH;
  }
  int c = libssh2_knownhost_check(kh, khname, key, klen, LIBSSH2_KNOWNHOST_TYPE_PLAIN |
                                  LIBSSH2_KNOWNHOST_KEYENC_RAW | t->known, NULL);
  if (c == LIBSSH2_KNOWNHOST_CHECK_MATCH) return 0;
  if (c == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
    say(err, errlen, s->name, "the host key has CHANGED (%s %s); if that is expected, remove the "
        "old line from ~/.ssh/known_hosts", t->name, fp);
    return FARM_ESSH;
  }
  if (c != LIBSSH2_KNOWNHOST_CHECK_NOTFOUND) {
    say(err, errlen, s->name, "cannot check the host key (%s)", lasterror(s->sess));
    return FARM_ESSH;
  }
  if (o->accept_new) {
    char why[300];
    if (add_known(home, khname, t->name, key, klen, why, sizeof why) < 0) {
      say(err, errlen, s->name, "unknown host key (%s %s), and %s", t->name, fp, why);
      return FARM_ESSH;
    }
    /* told as OpenSSH tells it ("Permanently added '[h]:p' (ED25519) to the
       list of known hosts"), with the fingerprint to compare */
    if (o->note) {
      char msg[600], where[320];
      if (port == 22) snprintf(where, sizeof where, "%s", host);
      else snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
      snprintf(msg, sizeof msg, "added host %s (%s %s) to ~/.ssh/known_hosts", where, t->name, fp);
      oneline(msg);
      o->note(o->note_ud, msg);
    }
    return 0;
  }
  char pflag[24] = "";
  if (port != 22) snprintf(pflag, sizeof pflag, "-p %d ", port);
  say(err, errlen, s->name, "unknown host key; add it with: ssh-keyscan %s-t %s %s >> ~/.ssh/known_hosts "
      "(or pass --accept-new-hosts)", pflag, t->scan, host);
  return FARM_ESSH;
}

/* ---- logging in ---------------------------------------------------------- */

static int is_rsa_blob(const unsigned char *b, size_t n) {
  return n >= 11 && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 7 && !memcmp(b + 4, "ssh-rsa", 7);
}

/* Append ", what" (or what, first) to the list in tried; what does not fit is cut. */
static void tried_add(char *tried, size_t n, const char *what) {
  size_t k = strlen(tried);
  if (k && k + 2 < n) { memcpy(tried + k, ", ", 2); k += 2; }
  size_t w = strlen(what);
  if (w > n - 1 - k) w = n - 1 - k;
  memcpy(tried + k, what, w);
  tried[k + w] = 0;
}

#define RSA_WHY "Debian's libssh2 1.10 cannot sign with RSA-SHA2 (OpenSSH refuses its SHA-1 " \
                "signatures); use an ed25519 key (ssh-keygen -t ed25519) and add " \
                "~/.ssh/id_ed25519.pub to ~/.ssh/authorized_keys there"

static int timed_out(farm_ssh *s, int rc, double total, const char *during, char *err, size_t errlen) {
  if (rc != LIBSSH2_ERROR_TIMEOUT && !s->shut) return 0;
  say(err, errlen, s->name, "no answer within %g s (%s)", total, during);
  return 1;
}

/* path as a user writes it: ~/... under home */
static void tilde(const char *home, const char *path, char *out, size_t n) {
  size_t hl = strlen(home);
  if (hl > 1 && !strncmp(path, home, hl) && path[hl] == '/') snprintf(out, n, "~%s", path + hl);
  else snprintf(out, n, "%s", path);
}

/* Is the private key file at path protected by a passphrase? OpenSSH's own
   format ("openssh-key-v1", then the cipher's name: "none" when it is not),
   and PEM's ("Proc-Type: 4,ENCRYPTED", PKCS#8 "ENCRYPTED PRIVATE KEY"). The
   start of the file says it: what cannot be read is taken as not protected,
   and libssh2 then says what it makes of it. */
static int key_locked(const char *path) {
  static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
  char buf[4096], b64s[65];
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  if (strstr(buf, "Proc-Type: 4,ENCRYPTED") || strstr(buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----")) return 1;
  const char *p = strstr(buf, begin);
  if (!p) return 0;
  size_t k = 0;
  for (p += sizeof begin - 1; *p && *p != '-' && k < 64; p++)
    if (!isspace((unsigned char)*p)) b64s[k++] = *p;
  unsigned char bin[64 / 4 * 3 + 3];
  long m = unb64(b64s, k - k % 4, bin);
  if (m < 19 || memcmp(bin, "openssh-key-v1", 15)) return 0;
  size_t clen = (size_t)bin[15] << 24 | (size_t)bin[16] << 16 | (size_t)bin[17] << 8 | bin[18];
  if (clen > (size_t)m - 19) return clen != 4;     /* a name longer than "none" */
  return !(clen == 4 && !memcmp(bin + 19, "none", 4));
}

static int login(farm_ssh *s, const char *user, const char *home, const farm_sshcfg *cfg,
                 double deadline, double total, char *err, size_t errlen) {
  char tried[1200] = "", others[1200] = "", what[PATH_MAX + 200], locked[PATH_MAX + 8] = "";
  int rsa = 0;
  bound(s, deadline);
  char *methods = libssh2_userauth_list(s->sess, user, (unsigned)strlen(user));
  if (!methods) {
    if (libssh2_userauth_authenticated(s->sess)) return 0;
    int rc = libssh2_session_last_errno(s->sess);
    if (!timed_out(s, rc, total, "logging in", err, errlen))
      say(err, errlen, s->name, "cannot log in as %s (%s)", user, lasterror(s->sess));
    return FARM_ESSH;
  }
  if (!strstr(methods, "publickey")) {
    say(err, errlen, s->name, "login refused for user %s: the host takes only %s, and farm logs "
        "in with a key (publickey)", user, methods);
    return FARM_ESSH;
  }
  const char *sock = getenv("SSH_AUTH_SOCK");
  if (sock && *sock) {
    LIBSSH2_AGENT *ag = libssh2_agent_init(s->sess);
    int nkeys = 0, ok = 0, rc = 0;
    if (ag && libssh2_agent_connect(ag) == 0 && libssh2_agent_list_identities(ag) == 0) {
      struct libssh2_agent_publickey *id = NULL, *prev = NULL;
      while (!ok && libssh2_agent_get_identity(ag, &id, prev) == 0) {
        nkeys++;
        if (is_rsa_blob(id->blob, id->blob_len)) rsa = 1;
        bound(s, deadline);
        rc = libssh2_agent_userauth(ag, user, id);
        if (rc == 0) ok = 1;
        else if (rc == LIBSSH2_ERROR_TIMEOUT || rc == LIBSSH2_ERROR_SOCKET_SEND ||
                 rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_DISCONNECT) break;
        prev = id;
      }
      snprintf(what, sizeof what, "%s", nkeys ? "the SSH agent" : "the SSH agent (it has no keys)");
    } else {
      snprintf(what, sizeof what, "the SSH agent (cannot reach it at $SSH_AUTH_SOCK)");
    }
    tried_add(tried, sizeof tried, what);
    tried_add(others, sizeof others, what);
    if (ag) { libssh2_agent_disconnect(ag); libssh2_agent_free(ag); }
    if (ok) return 0;
    if (timed_out(s, rc, total, "logging in", err, errlen)) return FARM_ESSH;
  }
  /* the config's IdentityFile keys, else the default ones (as ssh does) */
  char defaults[2][PATH_MAX];
  const char *defv[2] = { defaults[0], defaults[1] };
  snprintf(defaults[0], sizeof defaults[0], "%s/.ssh/id_ed25519", home);
  snprintf(defaults[1], sizeof defaults[1], "%s/.ssh/id_ecdsa", home);
  const char *const *files = cfg->nidentity ? (const char *const *)cfg->identity : defv;
  int nfiles = cfg->nidentity ? cfg->nidentity : 2;
  char missing[600] = "";
  for (int i = 0; i < nfiles; i++) {
    char pub[PATH_MAX + 8], sh[PATH_MAX + 8];
    const char *priv = files[i];
    snprintf(pub, sizeof pub, "%s.pub", priv);
    tilde(home, priv, sh, sizeof sh);
    if (access(priv, F_OK) != 0) { tried_add(missing, sizeof missing, sh); continue; }
    if (key_locked(priv)) {
      /* libssh2 would take the .pub, have the host accept it, then fail to
         read the private key: "login refused" for a key that is fine */
      if (!*locked) snprintf(locked, sizeof locked, "%s", sh);
      snprintf(what, sizeof what, "%s (protected by a passphrase)", sh);
      tried_add(tried, sizeof tried, what);
      continue;
    }
    bound(s, deadline);
    int rc = libssh2_userauth_publickey_fromfile_ex(s->sess, user, (unsigned)strlen(user),
                                                    access(pub, R_OK) == 0 ? pub : NULL, priv, NULL);
    if (rc == 0) return 0;
    if (timed_out(s, rc, total, "logging in", err, errlen)) return FARM_ESSH;
    if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_METHOD_NOT_SUPPORTED) {
      snprintf(what, sizeof what, "%s (unusable: %s)", sh, lasterror(s->sess));
      tried_add(tried, sizeof tried, what);
      tried_add(others, sizeof others, what);
      continue;
    }
    tried_add(tried, sizeof tried, sh);
    tried_add(others, sizeof others, sh);
    if (rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
        rc == LIBSSH2_ERROR_SOCKET_DISCONNECT) {
      say(err, errlen, s->name, "the host closed the connection while logging in as %s (tried %s)",
          user, tried);
      return FARM_ESSH;
    }
  }
  if (*locked) {
    say(err, errlen, s->name, "%s is protected by a passphrase; load it into ssh-agent (ssh-add %s) "
        "and run again%s%s%s", locked, locked, *others ? " (also tried: " : "", others, *others ? ")" : "");
    return FARM_ESSH;
  }
  char rsapath[PATH_MAX];
  snprintf(rsapath, sizeof rsapath, "%s/.ssh/id_rsa", home);
  int have_rsa = access(rsapath, F_OK) == 0;
  if (!*tried) {
    if (have_rsa && !cfg->nidentity)
      say(err, errlen, s->name, "cannot log in as %s: the only key is ~/.ssh/id_rsa, an RSA key, and "
          RSA_WHY, user);
    else if (cfg->nidentity)
      say(err, errlen, s->name, "cannot log in as %s: no key (no SSH agent, and no %s, the IdentityFile "
          "of ~/.ssh/config); make one with ssh-keygen -t ed25519 or fix that IdentityFile line", user, missing);
    else
      say(err, errlen, s->name, "cannot log in as %s: no key (no SSH agent, no ~/.ssh/id_ed25519 or "
          "~/.ssh/id_ecdsa); make one with ssh-keygen -t ed25519 and add ~/.ssh/id_ed25519.pub to "
          "~/.ssh/authorized_keys there", user);
    return FARM_ESSH;
  }
  if (have_rsa || rsa)
    say(err, errlen, s->name, "login refused for user %s (tried %s); %s cannot be used: " RSA_WHY,
        user, tried, have_rsa ? "~/.ssh/id_rsa" : "the agent's RSA key");
  else
    say(err, errlen, s->name, "login refused for user %s (tried %s)", user, tried);
  return FARM_ESSH;
}

/* ---- the command's output ------------------------------------------------ */

typedef void (*logfn)(void *ud, const char *line);

static void emit(farm_ssh *s, int is_err, const char *line, logfn log, void *ud) {
  if (is_err) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p) { snprintf(s->lasterr, sizeof s->lasterr, "%s", p); oneline(s->lasterr); }
  }
  if (log) log(ud, line);
}

/* Pass on b's complete lines (all of it when `all`). */
static void emit_lines(farm_ssh *s, int is_err, int all, logfn log, void *ud) {
  lbuf *b = is_err ? &s->err : &s->out;
  size_t start = 0;
  for (;;) {
    char *nl = memchr(b->b + start, '\n', b->n - start);
    if (!nl) break;
    *nl = 0;
    emit(s, is_err, b->b + start, log, ud);
    start = (size_t)(nl - b->b) + 1;
  }
  if (all && start < b->n) {
    b->b[b->n] = 0;
    emit(s, is_err, b->b + start, log, ud);
    start = b->n;
  }
  memmove(b->b, b->b + start, b->n - start);
  b->n -= start;
}

/* The last non-empty line in b (complete or not). */
static void last_line(const lbuf *b, char *out, size_t n) {
  size_t e = b->n;
  out[0] = 0;
  for (;;) {
    while (e > 0 && (b->b[e - 1] == '\n' || b->b[e - 1] == ' ' || b->b[e - 1] == '\t' || b->b[e - 1] == '\r')) e--;
    if (!e) return;
    size_t st = e;
    while (st > 0 && b->b[st - 1] != '\n') st--;
    size_t skip = st;
    while (skip < e && (b->b[skip] == ' ' || b->b[skip] == '\t')) skip++;
    if (skip < e) {
      size_t len = e - skip < n - 1 ? e - skip : n - 1;
      memcpy(out, b->b + skip, len);
      out[len] = 0;
      oneline(out);
      return;
    }
    e = st;
  }
}

/* Read what is there on both streams. launching: keep it in the buffers
   (stdout up to LBUF; stderr's oldest lines give way); else pass on complete
   lines (a line longer than the buffer goes on in pieces). Returns 0, or a
   libssh2 error other than EAGAIN. */
static int drain(farm_ssh *s, int launching, logfn log, void *ud) {
  char tmp[4096];
  for (;;) {
    int got = 0;
    for (int is_err = 0; is_err < 2; is_err++) {
      lbuf *b = is_err ? &s->err : &s->out;
      size_t room = LBUF - 1 - b->n;
      if (!room) {
        if (launching && !is_err) continue;    /* the caller sees the line is too long */
        if (launching) {                       /* drop stderr's oldest line */
          char *nl = memchr(b->b, '\n', b->n);
          size_t cut = nl ? (size_t)(nl - b->b) + 1 : b->n / 2;
          memmove(b->b, b->b + cut, b->n - cut);
          b->n -= cut;
        } else {
          b->b[b->n] = 0;
          emit(s, is_err, b->b, log, ud);
          b->n = 0;
        }
        room = LBUF - 1 - b->n;
      }
      ssize_t r = libssh2_channel_read_ex(s->ch, is_err ? SSH_EXTENDED_DATA_STDERR : 0, tmp,
                                          room < sizeof tmp ? room : sizeof tmp);
      if (r == LIBSSH2_ERROR_EAGAIN || r == 0) continue;
      if (r < 0) return (int)r;
      memcpy(b->b + b->n, tmp, (size_t)r);
      b->n += (size_t)r;
      got = 1;
      if (!launching) emit_lines(s, is_err, 0, log, ud);
    }
    if (!got) return 0;
  }
}

static void exit_how(farm_ssh *s, char *out, size_t n, int *status) {
  char *sig = NULL;
  size_t siglen = 0;
  *status = libssh2_channel_get_exit_status(s->ch);
  if (libssh2_channel_get_exit_signal(s->ch, &sig, &siglen, NULL, NULL, NULL, NULL) == 0 && sig && siglen) {
    snprintf(out, n, "was killed by signal %s", sig);
    *status = -1;
  } else {
    snprintf(out, n, "exited with status %d", *status);
  }
  if (sig) libssh2_free(s->sess, sig);
}

/* The first word of the command, without quotes (after an `exec`). */
static void first_word(const char *cmd, char *out, size_t n) {
  for (int pass = 0; pass < 2; pass++) {
    while (*cmd == ' ' || *cmd == '\t') cmd++;
    size_t k = 0;
    const char *p = cmd;
    for (; *p && *p != ' ' && *p != '\t' && *p != ';' && *p != '\n'; p++)
      if (*p != '\'' && *p != '"' && k + 1 < n) out[k++] = *p;
    out[k] = 0;
    if (pass == 0 && !strcmp(out, "exec") && *p) cmd = p;
    else break;
  }
}

/* Wait for the first line on stdout, non-blocking with poll. */
static int first_line(farm_ssh *s, const farm_ssh_opts *o, char *line, size_t linelen,
                      double deadline, double total, char *err, size_t errlen) {
  size_t max = linelen - 1 < LBUF - 2 ? linelen - 1 : LBUF - 2;   /* bytes before its newline */
  libssh2_session_set_blocking(s->sess, 0);
  for (;;) {
    int rc = drain(s, 1, NULL, NULL);
    if (rc < 0) {
      say(err, errlen, s->name, "the SSH connection was lost (%s)", lost(s->sess, rc));
      return FARM_ESSH;
    }
    char *nl = memchr(s->out.b, '\n', s->out.n);
    if (nl && (size_t)(nl - s->out.b) <= max) {
      size_t len = (size_t)(nl - s->out.b);
      memcpy(line, s->out.b, len);
      line[len] = 0;
      memmove(s->out.b, nl + 1, s->out.n - len - 1);
      s->out.n -= len + 1;
      return 0;
    }
    if (nl || s->out.n > max) {
      char cmd[200];
      first_word(o->command, cmd, sizeof cmd);
      say(err, errlen, s->name, "'%s' printed a first line longer than %zu bytes", cmd, max);
      return FARM_ESSH;
    }
    if (libssh2_channel_eof(s->ch) == 1) {
      rc = libssh2_channel_wait_closed(s->ch);
      if (rc == 0) {
        char how[120], cmd[200], last[300];
        int status;
        exit_how(s, how, sizeof how, &status);
        first_word(o->command, cmd, sizeof cmd);
        last_line(&s->err, last, sizeof last);
        if (status == 127)
          say(err, errlen, s->name, "'%s' was not found there%s%s%s; install %s there or pass "
              "--remote-farm PATH", cmd, *last ? " (" : "", last, *last ? ")" : "", cmd);
        else
          say(err, errlen, s->name, "'%s' %s before it printed a line%s%s%s", cmd, how,
              *last ? " (" : "", last, *last ? ")" : "");
        return FARM_ESSH;
      }
      if (rc != LIBSSH2_ERROR_EAGAIN) {
        say(err, errlen, s->name, "the SSH connection was lost (%s)", lost(s->sess, rc));
        return FARM_ESSH;
      }
    }
    long ms = left_ms(deadline);
    if (ms <= 0) {
      char cmd[200];
      first_word(o->command, cmd, sizeof cmd);
      say(err, errlen, s->name, "no answer within %g s (waiting for the first line '%s' prints)", total, cmd);
      return FARM_ESSH;
    }
    int dir = libssh2_session_block_directions(s->sess);
    struct pollfd p = { .fd = s->fd, .events = POLLIN };
    if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND) p.events |= POLLOUT;
    int pr = poll(&p, 1, ms > 100 ? 100 : (int)ms);
    if (pr < 0 && errno != EINTR) {
      say(err, errlen, s->name, "poll: %s", strerror(errno));
      return FARM_ESSH;
    }
  }
}

/* ---- launch ---------------------------------------------------------------- */

int farm__ssh_launch(farm_ssh **out, const farm_ssh_opts *o, char *line, size_t linelen,
                     char *err, size_t errlen) {
  if (out) *out = NULL;
  if (err && errlen) err[0] = 0;
  if (line && linelen) line[0] = 0;
  if (!out || !o || !o->host || !*o->host || !o->command || !line || linelen < 2 ||
      (o->ninput && !o->input) || o->port < 0 || o->port > 65535) {
    if (err && errlen) snprintf(err, errlen, "ssh: bad arguments (a host, a command and a line buffer are needed)");
    return FARM_EINVAL;
  }
  double total = o->timeout > 0 ? o->timeout : 30.0;
  double deadline = now_s() + total;

  farm_ssh *s = calloc(1, sizeof *s);
  if (!s) { if (err && errlen) snprintf(err, errlen, "out of memory"); return FARM_ENOMEM; }
  s->fd = -1;
  const char *uopt = o->user && *o->user ? o->user : NULL;
  int k = snprintf(s->name, sizeof s->name, "%s%s", uopt ? uopt : "", uopt ? "@" : "");
  if (!o->port || o->port == 22) snprintf(s->name + k, sizeof s->name - (size_t)k, "%s", o->host);
  else if (strchr(o->host, ':')) snprintf(s->name + k, sizeof s->name - (size_t)k, "[%s]:%d", o->host, o->port);
  else snprintf(s->name + k, sizeof s->name - (size_t)k, "%s:%d", o->host, o->port);

  /* who, and where their ~/.ssh is */
  char pwbuf[4096], user[256], home[HOMEMAX];
  struct passwd pw, *pwp = NULL;
  getpwuid_r(getuid(), &pw, pwbuf, sizeof pwbuf, &pwp);
  const char *lu = getenv("USER");
  if (!lu || !*lu) lu = pwp ? pwp->pw_name : NULL;
  const char *hm = getenv("HOME");
  if (!hm || !*hm) hm = pwp ? pwp->pw_dir : NULL;
  if (!hm || strlen(hm) >= sizeof home) {
    say(err, errlen, s->name, hm ? "$HOME is too long" : "cannot tell where ~/.ssh is (no $HOME, and no passwd entry)");
    free(s);
    return FARM_ESSH;
  }
  snprintf(home, sizeof home, "%s", hm);

  /* what ~/.ssh/config says of the host: where it really is, who logs in, with which keys */
  farm_sshcfg cfg;
  char cfgpath[PATH_MAX + 16], cfgerr[700];
  snprintf(cfgpath, sizeof cfgpath, "%s/.ssh/config", home);
  farm_sshcfg_query cq = { .path = cfgpath, .home = home, .host = o->host, .user = uopt,
                           .port = o->port, .local_user = lu };
  if (farm__sshcfg_lookup(&cq, &cfg, cfgerr, sizeof cfgerr) < 0) {
    say(err, errlen, s->name, "%s", cfgerr);
    farm__sshcfg_free(&cfg);
    free(s);
    return FARM_ESSH;
  }
  int port = cfg.port;
  if (!*cfg.user || strlen(cfg.user) >= sizeof user) {
    say(err, errlen, s->name, *cfg.user ? "the user name is too long" :
        "cannot tell who is logging in (no $USER, and no passwd entry)");
    farm__sshcfg_free(&cfg);
    free(s);
    return FARM_ESSH;
  }
  snprintf(user, sizeof user, "%s", cfg.user);
  if (cfg.changed) {               /* messages name the host as given, and where it led */
    size_t nl = strlen(s->name);
    snprintf(s->name + nl, sizeof s->name - nl, strchr(cfg.hostname, ':') ? " ([%s]:%d from ~/.ssh/config)" :
             " (%s:%d from ~/.ssh/config)", cfg.hostname, port);
  }

  /* the name known_hosts knows the host by, as OpenSSH looks it up: the real
     HostName and Port */
  char host[300], khname[320];
  snprintf(host, sizeof host, "%s", cfg.hostname);
  for (char *p = host; *p; p++) if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  if (port == 22) snprintf(khname, sizeof khname, "%s", host);
  else snprintf(khname, sizeof khname, "[%s]:%d", host, port);

  pthread_once(&ssh2_once, ssh2_load);
  if (ssh2_err[0]) {
    say(err, errlen, s->name, "%s", ssh2_err);
    farm__sshcfg_free(&cfg);
    free(s);
    return FARM_ESSH;
  }

  int rc = tcp_connect(s, host, port, deadline, total, err, errlen);
  if (rc < 0) { farm__sshcfg_free(&cfg); teardown(s, 0); return rc; }

  LIBSSH2_KNOWNHOSTS *kh = NULL;
  revoked_keys rv = { NULL, 0 };
  s->sess = libssh2_session_init();
  if (!s->sess) { say(err, errlen, s->name, "out of memory"); rc = FARM_ENOMEM; goto fail; }
  libssh2_session_set_blocking(s->sess, 1);
  kh = libssh2_knownhost_init(s->sess);
  if (!kh) { say(err, errlen, s->name, "out of memory"); rc = FARM_ENOMEM; goto fail; }
  char why[300], khpath[PATH_MAX + 32];
  snprintf(khpath, sizeof khpath, "%s/.ssh/known_hosts", home);
  if (read_known(kh, &rv, khpath, why, sizeof why) < 0) {
    say(err, errlen, s->name, "%s", why);
    rc = FARM_ESSH;
    goto fail;
  }
  prefer_known(s->sess, kh, khname);

  bound(s, deadline);
  rc = libssh2_session_handshake(s->sess, s->fd);
  if (rc) {
    if (!timed_out(s, rc, total, "the SSH handshake", err, errlen))
      say(err, errlen, s->name, "the SSH handshake failed (%s)", lasterror(s->sess));
    rc = FARM_ESSH;
    goto fail;
  }
  rc = check_hostkey(s, kh, &rv, host, port, khname, home, o, err, errlen);
  libssh2_knownhost_free(kh);
  kh = NULL;
  revoked_free(&rv);
  if (rc < 0) goto fail;

  rc = login(s, user, home, &cfg, deadline, total, err, errlen);
  farm__sshcfg_free(&cfg);
  if (rc < 0) goto fail;

  bound(s, deadline);
  s->ch = libssh2_channel_open_session(s->sess);
  if (!s->ch) {
    rc = libssh2_session_last_errno(s->sess);
    if (!timed_out(s, rc, total, "opening a session", err, errlen))
      say(err, errlen, s->name, "cannot open a session there (%s)", lasterror(s->sess));
    rc = FARM_ESSH;
    goto fail;
  }
  bound(s, deadline);
  rc = libssh2_channel_exec(s->ch, o->command);
  if (rc) {
    if (!timed_out(s, rc, total, "starting the command", err, errlen))
      say(err, errlen, s->name, "the host refused to run the command (%s)", lasterror(s->sess));
    rc = FARM_ESSH;
    goto fail;
  }
  /* the input; when the command is gone already, its exit says more */
  int wrc = 0;
  char werr[200] = "";
  for (size_t off = 0; off < o->ninput;) {
    bound(s, deadline);
    ssize_t w = libssh2_channel_write(s->ch, (const char *)o->input + off, o->ninput - off);
    if (w < 0) { wrc = (int)w; snprintf(werr, sizeof werr, "%s", lasterror(s->sess)); break; }
    off += (size_t)w;
  }
  if (timed_out(s, wrc, total, "writing to the command", err, errlen)) { rc = FARM_ESSH; goto fail; }
  rc = first_line(s, o, line, linelen, deadline, total, err, errlen);
  if (rc < 0) goto fail;
  if (wrc < 0) {
    say(err, errlen, s->name, "cannot write to the command's stdin (%s)", werr);
    rc = FARM_ESSH;
    goto fail;
  }
  *out = s;
  return 0;

fail:
  farm__sshcfg_free(&cfg);
  if (kh) libssh2_knownhost_free(kh);
  revoked_free(&rv);
  if (line && linelen) line[0] = 0;
  {
    long ms = left_ms(deadline);           /* the launch stays within its time */
    teardown(s, ms < 1000 ? (double)ms / 1000.0 : CLOSE_SECONDS);
  }
  return rc;
}

/* ---- while it runs ----------------------------------------------------------- */

int farm__ssh_poll(farm_ssh *s, void (*log)(void *ud, const char *line), void *ud,
                   char *why, size_t whylen) {
  if (why && whylen) why[0] = 0;
  if (!s || !s->sess || !s->ch) return FARM_EINVAL;
  if (!s->state) {
    libssh2_session_set_blocking(s->sess, 0);
    emit_lines(s, 0, 0, log, ud);              /* what came with the first line */
    emit_lines(s, 1, 0, log, ud);
    int rc = drain(s, 0, log, ud);
    if (rc < 0) {
      s->state = FARM_ESSH;
      snprintf(s->why, sizeof s->why, "the SSH connection was lost (%s)", lost(s->sess, rc));
    } else if (libssh2_channel_eof(s->ch) == 1) {
      if (!s->flushed) {
        emit_lines(s, 0, 1, log, ud);
        emit_lines(s, 1, 1, log, ud);
        s->flushed = 1;
      }
      rc = libssh2_channel_wait_closed(s->ch);
      if (rc == 0) {
        char how[120];
        int status;
        exit_how(s, how, sizeof how, &status);
        s->state = 1;
        snprintf(s->why, sizeof s->why, "%s%s%s", how, *s->lasterr ? ": " : "", s->lasterr);
      } else if (rc != LIBSSH2_ERROR_EAGAIN) {
        s->state = FARM_ESSH;
        snprintf(s->why, sizeof s->why, "the SSH connection was lost (%s)", lost(s->sess, rc));
      }
    }
    oneline(s->why);
  }
  if (s->state && why && whylen) snprintf(why, whylen, "%s", s->why);
  return s->state;
}
