/*
 * sshconfig.c -- what ~/.ssh/config says of a host (sshconfig.h says what is
 * read; this says how).
 *
 * Lines are read as OpenSSH's readconf.c reads them: a keyword (any case),
 * then its arguments, separated by blanks or by one '=' after the keyword;
 * an argument in double quotes may hold blanks; a word starting with '#'
 * starts a comment. Every line is checked, whichever block it is in (OpenSSH
 * also refuses a bad line for another host), but only the lines of blocks
 * that apply are taken. Values are kept raw while the files are read and
 * expanded once at the end, when the user and port that %r and %p stand for
 * are known.
 *
 * Left out on purpose: Match criteria other than `all` (exec would run a
 * command, canonical and final need a resolver pass farm does not make),
 * /etc/ssh/ssh_config (a system's defaults are for ssh; farm reads the
 * user's own file), and every keyword but the four a launch needs.
 *
 * Threads: the client's connecting threads (ssh.c); no state of its own.
 */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "sshconfig.h"

#define MAX_DEPTH 16               /* Include nesting, as OpenSSH's READCONF_MAX_DEPTH */
#define MAX_ARGS 64

typedef struct raw {               /* values as the file gives them, unexpanded */
  char *hostname, *user;
  int port;
  char **ident;
  int nident;
} raw;

typedef struct reader {
  const farm_sshcfg_query *q;
  raw r;
  char *err;
  size_t errlen;
} reader;

/* ---- small things -------------------------------------------------------- */

/* path as a user writes it: ~/... when under home */
static void shown(const reader *rd, const char *path, char *out, size_t n) {
  const char *home = rd->q->home;
  size_t hl = home ? strlen(home) : 0;
  if (hl > 1 && !strncmp(path, home, hl) && path[hl] == '/') snprintf(out, n, "~%s", path + hl);
  else snprintf(out, n, "%s", path);
}

__attribute__((format(printf, 4, 5)))
static int bad(reader *rd, const char *file, unsigned long line, const char *fmt, ...) {
  char where[512], msg[600];
  shown(rd, file, where, sizeof where);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  for (char *p = msg; *p; p++) if ((unsigned char)*p < 0x20) *p = ' ';
  snprintf(rd->err, rd->errlen, "%s line %lu: %s; fix that line", where, line, msg);
  return -1;
}

static int oom(reader *rd) { snprintf(rd->err, rd->errlen, "out of memory"); return -1; }

int farm__sshcfg_match(const char *p, const char *s) {
  for (;;) {
    if (!*p) return !*s;
    if (*p == '*') {
      while (*p == '*') p++;
      if (!*p) return 1;
      for (; *s; s++) if (farm__sshcfg_match(p, s)) return 1;
      return 0;
    }
    if (!*s) return 0;
    if (*p != '?' && tolower((unsigned char)*p) != tolower((unsigned char)*s)) return 0;
    p++, s++;
  }
}

/* Split line into words in place (see the top). The keyword ends at a blank
   or at one '='. Returns the number of words, or -1 for bad quoting (a '"'
   without its partner, or text glued to a quoted word). */
static int split(char *l, char **argv, int max) {
  int n = 0, eq = 0;
  char *p = l;
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    if (n == 1 && !eq && *p == '=') {    /* Keyword = value */
      p++;
      while (*p == ' ' || *p == '\t') p++;
    }
    if (!*p || *p == '#') return n;
    if (n == max) return n;              /* the caller sees too many */
    char *w = p, *o = p;
    if (*p == '"') {
      p++;
      while (*p && *p != '"') *o++ = *p++;
      if (*p != '"') return -1;
      p++;
    } else {
      while (*p && *p != ' ' && *p != '\t' && !(n == 0 && *p == '=')) *o++ = *p++;
    }
    /* o never passes the delimiter p points at, so ending the word there
       (after stepping past it) loses nothing */
    if (*p == ' ' || *p == '\t') p++;
    else if (*p == '=' && n == 0) { p++; eq = 1; }
    else if (*p) return -1;
    *o = 0;
    argv[n++] = w;
  }
}

