/*
 * hosts.c -- hostfiles and --hosts lists into farm_host arrays (see hosts.h).
 *
 * A line is cut at '#', trimmed, and split into one or two fields: the host
 * and an optional worker count. A --hosts list is split at commas, and each
 * item is one host field alone. The host field is
 *
 *     [node://][user@](name | '[' v6addr ']')[:port]
 *
 * with a user only for SSH hosts. Nothing is guessed or cut short: a bad
 * field, a value too long for its farm_host slot, or a host listed twice (same
 * kind, user, host and port) is an error of one line that names where it was,
 * quotes what was there and says what was expected. Nothing here is global;
 * the array is grown per call and freed on any error.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "hosts.h"

#define WS " \t\r\n\v\f"
#define SSH_PORT 22
#define NODE_PORT 7070
#define LINE_FORM "a line is 'host [workers]', 'user@host:port [workers]' or 'node://host:port [workers]'"
#define ITEM_FORM "an item is 'host', 'user@host:port' or 'node://host:port', separated by commas"

/* Quoted text in messages: at most QMAX bytes of it, then "...". */
#define QMAX 80
#define Q "'%.*s%s'"
#define QA(s, n) (int)((n) > QMAX ? QMAX : (n)), (s), (n) > QMAX ? "..." : ""

typedef struct ctx {
  const char *origin;              /* "hosts:3", "--hosts item 2" */
  const char *form;                /* what a line or an item looks like */
  char *err;
  size_t errlen;
} ctx;

typedef struct list {
  farm_host *v;
  int n;
  size_t cap;
} list;

/* One line in err; control bytes (from the file or its name) become '?'. */
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  for (char *p = err; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  return -1;
}

/* "ORIGIN: <what>; <form>", for a line or item that does not parse. */
static int bad(const ctx *c, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return fail(c->err, c->errlen, "%s: %s; %s", c->origin, what, c->form);
}

/* A byte for a message: itself when printable, else \xNN. */
static const char *chr(char ch, char b[8]) {
  unsigned char u = (unsigned char)ch;
  snprintf(b, 8, u > 0x20 && u < 0x7f ? "%c" : "\\x%02x", u);
  return b;
}

/* s[0..n) as a decimal in 1..max: the value, -1 when out of range, -2 when not a number. */
static long number(const char *s, size_t n, long max) {
  long v = 0;
  if (n == 0) return -2;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -2;
    if (v <= max) v = v * 10 + (s[i] - '0');
  }
  return v >= 1 && v <= max ? v : -1;
}

/* The index of the first byte of s[0..n) that may not be in a user (v6 < 0),
   a host name (v6 == 0) or a bracketed IPv6 address (v6 > 0); n if none.
   A leading '-' is refused so that no name can pass for an option. */
