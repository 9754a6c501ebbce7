/*
 * test_sshconfig.c -- reading ~/.ssh/config (core/sshconfig.c): Host patterns
 * (*, ?, !), the first value winning, IdentityFile adding up, what a hostfile
 * gives winning over User and Port, ~ and %-tokens, Match all, Include, and a
 * malformed or unreadable file named with its line. Files live in a scratch
 * directory made here (never the real ~/.ssh). TAP.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sshconfig.h"

static int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); fflush(stdout); } while (0)

static char home[256], cfg[300];

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) { perror(path); exit(1); }
  fputs(text, f);
  fclose(f);
}

/* look host up (user, port given with it) in a config holding text */
static int look(const char *text, const char *host, const char *user, int port,
                farm_sshcfg *c, char *err, size_t errlen) {
  if (text) put(cfg, text);
  farm_sshcfg_query q = { .path = cfg, .home = home, .host = host, .user = user, .port = port,
                          .local_user = "me" };
  return farm__sshcfg_lookup(&q, c, err, errlen);
}

int main(void) {
  char tmpl[] = "/tmp/farm-sshcfg-XXXXXX", err[700], path[400];
  if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
  snprintf(home, sizeof home, "%s", tmpl);
  snprintf(path, sizeof path, "%s/.ssh", home);
  mkdir(path, 0700);
  snprintf(cfg, sizeof cfg, "%s/.ssh/config", home);
  farm_sshcfg c;

  OK(farm__sshcfg_match("*", "anything") && farm__sshcfg_match("web?", "web1") &&
     !farm__sshcfg_match("web?", "web12") && farm__sshcfg_match("*.example.com", "a.EXAMPLE.com") &&
     farm__sshcfg_match("a*b*c", "axxbyyc") && !farm__sshcfg_match("a*b*c", "axxbyy"),
     "patterns: * any run, ? one character, case-insensitive");

  /* no file: the host as given, port 22, the local user */
  unlink(cfg);
  int rc = look(NULL, "h1", NULL, 0, &c, err, sizeof err);
  OK(rc == 0 && !strcmp(c.hostname, "h1") && c.port == 22 && !strcmp(c.user, "me") &&
     c.nidentity == 0 && !c.changed, "no ~/.ssh/config: the host as given, port 22, the local user");
  farm__sshcfg_free(&c);

  const char *text =
    "# farm's test\n"
    "Host web?  !web9\n"
    "  HostName 10.0.0.%h.example\n"
    "  Port 2201\n"
    "Host alias\n"
    "  HostName=127.0.0.1\n"
    "  Port = 2222\n"
    "  User alice\n"
    "  IdentityFile ~/.ssh/alias_key\n"
    "  IdentityFile \"%d/with space/%r@%h:%p\"\n"
    "Host *\n"
    "  User bob\n"
    "  Port 2200\n"
    "  IdentityFile ~/.ssh/every_key\n"
    "  ServerAliveInterval 30\n";
  rc = look(text, "alias", NULL, 0, &c, err, sizeof err);
  char want[600];
  snprintf(want, sizeof want, "%s/with space/alice@127.0.0.1:2222", home);
  OK(rc == 0 && !strcmp(c.hostname, "127.0.0.1") && c.port == 2222 && !strcmp(c.user, "alice") && c.changed,
     "Host alias: HostName, Port, User; the first value obtained wins over Host *");
  OK(rc == 0 && c.nidentity == 3 && !strncmp(c.identity[0], home, strlen(home)) &&
     !strcmp(c.identity[0] + strlen(home), "/.ssh/alias_key") && !strcmp(c.identity[1], want) &&
     !strcmp(c.identity[2] + strlen(home), "/.ssh/every_key"),
     "IdentityFile lines add up in order, ~ and %d %r %h %p expanded, quotes kept whole");
  farm__sshcfg_free(&c);

  rc = look(NULL, "alias", "carol", 2022, &c, err, sizeof err);
  OK(rc == 0 && !strcmp(c.user, "carol") && c.port == 2022 && !strcmp(c.hostname, "127.0.0.1"),
     "a user and port given with the host win over the file's");
  farm__sshcfg_free(&c);

  rc = look(NULL, "web1", NULL, 0, &c, err, sizeof err);
  OK(rc == 0 && !strcmp(c.hostname, "10.0.0.web1.example") && c.port == 2201 && !strcmp(c.user, "bob"),
     "Host web? matches web1: %h in HostName; User from Host *");
  farm__sshcfg_free(&c);

  rc = look(NULL, "web9", NULL, 0, &c, err, sizeof err);
  OK(rc == 0 && !strcmp(c.hostname, "web9") && c.port == 2200, "a !pattern keeps its block from the host");
  farm__sshcfg_free(&c);

  rc = look(NULL, "web12", NULL, 0, &c, err, sizeof err);
  OK(rc == 0 && !strcmp(c.hostname, "web12") && c.port == 2200 && c.changed,
     "? is one character: web12 gets Host * alone");
  farm__sshcfg_free(&c);

  /* Match all applies, another Match does not; Include, relative to ~/.ssh */
  snprintf(path, sizeof path, "%s/.ssh/conf.d", home);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/.ssh/conf.d/b.conf", home);
  put(path, "Host inc\n  Port 3333\n");
  snprintf(path, sizeof path, "%s/.ssh/conf.d/a.conf", home);
  put(path, "Host inc\n  Port 3000\n  User fromfile\n");
  rc = look("Include conf.d/*.conf\nMatch exec \"true\"\n  Port 9\nMatch all\n  User everyone\n", "inc", NULL, 0,
            &c, err, sizeof err);
  OK(rc == 0 && c.port == 3000 && !strcmp(c.user, "fromfile"),
     "Include with a glob, in sorted order, relative to ~/.ssh");
  farm__sshcfg_free(&c);
  rc = look(NULL, "other", NULL, 0, &c, err, sizeof err);
  OK(rc == 0 && c.port == 22 && !strcmp(c.user, "everyone"), "Match all applies; Match exec is not run nor applied");
  farm__sshcfg_free(&c);

  /* malformed lines name the file and line, whatever block they are in */
  static const struct { const char *text, *want; } bad[] = {
    { "Host a\n  Port ssh2\n", "~/.ssh/config line 2: bad Port 'ssh2' (a number, 1 to 65535); fix that line" },
    { "Host nothere\n\n  Port 70000\n", "~/.ssh/config line 3: bad Port '70000'" },
    { "Host\n", "~/.ssh/config line 1: Host needs at least one pattern" },
    { "Host *\n  User\n", "~/.ssh/config line 2: User needs a value" },
    { "Host *\n  HostName a b\n", "~/.ssh/config line 2: HostName takes one value, not 2" },
    { "Host *\n  IdentityFile \"~/.ssh/x\n", "~/.ssh/config line 2: bad quoting" },
    { "Host *\n  IdentityFile ~/.ssh/%C\n", "~/.ssh/config line 2: IdentityFile '~/.ssh/%C': farm does not know the token %C" },
    { "Include conf.d/loop.conf\n", "~/.ssh/conf.d/loop.conf line 1: Include nested more than 16 deep" },
  };
  snprintf(path, sizeof path, "%s/.ssh/conf.d/loop.conf", home);
  put(path, "Include conf.d/loop.conf\n");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    rc = look(bad[i].text, "a", NULL, 0, &c, err, sizeof err);
    char what[300];
    snprintf(what, sizeof what, "a malformed line is named: %s", bad[i].want);
    OK(rc < 0 && strstr(err, bad[i].want) && !strchr(err, '\n'), what);
    if (rc == 0 || !strstr(err, bad[i].want)) printf("# got: %s\n", err);
    farm__sshcfg_free(&c);
  }

  /* a config that cannot be read (a directory here: root reads any mode) */
  unlink(cfg);
  mkdir(cfg, 0700);
  rc = look(NULL, "a", NULL, 0, &c, err, sizeof err);
  OK(rc < 0 && strstr(err, "cannot read ~/.ssh/config (Is a directory)"), "an unreadable ~/.ssh/config is named");
  if (rc == 0) printf("# got: %s\n", err);
  farm__sshcfg_free(&c);

  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", home);
  printf("1..%d\n", n);
  return fails ? 1 : 0;
}