/* Are the %-tokens of v all among `known`? The bad one in *bad. */
static int tokens_ok(const char *v, const char *known, char *badc) {
  for (const char *p = v; *p; p++) {
    if (*p != '%') continue;
    p++;
    if (!*p || (*p != '%' && !strchr(known, *p))) { *badc = *p ? *p : ' '; return 0; }
  }
  return 1;
}

/* ---- reading ---------------------------------------------------------------- */

static int read_file(reader *rd, const char *path, int active, int never, int depth, int must);

#define IDENT_TOKENS "dhilLnpru"

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int include(reader *rd, const char *file, unsigned long line, char **argv, int argc,
                   int active, int never, int depth) {
  if (depth + 1 > MAX_DEPTH)
    return bad(rd, file, line, "Include nested more than %d deep (does a file include itself?)", MAX_DEPTH);
  for (int i = 0; i < argc; i++) {
    char pat[4096];
    const char *a = argv[i];
    if (a[0] == '~' && a[1] == '/') snprintf(pat, sizeof pat, "%s%s", rd->q->home, a + 1);
    else if (a[0] == '/') snprintf(pat, sizeof pat, "%s", a);
    else if (a[0] == '~') return bad(rd, file, line, "Include '%s': farm expands only ~/ at the start", a);
    else snprintf(pat, sizeof pat, "%s/.ssh/%s", rd->q->home, a);    /* as OpenSSH, for the user's file */
    glob_t g;
    int gr = glob(pat, GLOB_NOSORT, NULL, &g);
    if (gr == GLOB_NOMATCH) continue;
    if (gr != 0) { globfree(&g); return bad(rd, file, line, "Include '%s': cannot list the files it names", a); }
    /* OpenSSH reads them in the order glob sorts them */
    qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, by_name);
    for (size_t k = 0; k < g.gl_pathc; k++)
      if (read_file(rd, g.gl_pathv[k], active, never || !active, depth + 1, 1) < 0) { globfree(&g); return -1; }
    globfree(&g);
  }
  return 0;
}

