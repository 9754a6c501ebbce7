/*
 * test_hosts.c -- hostfiles and --hosts lists (hosts.c): every form a line or
 * an item may take, and every way one may be wrong, each an error of one line
 * that names the file and line (or the list item) and quotes the text. The
 * hostfiles are real files in a temporary directory, removed at the end. TAP.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hosts.h"

static char err[512];

/* Write text (n bytes) to the file `name` in the current directory and read it back. */
static int file(const char *name, const char *text, size_t n, farm_host **out) {
  FILE *f = fopen(name, "wb");
  if (!f || fwrite(text, 1, n, f) != n || fclose(f) != 0) { perror(name); exit(2); }
  err[0] = '\0';
  return farm__hosts_file(name, out, err, sizeof err);
}
#define FILE_(text, out) file("hosts", text, sizeof text - 1, out)

static int list(const char *s, farm_host **out) {
  err[0] = '\0';
  return farm__hosts_list(s, out, err, sizeof err);
}

/* err says all of these, on one line. */
static int says(const char *a, const char *b, const char *c) {
  return strstr(err, a) && (!b || strstr(err, b)) && (!c || strstr(err, c)) && !strchr(err, '\n');
}

int main(void) {
  int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); if (!ok_ && err[0]) printf("# err: %s\n", err); } while (0)
  char dir[] = "/tmp/farm-hosts-XXXXXX", cwd[4096], name[400];
  farm_host *h = NULL;
  if (!mkdtemp(dir) || !getcwd(cwd, sizeof cwd) || chdir(dir) != 0) { perror(dir); return 2; }

  /* Every form, in one file with CRLF ends, comments and stray whitespace. */
  int k = FILE_("# the farm's hosts\r\n"
                "\r\n"
                "alpha\r\n"
                "  beta 4   # four workers\r\n"
                "\tbob@gamma.example.org:2222 8\r\n"
                "[2001:db8::1]:2222\n"
                "node://delta:7171 16\n"
                "node://epsilon\n"
                "zeta_1:2200\n"
                "carol@[::1]\n"
                "   # only a comment\n"
                "eta 65536", &h);
  OK(k == 9, "a hostfile with every form gives 9 hosts");
  if (k == 9) {
    OK(h[0].kind == FARM_HOST_SSH && !strcmp(h[0].host, "alpha") && h[0].port == 22 && !h[0].user[0] && h[0].workers == 0,
       "'host': SSH, port 22, the current user, the node decides the workers");
    OK(!strcmp(h[0].origin, "hosts:3"), "origin is FILE:LINE");
    OK(!strcmp(h[1].host, "beta") && h[1].workers == 4 && !strcmp(h[1].origin, "hosts:4"),
       "'host N' with surrounding whitespace and a trailing comment");
    OK(!strcmp(h[2].user, "bob") && !strcmp(h[2].host, "gamma.example.org") && h[2].port == 2222 && h[2].workers == 8,
       "'user@host:port N'");
    OK(!strcmp(h[3].host, "2001:db8::1") && h[3].port == 2222 && h[3].kind == FARM_HOST_SSH, "'[v6addr]:port', without brackets in host");
    OK(h[4].kind == FARM_HOST_NODE && !strcmp(h[4].host, "delta") && h[4].port == 7171 && h[4].workers == 16,
       "'node://host:port N' is a standing node");
    OK(h[5].kind == FARM_HOST_NODE && h[5].port == 7070 && h[5].workers == 0, "a node's port defaults to 7070");
    OK(!strcmp(h[6].host, "zeta_1") && h[6].port == 2200, "'host:sshport'");
    OK(!strcmp(h[7].user, "carol") && !strcmp(h[7].host, "::1") && h[7].port == 22, "'user@[v6addr]' without a port");
    OK(h[8].workers == 65536 && !strcmp(h[8].origin, "hosts:12"), "65536 workers, on a last line without a newline");
    farm__host_name(&h[0], name, sizeof name);
    OK(!strcmp(name, "alpha"), "name: the default port is not shown");
    farm__host_name(&h[2], name, sizeof name);
    OK(!strcmp(name, "bob@gamma.example.org:2222"), "name: user@host:port");
    farm__host_name(&h[3], name, sizeof name);
    OK(!strcmp(name, "[2001:db8::1]:2222"), "name: an IPv6 address with a port is in brackets");
    farm__host_name(&h[7], name, sizeof name);
    OK(!strcmp(name, "carol@::1"), "name: ...and without brackets when no port is shown");
    farm__host_name(&h[5], name, sizeof name);
    OK(!strcmp(name, "node://epsilon:7070"), "name: a node is node://host:port");
  }
  free(h);

  /* Errors in a file: FILE:LINE, the text quoted, the form expected. */
  OK(FILE_("a\n\nb x\n", &h) == -1 && h == NULL &&
     !strcmp(err, "hosts:3: bad worker count 'x'; a line is 'host [workers]', 'user@host:port [workers]' or 'node://host:port [workers]'"),
     "a bad worker count: the whole message");
  OK(FILE_("a 0\n", &h) == -1 && says("hosts:1: bad worker count '0'", "1 to 65536", NULL), "0 workers");
  OK(FILE_("a 65537\n", &h) == -1 && says("hosts:1: bad worker count '65537'", NULL, NULL), "65537 workers");
  OK(FILE_("a -4\n", &h) == -1 && says("hosts:1: bad worker count '-4'", NULL, NULL), "negative workers");
  OK(FILE_("a 4 5\n", &h) == -1 && says("hosts:1: too many fields 'a 4 5'", "a line is", NULL), "too many fields");
  OK(FILE_("a:0\n", &h) == -1 && says("hosts:1: bad port '0' in 'a:0'", "1 to 65535", NULL), "port 0");
  OK(FILE_("a:65536\n", &h) == -1 && says("hosts:1: bad port '65536'", NULL, NULL), "port 65536");
  OK(FILE_("u@a:ssh 2\n", &h) == -1 && says("hosts:1: bad port 'ssh' in 'u@a:ssh'", "a line is", NULL), "a port that is not a number");
  OK(FILE_("a:\n", &h) == -1 && says("hosts:1: bad port '' in 'a:'", NULL, NULL), "an empty port");
  OK(FILE_("u@:22\n", &h) == -1 && says("hosts:1: empty host in 'u@:22'", NULL, NULL), "an empty host");
  OK(FILE_("[]:22\n", &h) == -1 && says("hosts:1: empty host in '[]:22'", NULL, NULL), "empty brackets");
  OK(FILE_("@a\n", &h) == -1 && says("hosts:1: empty user in '@a'", NULL, NULL), "an empty user");
  OK(FILE_("ok\nh!x\n", &h) == -1 && says("hosts:2: bad character '!' in the host of 'h!x'", "a line is", NULL), "a bad character in a host");
  OK(FILE_("a$b@h\n", &h) == -1 && says("hosts:1: bad character '$' in the user of 'a$b@h'", NULL, NULL), "a bad character in a user");
  OK(FILE_("-oProxyCommand\n", &h) == -1 && says("hosts:1: bad character '-'", NULL, NULL), "a host may not start with '-'");
  OK(FILE_("[2001:db8::g]:22\n", &h) == -1 && says("hosts:1: bad character 'g'", "'[2001:db8::g]:22'", NULL), "a bracketed address is hex and ':'");
  OK(FILE_("[2001:db8::1\n", &h) == -1 && says("hosts:1: missing ']' in '[2001:db8::1'", NULL, NULL), "a missing ']'");
  OK(FILE_("[::1]x\n", &h) == -1 && says("hosts:1: bad character 'x' after ']'", NULL, NULL), "junk after ']'");
  OK(FILE_("2001:db8::1\n", &h) == -1 && says("hosts:1: an IPv6 address takes brackets", "'2001:db8::1'", NULL), "IPv6 without brackets");
  OK(FILE_("tcp://h:1\n", &h) == -1 && says("hosts:1: unknown scheme 'tcp' in 'tcp://h:1'", "node://", NULL), "an unknown scheme");
  OK(FILE_("node://u@h\n", &h) == -1 && says("hosts:1: a node:// host takes no user 'node://u@h'", NULL, NULL), "a node with a user");
  OK(FILE_("h\xc3\xa9\n", &h) == -1 && says("hosts:1: bad character '\\xc3'", NULL, NULL), "a non-ASCII byte, shown escaped");
  OK(file("hosts", "a\nb\0c\n", 6, &h) == -1 && says("hosts:2: a NUL byte", NULL, NULL), "a NUL byte");

  char line[400];
  memset(line, 'u', 63);
  strcpy(line + 63, "@h\n");
  OK(file("hosts", line, strlen(line), &h) == 1 && strlen(h[0].user) == 63, "a user of 63 bytes fits");
  free(h);
  memset(line, 'u', 64);
  strcpy(line + 64, "@h\n");
  OK(file("hosts", line, strlen(line), &h) == -1 && says("hosts:1: user too long in 'uuuu", "at most 63 bytes", NULL), "a user of 64 bytes is too long");
  memset(line, 'h', 255);
  strcpy(line + 255, " 2\n");
  OK(file("hosts", line, strlen(line), &h) == 1 && strlen(h[0].host) == 255, "a host of 255 bytes fits");
  free(h);
  memset(line, 'h', 256);
  strcpy(line + 256, "\n");
  OK(file("hosts", line, strlen(line), &h) == -1 && says("hosts:1: host too long in 'hhhh", "...'", "at most 255 bytes"),
     "a host of 256 bytes is too long, its quote cut short visibly");

  OK(FILE_("a\nb\n# c\nu@b\nB:22 3\n", &h) == -1 &&
     !strcmp(err, "hosts:5: duplicate host 'B' (also hosts:2); list each host once"), "a duplicate host names both lines");
  OK(FILE_("a\nb:2222\nu@b\nnode://b:22\nA:2222\n", &h) == 5, "another port, user or kind is another host");
  free(h);

  /* Files that are not there, or say nothing. */
  OK(farm__hosts_file("missing", &h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "cannot read hostfile 'missing': No such file or directory"), "a missing file");
  OK(FILE_("# nothing\n\n   \n", &h) == -1 && !strcmp(err, "hostfile 'hosts' lists no hosts"), "a file with no hosts");
  OK(FILE_("", &h) == -1 && !strcmp(err, "hostfile 'hosts' lists no hosts"), "an empty file");
  OK(farm__hosts_file(".", &h, err, sizeof err) == -1 && says("cannot read hostfile '.'", NULL, NULL), "a directory");
  char longpath[400] = "";
  for (int i = 0; i < 160; i++) strcat(longpath, "./");
  strcat(longpath, "hosts");
  OK(FILE_("a\n", &h) == 1, "a file of one host");
  free(h);
  OK(farm__hosts_file(longpath, &h, err, sizeof err) == -1 && says("hostfile name too long", NULL, NULL),
     "a path too long for the origin is an error, not cut short");
  char tiny[8];
  OK(farm__hosts_file("missing", &h, tiny, sizeof tiny) == -1 && strlen(tiny) == 7, "a small err buffer is filled, not overrun");

  /* --hosts lists. */
  k = list("h1, user@h2:2222 ,node://h3:7070,[::1]:22", &h);
  OK(k == 4 && !strcmp(h[0].host, "h1") && !strcmp(h[1].user, "user") && h[1].port == 2222 &&
     h[2].kind == FARM_HOST_NODE && !strcmp(h[3].host, "::1") && h[3].port == 22,
     "a --hosts list of four items");
  OK(k == 4 && !strcmp(h[0].origin, "--hosts item 1") && !strcmp(h[3].origin, "--hosts item 4"), "origin is '--hosts item K'");
  if (k > 0) free(h);
  OK(list("a,h 4", &h) == -1 && h == NULL && says("--hosts item 2: no worker count in a --hosts item 'h 4'", "an item is", NULL),
     "a worker count inside an item says so");
  OK(list("a b", &h) == -1 && says("--hosts item 1: spaces in a --hosts item 'a b'", NULL, NULL), "spaces inside an item");
  OK(list("a,,b", &h) == -1 && says("--hosts item 2: empty item in 'a,,b'", NULL, NULL), "an empty item");
  OK(list("a,", &h) == -1 && says("--hosts item 2: empty item", NULL, NULL), "a trailing comma");
  OK(list("", &h) == -1 && says("--hosts: empty list ''", "an item is", NULL), "an empty list");
  OK(list(NULL, &h) == -1 && says("--hosts: empty list", NULL, NULL), "no list");
  OK(list("a,b:x", &h) == -1 && says("--hosts item 2: bad port 'x' in 'b:x'", "an item is", NULL), "a bad port in an item");
  OK(list("a,tcp://h:1", &h) == -1 && says("--hosts item 2: unknown scheme 'tcp'", NULL, NULL), "an unknown scheme in an item");
  OK(list("a,b,a:22", &h) == -1 && !strcmp(err, "--hosts item 3: duplicate host 'a' (also --hosts item 1); list each host once"),
     "a duplicate item names both items");
  OK(list("a#b", &h) == -1 && says("bad character '#'", NULL, NULL), "no comments in a list");

  /* Names for what was set. */
  farm_host x = {.kind = FARM_HOST_NODE, .host = "::1", .port = 7070};
  farm__host_name(&x, name, sizeof name);
  OK(!strcmp(name, "node://[::1]:7070"), "name: a node at an IPv6 address");
  x = (farm_host){.kind = FARM_HOST_SSH, .user = "u", .host = "h", .port = 22};
  farm__host_name(&x, name, 3);
  OK(!strcmp(name, "u@"), "name: cut to the buffer given");

  unlink("hosts");
  if (chdir(cwd) != 0 || rmdir(dir) != 0) { perror(dir); fails++; }
  err[0] = '\0';
  OK(access(dir, F_OK) != 0, "the temporary directory is gone");
  printf("1..%d\n", n);
  return fails != 0;
}