static size_t badchar(const char *s, size_t n, int v6) {
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    int ok = v6 > 0 ? (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                          (ch >= 'A' && ch <= 'F') || ch == ':'
                    : (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                          (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '.' || ch == '_';
    if (!ok || (i == 0 && ch == '-' && v6 <= 0)) return i;
  }
  return n;
}

/* Strip leading and trailing whitespace, in place. */
static char *trim(char *s) {
  s += strspn(s, WS);
  size_t n = strlen(s);
  while (n > 0 && strchr(WS, s[n - 1])) s[--n] = '\0';
  return s;
}

/* One host field: "[node://][user@](name|[v6])[:port]" into h. */
static int parse_host(const ctx *c, const char *s, farm_host *h) {
  size_t n = strlen(s), i;
  const char *p = s, *end = s + n, *sch = strstr(s, "://"), *at, *hs, *he, *port = NULL;
  char b[8];
  h->kind = FARM_HOST_SSH;
  h->port = SSH_PORT;
  if (sch) {
    if (sch - s != 4 || strncmp(s, "node", 4) != 0)
      return bad(c, "unknown scheme " Q " in " Q " (the only one is node://)", QA(s, (size_t)(sch - s)), QA(s, n));
    h->kind = FARM_HOST_NODE;
    h->port = NODE_PORT;
    p = sch + 3;
  }
  if ((at = strchr(p, '@'))) {
    size_t ul = (size_t)(at - p);
    if (h->kind == FARM_HOST_NODE) return bad(c, "a node:// host takes no user " Q, QA(s, n));
    if (ul == 0) return bad(c, "empty user in " Q, QA(s, n));
    if (ul >= sizeof h->user) return bad(c, "user too long in " Q " (at most %zu bytes)", QA(s, n), sizeof h->user - 1);
    if ((i = badchar(p, ul, -1)) < ul) return bad(c, "bad character '%s' in the user of " Q, chr(p[i], b), QA(s, n));
    memcpy(h->user, p, ul);
    h->user[ul] = '\0';
    p = at + 1;
  }
  int v6 = *p == '[';
  if (v6) {
    hs = p + 1;
    if (!(he = strchr(hs, ']'))) return bad(c, "missing ']' in " Q, QA(s, n));
    if (he[1] == ':') port = he + 2;
    else if (he[1]) return bad(c, "bad character '%s' after ']' in " Q, chr(he[1], b), QA(s, n));
  } else {
    hs = p;
    if ((he = strchr(p, ':'))) {
      port = he + 1;
      if (strchr(port, ':')) return bad(c, "an IPv6 address takes brackets, as '[v6addr]:port', in " Q, QA(s, n));
    } else he = end;
  }
  size_t hl = (size_t)(he - hs);
  if (hl == 0) return bad(c, "empty host in " Q, QA(s, n));
  if (hl >= sizeof h->host) return bad(c, "host too long in " Q " (at most %zu bytes)", QA(s, n), sizeof h->host - 1);
  if ((i = badchar(hs, hl, v6)) < hl) return bad(c, "bad character '%s' in the host of " Q, chr(hs[i], b), QA(s, n));
  if (v6 && !memchr(hs, ':', hl)) return bad(c, "not an IPv6 address in brackets " Q, QA(s, n));
  memcpy(h->host, hs, hl);
  h->host[hl] = '\0';
  if (port) {
    long v = number(port, (size_t)(end - port), 65535);
    if (v == -2) return bad(c, "bad port " Q " in " Q, QA(port, (size_t)(end - port)), QA(s, n));
    if (v < 0) return bad(c, "bad port " Q " in " Q " (1 to 65535)", QA(port, (size_t)(end - port)), QA(s, n));
    h->port = (int)v;
  }
  return 0;
}

/* Parse one host (and its worker count, if any) and append it to l. */
static int add(list *l, const ctx *c, const char *field, const char *count) {
  farm_host h;
  memset(&h, 0, sizeof h);
  if (parse_host(c, field, &h) < 0) return -1;
  if (count) {
    long w = number(count, strlen(count), 65536);
    if (w == -2) return bad(c, "bad worker count " Q, QA(count, strlen(count)));
    if (w < 0) return bad(c, "bad worker count " Q " (1 to 65536)", QA(count, strlen(count)));
    h.workers = (int)w;
  }
  if ((size_t)snprintf(h.origin, sizeof h.origin, "%s", c->origin) >= sizeof h.origin)
    return fail(c->err, c->errlen, "%s: origin too long (at most %zu bytes)", c->origin, sizeof h.origin - 1);
  for (int i = 0; i < l->n; i++) {
    const farm_host *o = &l->v[i];
    if (o->kind == h.kind && o->port == h.port && strcmp(o->user, h.user) == 0 &&
        strcasecmp(o->host, h.host) == 0) {
      char name[400];
      farm__host_name(&h, name, sizeof name);
      return fail(c->err, c->errlen, "%s: duplicate host '%s' (also %s); list each host once",
                  c->origin, name, o->origin);
    }
  }
  if ((size_t)l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    farm_host *v = cap < (size_t)1 << 24 ? realloc(l->v, cap * sizeof *v) : NULL;
    if (!v) return fail(c->err, c->errlen, "%s: out of memory", c->origin);
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = h;
  return 0;
}

/* Hand the hosts over, or free them on error. */
static int done(list *l, int rc, farm_host **out) {
  if (rc < 0 || l->n == 0) {
    free(l->v);
    *out = NULL;
    return rc < 0 ? -1 : 0;
  }
  *out = l->v;
  return l->n;
}

/* One line of a hostfile: comment, blank, or "host [workers]". */
static int file_line(list *l, const ctx *c, char *line, size_t len) {
  if (strlen(line) != len) return bad(c, "a NUL byte in the line");
  line[strcspn(line, "#")] = '\0';
  char *t = trim(line);
  if (!*t) return 0;
  size_t a = strcspn(t, WS);
  char *r = t + a + strspn(t + a, WS);
  if (r[strcspn(r, WS)]) return bad(c, "too many fields " Q, QA(t, strlen(t)));
  t[a] = '\0';
  return add(l, c, t, *r ? r : NULL);
}

int farm__hosts_file(const char *path, farm_host **out, char *err, size_t errlen) {
  list l = {0};
  *out = NULL;
  FILE *f = fopen(path, "r");
  if (!f) return fail(err, errlen, "cannot read hostfile '%s': %s", path, strerror(errno));
  char *line = NULL, origin[sizeof l.v->origin];
  size_t cap = 0;
  ssize_t len;
  long no = 0;
  int rc = 0;
  ctx c = {origin, LINE_FORM, err, errlen};
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    if ((size_t)snprintf(origin, sizeof origin, "%s:%ld", path, ++no) >= sizeof origin)
      rc = fail(err, errlen, "hostfile name too long '%s' (at most %zu bytes)", path, sizeof origin - 12);
    else rc = file_line(&l, &c, line, (size_t)len);
  }
  if (rc == 0 && ferror(f)) rc = fail(err, errlen, "cannot read hostfile '%s': %s", path, strerror(errno));
  else if (rc == 0 && l.n == 0) rc = fail(err, errlen, "hostfile '%s' lists no hosts", path);
  free(line);
  fclose(f);
  return done(&l, rc, out);
}

int farm__hosts_list(const char *hosts, farm_host **out, char *err, size_t errlen) {
  list l = {0};
  char origin[32];
  ctx c = {origin, ITEM_FORM, err, errlen};
  *out = NULL;
  size_t n = hosts ? strlen(hosts) : 0;
  if (hosts == NULL || hosts[strspn(hosts, WS)] == '\0')
    return fail(err, errlen, "--hosts: empty list " Q "; %s", QA(hosts ? hosts : "", n), ITEM_FORM);
  char *copy = strdup(hosts), *p = copy;
  if (!copy) return fail(err, errlen, "--hosts: out of memory");
  int rc = 0;
  for (int k = 1; rc == 0 && p; k++) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    char *t = trim(p);
    p = comma ? comma + 1 : NULL;
    snprintf(origin, sizeof origin, "--hosts item %d", k);
    size_t a = strcspn(t, WS);
    if (!*t) rc = bad(&c, "empty item in " Q, QA(hosts, n));
    else if (t[a]) {
      char *r = t + a + strspn(t + a, WS);
      rc = number(r, strlen(r), 65536) != -2
               ? bad(&c, "no worker count in a --hosts item " Q " (put counts in a hostfile)", QA(t, strlen(t)))
               : bad(&c, "spaces in a --hosts item " Q, QA(t, strlen(t)));
    } else rc = add(&l, &c, t, NULL);
  }
  free(copy);
  return done(&l, rc, out);
}

/* user@ only when set; :port only when not the kind's default, except that a
   node is always its URL, "node://host:port". An IPv6 host shown with a port
   is in brackets. */
void farm__host_name(const farm_host *h, char *out, size_t n) {
  int node = h->kind == FARM_HOST_NODE;
  int showport = node || h->port != SSH_PORT;
  int br = showport && strchr(h->host, ':') != NULL;
  char port[16] = "";
  if (showport) snprintf(port, sizeof port, ":%d", h->port);
  snprintf(out, n, "%s%s%s%s%s%s%s", node ? "node://" : "", h->user, *h->user ? "@" : "",
           br ? "[" : "", h->host, br ? "]" : "", port);
}