/* One line (already split). *active is the state of the block it is in. */
static int line_do(reader *rd, const char *file, unsigned long line, char **argv, int argc,
                   int *active, int never, int depth) {
  const char *kw = argv[0];
  raw *r = &rd->r;
  if (!strcasecmp(kw, "Host")) {
    if (argc < 2) return bad(rd, file, line, "Host needs at least one pattern");
    int yes = 0, no = 0;
    for (int i = 1; i < argc; i++) {
      const char *p = argv[i];
      int neg = *p == '!';
      if (neg) p++;
      if (farm__sshcfg_match(p, rd->q->host)) { if (neg) no = 1; else yes = 1; }
    }
    *active = !never && yes && !no;
    return 0;
  }
  if (!strcasecmp(kw, "Match")) {
    if (argc < 2) return bad(rd, file, line, "Match needs a criterion (such as all)");
    *active = !never && argc == 2 && !strcasecmp(argv[1], "all");
    return 0;
  }
  if (!strcasecmp(kw, "Include")) {
    if (argc < 2) return bad(rd, file, line, "Include needs a file");
    return include(rd, file, line, argv + 1, argc - 1, *active, never, depth);
  }
  int which = !strcasecmp(kw, "HostName") ? 1 : !strcasecmp(kw, "Port") ? 2 :
              !strcasecmp(kw, "User") ? 3 : !strcasecmp(kw, "IdentityFile") ? 4 : 0;
  if (!which) return 0;            /* not farm's business */
  if (argc < 2) return bad(rd, file, line, "%s needs a value", kw);
  if (argc > 2) return bad(rd, file, line, "%s takes one value, not %d (quote a value with blanks)", kw, argc - 1);
  const char *v = argv[1];
  char bc;
  switch (which) {
  case 1:
    if (!tokens_ok(v, "h", &bc)) return bad(rd, file, line, "HostName '%s': unknown token %%%c (HostName knows %%h and %%%%)", v, bc);
    if (*active && !r->hostname && !(r->hostname = strdup(v))) return oom(rd);
    break;
  case 2: {
    char *end;
    errno = 0;
    long p = strtol(v, &end, 10);
    if (errno || *end || end == v || p < 1 || p > 65535)
      return bad(rd, file, line, "bad Port '%s' (a number, 1 to 65535)", v);
    if (*active && !r->port) r->port = (int)p;
    break;
  }
  case 3:
    if (strlen(v) >= sizeof ((farm_sshcfg *)0)->user) return bad(rd, file, line, "User '%.40s...' is too long", v);
    if (*active && !r->user && !(r->user = strdup(v))) return oom(rd);
    break;
  case 4:
    if (!tokens_ok(v, IDENT_TOKENS, &bc))
      return bad(rd, file, line, "IdentityFile '%s': farm does not know the token %%%c (it knows %%d %%h %%i %%l %%L %%n %%p %%r %%u %%%%)", v, bc);
    if (v[0] == '~' && v[1] != '/' && v[1]) {
      size_t ul = strcspn(v + 1, "/");
      char name[256];
      snprintf(name, sizeof name, "%.*s", (int)(ul < sizeof name ? ul : sizeof name - 1), v + 1);
      if (!getpwnam(name)) return bad(rd, file, line, "IdentityFile '%s': no user '%s' for ~%s", v, name, name);
    }
    if (!*active || !strcasecmp(v, "none")) break;
    if (r->nident >= FARM_SSHCFG_MAX_IDENTITY)
      return bad(rd, file, line, "more than %d IdentityFile lines apply to this host", FARM_SSHCFG_MAX_IDENTITY);
    char **n = realloc(r->ident, (size_t)(r->nident + 1) * sizeof *n);
    if (!n) return oom(rd);
    r->ident = n;
    if (!(r->ident[r->nident] = strdup(v))) return oom(rd);
    r->nident++;
    break;
  }
  return 0;
}

static int read_file(reader *rd, const char *path, int active, int never, int depth, int must) {
  FILE *f = fopen(path, "re");
  char where[512];
  if (!f) {
    if (!must && (errno == ENOENT || errno == ENOTDIR)) return 0;
    shown(rd, path, where, sizeof where);
    snprintf(rd->err, rd->errlen, "cannot read %s (%s)", where, strerror(errno));
    return -1;
  }
  char *l = NULL, *argv[MAX_ARGS];
  size_t cap = 0;
  ssize_t n;
  unsigned long line = 0;
  int rc = 0;
  errno = 0;
  while (rc == 0 && (n = getline(&l, &cap, f)) >= 0) {
    line++;
    if (memchr(l, 0, (size_t)n)) { rc = bad(rd, path, line, "a NUL byte (is this a text file?)"); break; }
    while (n > 0 && strchr(" \t\r\n", l[n - 1])) l[--n] = 0;
    int argc = split(l, argv, MAX_ARGS);
    if (argc < 0) rc = bad(rd, path, line, "bad quoting (a '\"' without its partner, or text glued to a quoted word)");
    else if (argc == MAX_ARGS) rc = bad(rd, path, line, "more than %d words", MAX_ARGS - 1);
    else if (argc > 0) rc = line_do(rd, path, line, argv, argc, &active, never, depth);
    errno = 0;
  }
  if (rc == 0 && ferror(f)) {
    shown(rd, path, where, sizeof where);
    snprintf(rd->err, rd->errlen, "cannot read %s (%s)", where, strerror(errno ? errno : EIO));
    rc = -1;
  }
  free(l);
  fclose(f);
  return rc;
}

/* ---- expanding --------------------------------------------------------------- */

/* v with its tokens replaced and a leading ~ expanded; malloc'd, NULL when out
   of memory. */
