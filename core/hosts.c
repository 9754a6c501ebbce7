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
 *
 * The schedulers' allocations (the end of this file) are read the same way:
 * Slurm's hostlist is checked and counted whole (at most FARM_HOSTLIST_MAX
 * names, each at most 255 bytes) before any name is made; PBS and SGE files
 * line by line, a host named again adding to its workers.
 *
 * Threads: the caller's, when a pool opens (no state of its own).
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
    h->port_given = 1;
  }
  return 0;
}

/* Append h to l with c's origin, unless the same host (kind, user, host and
   port) is there already. */
static int append(list *l, const ctx *c, farm_host *h) {
  if ((size_t)snprintf(h->origin, sizeof h->origin, "%s", c->origin) >= sizeof h->origin)
    return fail(c->err, c->errlen, "%s: origin too long (at most %zu bytes)", c->origin, sizeof h->origin - 1);
  for (int i = 0; i < l->n; i++) {
    const farm_host *o = &l->v[i];
    if (o->kind == h->kind && o->port == h->port && strcmp(o->user, h->user) == 0 &&
        strcasecmp(o->host, h->host) == 0) {
      char name[400];
      farm__host_name(h, name, sizeof name);
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
  l->v[l->n++] = *h;
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
  return append(l, c, &h);
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

int farm__hosts_line(const char *line, const char *origin, farm_host *out, char *err, size_t errlen) {
  list l = {0};
  ctx c = {origin, LINE_FORM, err, errlen};
  char *copy = strdup(line ? line : "");
  if (!copy) return fail(err, errlen, "%s: out of memory", origin);
  int rc = file_line(&l, &c, copy, strlen(copy));
  free(copy);
  if (rc == 0 && l.n == 1) *out = l.v[0];
  free(l.v);
  return rc < 0 ? -1 : l.n;
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
   is in brackets. A Slurm node is its name. */
void farm__host_name(const farm_host *h, char *out, size_t n) {
  if (h->kind == FARM_HOST_SLURM) {
    snprintf(out, n, "%s", h->host);
    return;
  }
  int node = h->kind == FARM_HOST_NODE;
  int showport = node || h->port != SSH_PORT;
  int br = showport && strchr(h->host, ':') != NULL;
  char port[16] = "";
  if (showport) snprintf(port, sizeof port, ":%d", h->port);
  snprintf(out, n, "%s%s%s%s%s%s%s", node ? "node://" : "", h->user, *h->user ? "@" : "",
           br ? "[" : "", h->host, br ? "]" : "", port);
}

/* ---- Batch schedulers' allocations: Slurm, PBS, SGE ---------------------- */

#define NAME_MAX_ 255                 /* sizeof ((farm_host *)0)->host - 1 */
#define NUM_MAX 999999999UL           /* the largest number in a hostlist range */
#define PBS_FORM "a PBS_NODEFILE line is one host name, repeated once per CPU"
#define SGE_FORM "a PE_HOSTFILE line is 'host slots queue processors'"

/* The value of an environment variable when it is set and not empty. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* A byte that may be in a host name. */
static int namechar(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         ch == '-' || ch == '.' || ch == '_';
}

/* One expansion of a hostlist: the text and where it came from (for
   messages), and the names made so far into v[0..cap). */
typedef struct expansion {
  const char *list, *src;
  char **v;
  int n, cap;
  char *err;
  size_t errlen;
} expansion;

typedef struct range {
  unsigned long lo, hi;
  int width;                        /* the digits of lo as written: the zero padding */
} range;

/* "malformed host list 'LIST' (SRC): <why>" */
static int hl_bad(const expansion *x, const char *fmt, ...) {
  char why[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  size_t n = strlen(x->list);
  return fail(x->err, x->errlen, "malformed host list " Q " (%s): %s", QA(x->list, n), x->src, why);
}

/* s[0..n) is 1 to NAME_MAX_ digits. */
static int digits(const char *s, size_t n) {
  if (n == 0 || n > NAME_MAX_) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

/* The value of the digits s[0..n), NUM_MAX + 1 when larger than NUM_MAX. */
static unsigned long digval(const char *s, size_t n) {
  unsigned long v = 0;
  for (size_t i = 0; i < n && v <= NUM_MAX; i++) v = v * 10 + (unsigned long)(s[i] - '0');
  return v > NUM_MAX ? NUM_MAX + 1 : v;
}

/* How many bytes v takes in decimal with a width of w. */
static size_t numlen(unsigned long v, int w) {
  size_t n = 1;
  while (v >= 10) v /= 10, n++;
  return n > (size_t)w ? n : (size_t)w;
}

/* One range of a bracket, s[0..e): "N" or "N-M" in digits, N <= M, into r.
   item[0..itemn) is the list item, for messages. */
static int hl_range(const expansion *x, const char *s, const char *e, const char *item, size_t itemn, range *r) {
  size_t n = (size_t)(e - s);
  const char *dash = memchr(s, '-', n);
  size_t a = dash ? (size_t)(dash - s) : n, b = dash ? n - a - 1 : 0;
  if (n == 0) return hl_bad(x, "an empty range in " Q, QA(item, itemn));
  if (!digits(s, a) || (dash && !digits(dash + 1, b)))
    return hl_bad(x, "bad range " Q " in " Q "; a range is 'N' or 'N-M', in digits", QA(s, n), QA(item, itemn));
  r->lo = digval(s, a);
  r->hi = dash ? digval(dash + 1, b) : r->lo;
  r->width = (int)a;
  if (r->lo > NUM_MAX || r->hi > NUM_MAX)
    return hl_bad(x, "a number too large in " Q " (at most %lu)", QA(item, itemn), NUM_MAX);
  if (r->lo > r->hi)
    return hl_bad(x, "bad range " Q " in " Q " (%lu is more than %lu)", QA(s, n), QA(item, itemn), r->lo, r->hi);
  return 0;
}

/* Check one item, item[0..n), and count its names into *count, which may be
   at most max; nothing is made. The longest name is at most NAME_MAX_ bytes,
   so that an item has fewer brackets than that. */
static int hl_check(const expansion *x, const char *item, size_t n, unsigned long max, unsigned long *count) {
  const char *end = item + n;
  unsigned long total = 1;
  size_t len = 0;
  char b[8];
  for (const char *p = item; p < end;) {
    if (*p == ']') return hl_bad(x, "']' without '[' in " Q, QA(item, n));
    if (*p != '[') {
      if (!namechar(*p) || (p == item && *p == '-'))
        return hl_bad(x, "bad character '%s' in " Q "; a name is letters, digits, '-', '.' and '_'",
                      chr(*p, b), QA(item, n));
      p++, len++;
      continue;
    }
    const char *q = p + 1;
    while (q < end && *q != '[' && *q != ']') q++;
    if (q == end) return hl_bad(x, "'[' without ']' in " Q, QA(item, n));
    if (*q == '[') return hl_bad(x, "nested '[' in " Q, QA(item, n));
    unsigned long size = 0;
    size_t w = 0;
    for (const char *s = p + 1, *e;; s = e + 1) {
      if (!(e = memchr(s, ',', (size_t)(q - s)))) e = q;
      range r;
      if (hl_range(x, s, e, item, n, &r) < 0) return -1;
      size += r.hi - r.lo + 1;      /* <= FARM_HOSTLIST_MAX + NUM_MAX + 1: no overflow */
      if (size > max) return hl_bad(x, "more than %d names, at " Q, FARM_HOSTLIST_MAX, QA(item, n));
      if (numlen(r.hi, r.width) > w) w = numlen(r.hi, r.width);
      if (e == q) break;
    }
    if (size > max / total) return hl_bad(x, "more than %d names, at " Q, FARM_HOSTLIST_MAX, QA(item, n));
    total *= size;
    len += w;
    p = q + 1;
  }
  if (total > max) return hl_bad(x, "more than %d names, at " Q, FARM_HOSTLIST_MAX, QA(item, n));
  if (len > NAME_MAX_) return hl_bad(x, "a name longer than %d bytes in " Q, NAME_MAX_, QA(item, n));
  *count = total;
  return 0;
}

/* Make the names of a checked item, p[0..end), after the prefix buf[0..len),
   in Slurm's order: the first bracket slowest, the last fastest. */
static int hl_make(expansion *x, char *buf, size_t len, const char *p, const char *end, const char *item, size_t n) {
  const char *lb = memchr(p, '[', (size_t)(end - p));
  size_t lit = (size_t)((lb ? lb : end) - p);
  if (len + lit > NAME_MAX_) return hl_bad(x, "a name longer than %d bytes", NAME_MAX_);
  memcpy(buf + len, p, lit);
  len += lit;
  if (!lb) {
    buf[len] = '\0';
    if (x->n >= x->cap) return hl_bad(x, "more names than counted");
    if (!(x->v[x->n] = strdup(buf))) return hl_bad(x, "out of memory");
    x->n++;
    return 0;
  }
  const char *rb = memchr(lb, ']', (size_t)(end - lb));
  for (const char *s = lb + 1, *e;; s = e + 1) {
    if (!(e = memchr(s, ',', (size_t)(rb - s)))) e = rb;
    range r;
    if (hl_range(x, s, e, item, n, &r) < 0) return -1;
    for (unsigned long j = r.lo; j <= r.hi; j++) {
      int m = snprintf(buf + len, NAME_MAX_ + 1 - len, "%0*lu", r.width, j);
      if (m < 0 || (size_t)m > NAME_MAX_ - len) return hl_bad(x, "a name longer than %d bytes", NAME_MAX_);
      if (hl_make(x, buf, len + (size_t)m, rb + 1, end, item, n) < 0) return -1;
    }
    if (e == rb) break;
  }
  return 0;
}

/* The end of the item that starts at p: the first comma outside brackets. */
static const char *hl_item(const char *p) {
  int in = 0;
  for (; *p && (in || *p != ','); p++)
    if (*p == '[') in = 1;
    else if (*p == ']') in = 0;
  return p;
}

void farm__hostlist_free(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* farm__hostlist_expand, with src the variable named in messages. Every item
   is checked and counted first; then the names are made. */
static int expand(const char *text, const char *src, char ***names, char *err, size_t errlen) {
  expansion x = {text ? text : "", src, NULL, 0, 0, err, errlen};
  *names = NULL;
  if (!*x.list) return hl_bad(&x, "the list is empty");
  unsigned long total = 0, count = 0;
  int k = 1;
  for (const char *p = x.list, *e;; p = e + 1, k++) {
    e = hl_item(p);
    if (e == p) return hl_bad(&x, "item %d is empty", k);
    if (hl_check(&x, p, (size_t)(e - p), FARM_HOSTLIST_MAX - total, &count) < 0) return -1;
    total += count;
    if (!*e) break;
  }
  if (!(x.v = calloc(total, sizeof *x.v))) return hl_bad(&x, "out of memory");
  x.cap = (int)total;
  char buf[NAME_MAX_ + 1];
  for (const char *p = x.list, *e;; p = e + 1) {
    e = hl_item(p);
    if (hl_make(&x, buf, 0, p, e, p, (size_t)(e - p)) < 0) {
      farm__hostlist_free(x.v, x.n);
      return -1;
    }
    if (!*e) break;
  }
  *names = x.v;
  return x.n;
}

int farm__hostlist_expand(const char *text, char ***names, char *err, size_t errlen) {
  return expand(text, "SLURM_JOB_NODELIST", names, err, errlen);
}

/* farm__cpus_per_node, with src the variable and nodes the node list's, for messages. */
static int cpus_of(const char *spec, const char *src, const char *nodes, int n, int *cpus,
                   char *err, size_t errlen) {
  const char *s = spec ? spec : "";
  size_t sn = strlen(s);
#define CPF(fmt, ...) fail(err, errlen, "%s " Q ": " fmt, src, QA(s, sn), __VA_ARGS__)
  if (n < 1 || n > FARM_HOSTLIST_MAX) return CPF("no count for %d nodes", n);
  long k = 0;
  for (const char *p = s, *e;; p = e + 1) {
    if (!(e = strchr(p, ','))) e = p + strlen(p);
    size_t len = (size_t)(e - p), a = strspn(p, "0123456789");   /* <= len: ',' ends it */
    long c = number(p, a, FARM_HOSTLIST_MAX), m = 1;
    if (a < len) {
      const char *r = p + a;
      size_t rn = len - a;
      if (rn < 4 || r[0] != '(' || r[1] != 'x' || r[rn - 1] != ')' || strspn(r + 2, "0123456789") != rn - 3)
        return CPF("bad item " Q "; an item is 'N' or 'N(xM)': N CPUs on each of M nodes", QA(p, len));
      if ((m = number(r + 2, rn - 3, FARM_HOSTLIST_MAX)) < 0)
        return CPF("bad repeat " Q " (1 to %d)", QA(p, len), FARM_HOSTLIST_MAX);
    }
    if (c == -2)
      return CPF("bad item " Q "; an item is 'N' or 'N(xM)': N CPUs on each of M nodes", QA(p, len));
    if (c < 0) return CPF("bad CPU count " Q " (1 to %d)", QA(p, len), FARM_HOSTLIST_MAX);
    if (k + m > n) return CPF("counts for more than the %d nodes of %s", n, nodes);
    for (long i = 0; i < m; i++) cpus[k++] = (int)c;
    if (!*e) break;
  }
  if (k < n) return CPF("counts for %ld nodes, %s has %d", k, nodes, n);
#undef CPF
  return n;
}

int farm__cpus_per_node(const char *spec, int n, int *cpus, char *err, size_t errlen) {
  return cpus_of(spec, "SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_NODELIST", n, cpus, err, errlen);
}

int farm__hosts_slurm(farm_host **out, char *err, size_t errlen) {
  const char *src = "SLURM_JOB_NODELIST", *nl = env(src);
  const char *csrc = "SLURM_JOB_CPUS_PER_NODE", *cl = env(csrc);
  *out = NULL;
  if (!nl && (nl = env("SLURM_NODELIST"))) src = "SLURM_NODELIST";
  if (!nl)
    return fail(err, errlen, "--nodes slurm: not inside a Slurm allocation (SLURM_JOB_NODELIST is %s); "
                "run farm inside salloc or an sbatch script", getenv(src) ? "empty" : "not set");
  if (!cl && (cl = env("SLURM_TASKS_PER_NODE"))) csrc = "SLURM_TASKS_PER_NODE";
  char **names;
  int n = expand(nl, src, &names, err, errlen), rc = 0;
  if (n < 0) return -1;
  int *cpus = calloc((size_t)n, sizeof *cpus);
  list l = {0};
  char origin[64];
  ctx c = {origin, "", err, errlen};
  if (!cpus) rc = fail(err, errlen, "--nodes slurm: out of memory");
  else if (cl && cpus_of(cl, csrc, src, n, cpus, err, errlen) < 0) rc = -1;
  for (int i = 0; rc == 0 && i < n; i++) {
    farm_host h;
    memset(&h, 0, sizeof h);
    h.kind = FARM_HOST_SLURM;
    snprintf(h.host, sizeof h.host, "%s", names[i]);   /* at most 255 bytes: expand() */
    h.workers = cpus[i];
    snprintf(origin, sizeof origin, "%s item %d", src, i + 1);
    rc = append(&l, &c, &h);
  }
  free(cpus);
  farm__hostlist_free(names, n);
  return done(&l, rc, out);
}

/* Find an SSH host named name (any case) that a PBS or SGE file gave. */
static farm_host *find(list *l, const char *name) {
  for (int i = 0; i < l->n; i++)
    if (strcasecmp(l->v[i].host, name) == 0) return &l->v[i];
  return NULL;
}

/* One line of $PBS_NODEFILE (sge: 0) or $PE_HOSTFILE (sge: 1) into l. */
static int sched_line(list *l, const ctx *c, int sge, char *line, size_t len) {
  char b[8], *f[5] = {0};
  int nf = 0;
  size_t i;
  if (strlen(line) != len) return bad(c, "a NUL byte in the line");
  for (char *p = line + strspn(line, WS); *p && nf < 5; p += strspn(p, WS)) {
    f[nf++] = p;
    p += strcspn(p, WS);
    if (*p) *p++ = '\0';
  }
  if (nf == 0) return 0;
  if (nf > (sge ? 4 : 1)) return bad(c, "too many fields on the line");
  if (sge && nf < 2) return bad(c, "no slot count after " Q, QA(f[0], strlen(f[0])));
  size_t hn = strlen(f[0]);
  if (hn > NAME_MAX_) return bad(c, "host too long " Q " (at most %d bytes)", QA(f[0], hn), NAME_MAX_);
  if ((i = badchar(f[0], hn, 0)) < hn)
    return bad(c, "bad character '%s' in the host " Q, chr(f[0][i], b), QA(f[0], hn));
  long w = 1;
  if (sge) {
    w = number(f[1], strlen(f[1]), FARM_HOSTLIST_MAX);
    if (w == -2) return bad(c, "bad slot count " Q, QA(f[1], strlen(f[1])));
    if (w < 0) return bad(c, "bad slot count " Q " (1 to %d)", QA(f[1], strlen(f[1])), FARM_HOSTLIST_MAX);
  }
  farm_host *o = find(l, f[0]);
  if (o) {
    if (o->workers + w > FARM_HOSTLIST_MAX)
      return bad(c, "more than %d %s for " Q, FARM_HOSTLIST_MAX, sge ? "slots" : "lines", QA(f[0], hn));
    o->workers += (int)w;
    return 0;
  }
  farm_host h;
  memset(&h, 0, sizeof h);
  h.kind = FARM_HOST_SSH;
  h.port = SSH_PORT;
  memcpy(h.host, f[0], hn + 1);
  h.workers = (int)w;
  return append(l, c, &h);
}

/* $PBS_NODEFILE (sge: 0) or $PE_HOSTFILE (sge: 1): SSH hosts. */
static int sched_file(int sge, farm_host **out, char *err, size_t errlen) {
  const char *var = sge ? "PE_HOSTFILE" : "PBS_NODEFILE", *path = env(var);
  list l = {0};
  *out = NULL;
  if (!path)
    return fail(err, errlen, "--nodes %s: not inside %s job (%s is %s)", sge ? "sge" : "pbs",
                sge ? "an SGE" : "a PBS", var, getenv(var) ? "empty" : "not set");
  FILE *f = fopen(path, "r");
  if (!f) return fail(err, errlen, "cannot read %s '%s': %s", var, path, strerror(errno));
  char *line = NULL, origin[sizeof l.v->origin];
  size_t cap = 0;
  ssize_t len;
  long no = 0;
  int rc = 0;
  ctx c = {origin, sge ? SGE_FORM : PBS_FORM, err, errlen};
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    if ((size_t)snprintf(origin, sizeof origin, "%s:%ld", path, ++no) >= sizeof origin)
      rc = fail(err, errlen, "%s name too long '%s' (at most %zu bytes)", var, path, sizeof origin - 12);
    else rc = sched_line(&l, &c, sge, line, (size_t)len);
  }
  if (rc == 0 && ferror(f)) rc = fail(err, errlen, "cannot read %s '%s': %s", var, path, strerror(errno));
  else if (rc == 0 && l.n == 0) rc = fail(err, errlen, "%s '%s' lists no hosts", var, path);
  free(line);
  fclose(f);
  return done(&l, rc, out);
}

int farm__hosts_pbs(farm_host **out, char *err, size_t errlen) {
  return sched_file(0, out, err, errlen);
}

int farm__hosts_sge(farm_host **out, char *err, size_t errlen) {
  return sched_file(1, out, err, errlen);
}

int farm__hosts_auto(farm_host **out, const char **which, char *err, size_t errlen) {
  const char *w = "local";
  int rc = 0;
  *out = NULL;
  if (env("SLURM_JOB_NODELIST") || env("SLURM_NODELIST")) w = "slurm", rc = farm__hosts_slurm(out, err, errlen);
  else if (env("PBS_NODEFILE")) w = "pbs", rc = farm__hosts_pbs(out, err, errlen);
  else if (env("PE_HOSTFILE")) w = "sge", rc = farm__hosts_sge(out, err, errlen);
  if (which) *which = w;
  return rc;
}

int farm__hosts_named(const char *arg, farm_host **out, char *err, size_t errlen) {
  *out = NULL;
  if (!arg || !*arg)
    return fail(err, errlen, "--nodes: no hostfile given; give a hostfile or slurm, pbs, sge or auto");
  if (!strcmp(arg, "slurm")) return farm__hosts_slurm(out, err, errlen);
  if (!strcmp(arg, "pbs")) return farm__hosts_pbs(out, err, errlen);
  if (!strcmp(arg, "sge")) return farm__hosts_sge(out, err, errlen);
  if (!strcmp(arg, "auto")) return farm__hosts_auto(out, NULL, err, errlen);
  return farm__hosts_file(arg, out, err, errlen);
}