static char *expand(const char *v, const farm_sshcfg_query *q, const farm_sshcfg *c) {
  char home2[4096] = "";
  const char *tail = v;
  if (v[0] == '~') {
    size_t ul = strcspn(v + 1, "/");
    if (ul == 0) snprintf(home2, sizeof home2, "%s", q->home);
    else {
      char name[256];
      snprintf(name, sizeof name, "%.*s", (int)(ul < sizeof name ? ul : sizeof name - 1), v + 1);
      struct passwd *pw = getpwnam(name);
      snprintf(home2, sizeof home2, "%s", pw ? pw->pw_dir : "");
    }
    tail = v + 1 + ul;
  }
  char host[256], shorth[256], num[32], uid[32];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
  host[sizeof host - 1] = 0;
  snprintf(shorth, sizeof shorth, "%.*s", (int)strcspn(host, "."), host);
  snprintf(num, sizeof num, "%d", c->port);
  snprintf(uid, sizeof uid, "%lu", (unsigned long)getuid());
  size_t cap = strlen(home2) + 1, k = 0;
  for (const char *p = tail; *p; p++) cap += *p == '%' ? 4096 : 1;
  char *out = malloc(cap);
  if (!out) return NULL;
  k = (size_t)snprintf(out, cap, "%s", home2);
  for (const char *p = tail; *p; p++) {
    if (*p != '%') { out[k++] = *p; continue; }
    const char *s = "";
    switch (*++p) {
    case '%': s = "%"; break;
    case 'd': s = q->home; break;
    case 'h': s = c->hostname; break;
    case 'i': s = uid; break;
    case 'l': s = host; break;
    case 'L': s = shorth; break;
    case 'n': s = q->host; break;
    case 'p': s = num; break;
    case 'r': s = c->user; break;
    case 'u': s = q->local_user; break;
    }
    k += (size_t)snprintf(out + k, cap - k, "%s", s ? s : "");
  }
  out[k] = 0;
  return out;
}

int farm__sshcfg_lookup(const farm_sshcfg_query *q, farm_sshcfg *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  if (err && errlen) err[0] = 0;
  reader rd = { .q = q, .err = err, .errlen = errlen };
  int rc = q->path && *q->path ? read_file(&rd, q->path, 1, 0, 0, 0) : 0;
  raw *r = &rd.r;
  if (rc == 0) {
    const char *u = q->user && *q->user ? q->user : r->user ? r->user : q->local_user ? q->local_user : "";
    snprintf(c->user, sizeof c->user, "%s", u);
    c->port = q->port > 0 ? q->port : r->port ? r->port : 22;
    if (r->hostname) {
      size_t k = 0;
      for (const char *p = r->hostname; *p && k + 1 < sizeof c->hostname; p++) {
        if (*p == '%' && p[1] == 'h') { k += (size_t)snprintf(c->hostname + k, sizeof c->hostname - k, "%s", q->host); p++; }
        else if (*p == '%' && p[1] == '%') { c->hostname[k++] = '%'; p++; }
        else c->hostname[k++] = *p;
        if (k >= sizeof c->hostname) k = sizeof c->hostname - 1;
      }
      c->hostname[k] = 0;
    } else {
      snprintf(c->hostname, sizeof c->hostname, "%s", q->host);
    }
    c->changed = strcmp(c->hostname, q->host) != 0 || (q->port <= 0 && r->port && r->port != 22);
    if (r->nident && !(c->identity = calloc((size_t)r->nident, sizeof *c->identity))) rc = oom(&rd);
    for (int i = 0; rc == 0 && i < r->nident; i++) {
      if (!(c->identity[i] = expand(r->ident[i], q, c))) rc = oom(&rd);
      else c->nidentity++;
    }
  }
  free(r->hostname);
  free(r->user);
  for (int i = 0; i < r->nident; i++) free(r->ident[i]);
  free(r->ident);
  return rc;
}

void farm__sshcfg_free(farm_sshcfg *c) {
  if (!c) return;
  for (int i = 0; i < c->nidentity; i++) free(c->identity[i]);
  free(c->identity);
  c->identity = NULL;
  c->nidentity = 0;
}
