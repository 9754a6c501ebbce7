/*
 * test_hosts.c -- hostfiles and --hosts lists (hosts.c): every form a line or
 * an item may take, and every way one may be wrong, each an error of one line
 * that names the file and line (or the list item) and quotes the text. The
 * hostfiles are real files in a temporary directory, removed at the end.
 * Then the batch schedulers' allocations: Slurm's hostlist and CPU counts
 * against Slurm's own forms and errors, PBS and SGE host files written here,
 * and each of them, and auto, read from the environment this test sets. TAP.
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

/* Write text to the file `name` in the current directory. */
static void put(const char *name, const char *text) {
  FILE *f = fopen(name, "wb");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0) { perror(name); exit(2); }
}

/* Expand a hostlist into "name name ..." (or "" on an error), freeing the names. */
static int count;
static char last[300];                          /* the last name */
static const char *expand(const char *s) {
  static char out[4096];
  last[0] = '\0';
  char **v = (char **)&count;                  /* not NULL: the call must set it */
  err[0] = out[0] = '\0';
  count = farm__hostlist_expand(s, &v, err, sizeof err);
  if (count < 0) return v == NULL ? "" : "(names not NULL)";
  for (int i = 0; i < count; i++)
    if (strlen(out) + strlen(v[i]) + 2 < sizeof out) strcat(strcat(out, i ? " " : ""), v[i]);
  if (count > 0) snprintf(last, sizeof last, "%s", v[count - 1]);
  farm__hostlist_free(v, count);
  return out;
}

/* Expand a CPU count list for n nodes into "c c ..." (or "" on an error). */
static const char *cpus(const char *s, int n) {
  static char out[512];
  int v[16];
  err[0] = out[0] = '\0';
  if (farm__cpus_per_node(s, n, v, err, sizeof err) != n) return "";
  for (int i = 0; i < n; i++) snprintf(out + strlen(out), sizeof out - strlen(out), "%s%d", i ? " " : "", v[i]);
  return out;
}

/* Clear every variable of a scheduler, so that only what a test sets is seen. */
static void clearenv_(void) {
  const char *vars[] = {"SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_JOB_CPUS_PER_NODE",
                        "SLURM_TASKS_PER_NODE", "PBS_NODEFILE", "PE_HOSTFILE"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

/* err says all of these, on one line. */
static int says(const char *a, const char *b, const char *c) {
  return strstr(err, a) && (!b || strstr(err, b)) && (!c || strstr(err, c)) && !strchr(err, '\n');
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);     /* each line as its check ends: run-test watches them */
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
  x = (farm_host){.kind = FARM_HOST_NODE, .host = "h", .port = 22};
  farm__host_name(&x, name, sizeof name);
  OK(!strcmp(name, "node://h:22"), "name: a node is its URL, port and all, even on SSH's port");
  x = (farm_host){.kind = FARM_HOST_SSH, .user = "u", .host = "h", .port = 22};
  farm__host_name(&x, name, 3);
  OK(!strcmp(name, "u@"), "name: cut to the buffer given");

  /* ---- Slurm's hostlist syntax, as SLURM_JOB_NODELIST holds it ---- */
  OK(!strcmp(expand("cn[01-04,07]"), "cn01 cn02 cn03 cn04 cn07") && count == 5, "cn[01-04,07]: a range and a number, zero padding kept");
  OK(!strcmp(expand("a,b"), "a b"), "a,b: plain names");
  OK(!strcmp(expand("cn01"), "cn01") && count == 1, "one plain name");
  OK(!strcmp(expand("n[5]"), "n5"), "n[5]: one number in brackets");
  OK(!strcmp(expand("n[1-3]-x[01-02]"), "n1-x01 n1-x02 n2-x01 n2-x02 n3-x01 n3-x02"),
     "n[1-3]-x[01-02]: the product, the last bracket fastest (Slurm's order)");
  OK(!strcmp(expand("rack[1-2]-n[1-3]"), "rack1-n1 rack1-n2 rack1-n3 rack2-n1 rack2-n2 rack2-n3"), "rack[1-2]-n[1-3]");
  OK(!strcmp(expand("node-1.cluster.org,my_host-2.ib"), "node-1.cluster.org my_host-2.ib"), "names with dashes, dots and '_'");
  OK(!strcmp(expand("a,b[1-2],c"), "a b1 b2 c"), "items with and without brackets mixed");
  OK(!strcmp(expand("x[1,3,5-6],y[09-10],z"), "x1 x3 x5 x6 y09 y10 z"), "commas inside brackets belong to the bracket");
  OK(!strcmp(expand("n[8-11]"), "n8 n9 n10 n11"), "no padding: widths grow");
  OK(!strcmp(expand("n[098-101]"), "n098 n099 n100 n101"), "padding to the low number's width");
  OK(!strcmp(expand("n[1-2].ib,gpu[3]x"), "n1.ib n2.ib gpu3x"), "text after a bracket");
  OK(!strcmp(expand("[1-2],n[3,1]"), "1 2 n3 n1"), "a bracket alone; numbers in the order given");
  OK(!strncmp(expand("n[1-65536]"), "n1 n2 ", 6) && count == 65536 && !strcmp(last, "n65536"), "65536 names: the limit");
  OK(!strncmp(expand("a[1-256]b[1-256]"), "a1b1 a1b2 ", 10) && count == 65536 && !strcmp(last, "a256b256"), "256 x 256 names");

  /* ...and its errors: one line naming the variable and quoting the list. */
  OK(!strcmp(expand("cn[01-"), "") && count == -1 &&
     !strcmp(err, "malformed host list 'cn[01-' (SLURM_JOB_NODELIST): '[' without ']' in 'cn[01-'"),
     "an unclosed '[': the whole message");
  OK(!strcmp(expand("a,cn01]"), "") && says("malformed host list 'a,cn01]' (SLURM_JOB_NODELIST): ']' without '[' in 'cn01]'", NULL, NULL),
     "a ']' without '['");
  OK(!strcmp(expand("n[1[2]]"), "") && says("nested '[' in 'n[1[2]]'", NULL, NULL), "nested brackets");
  OK(!strcmp(expand("n[5-3]"), "") && says("bad range '5-3' in 'n[5-3]' (5 is more than 3)", NULL, NULL), "a range that goes down");
  OK(!strcmp(expand("n[4-3]"), "") && says("bad range '4-3' in 'n[4-3]' (4 is more than 3)", NULL, NULL),
     "a range that goes down by one");
  OK(!strncmp(expand("n[3-3]"), "n3", 2) && count == 1, "a range of one");
  OK(!strcmp(expand("n[a-3]"), "") && says("bad range 'a-3' in 'n[a-3]'", "a range is 'N' or 'N-M', in digits", NULL), "letters in a range");
  OK(!strcmp(expand("n[1-2-3]"), "") && says("bad range '1-2-3'", NULL, NULL), "two dashes in a range");
  OK(!strcmp(expand("n[-3]"), "") && says("bad range '-3'", NULL, NULL), "a negative number");
  OK(!strcmp(expand("n[1, 2]"), "") && says("bad range ' 2'", NULL, NULL), "a space in a range");
  OK(!strcmp(expand("n[]"), "") && says("an empty range in 'n[]'", NULL, NULL), "empty brackets");
  OK(!strcmp(expand("n[1,]"), "") && says("an empty range in 'n[1,]'", NULL, NULL), "an empty range after a comma");
  OK(!strcmp(expand("a,,b"), "") && says("(SLURM_JOB_NODELIST): item 2 is empty", NULL, NULL), "an empty item");
  OK(!strcmp(expand("a,"), "") && says("item 2 is empty", NULL, NULL), "a trailing comma");
  OK(!strcmp(expand(",a"), "") && says("item 1 is empty", NULL, NULL), "a leading comma");
  OK(!strcmp(expand(""), "") && !strcmp(err, "malformed host list '' (SLURM_JOB_NODELIST): the list is empty"), "an empty list");
  OK(!strcmp(expand(NULL), "") && says("the list is empty", NULL, NULL), "no list");
  OK(!strcmp(expand("n[1-99999999]"), "") && says("more than 65536 names, at 'n[1-99999999]'", NULL, NULL),
     "n[1-99999999] is refused, not made");
  OK(!strcmp(expand("n[1-65536],a"), "") && says("more than 65536 names, at 'a'", NULL, NULL), "65537 names in all");
  OK(!strcmp(expand("a[1-300]b[1-300]"), "") && says("more than 65536 names", NULL, NULL), "a product too large");
  OK(!strcmp(expand("n[1-999999999][1-999999999][1-999999999]"), "") && says("more than 65536 names", NULL, NULL),
     "a product that would overflow");
  OK(!strcmp(expand("n[1234567890]"), "") && says("a number too large in 'n[1234567890]' (at most 999999999)", NULL, NULL),
     "a number too large");
  OK(!strcmp(expand("ok,h!x"), "") && says("bad character '!' in 'h!x'", "a name is letters", NULL), "a bad character");
  OK(!strcmp(expand("a b"), "") && says("bad character '\\x20' in 'a b'", NULL, NULL), "a space between names");
  OK(!strcmp(expand("-oProxyCommand"), "") && says("bad character '-' in '-oProxyCommand'", NULL, NULL), "a name may not start with '-'");
  memset(line, 'a', 253);
  strcpy(line + 253, "[1-99]");
  OK(*expand(line) && count == 99 && strlen(last) == 255 && !strcmp(last + 253, "99"), "names of 255 bytes fit");
  strcpy(line + 253, "[1-100]");
  OK(!strcmp(expand(line), "") && says("a name longer than 255 bytes in 'aaaa", "...'", NULL), "a name of 256 bytes is too long, quoted cut short");
  OK(!strcmp(expand("n[1-3]\n"), "") && says("bad character '\\x0a'", NULL, NULL), "a newline is shown escaped, err stays one line");
  farm__hostlist_free(NULL, 0);

  /* ---- SLURM_JOB_CPUS_PER_NODE ---- */
  OK(!strcmp(cpus("2(x3),1", 4), "2 2 2 1"), "2(x3),1");
  OK(!strcmp(cpus("4", 1), "4"), "4");
  OK(!strcmp(cpus("36(x2)", 2), "36 36"), "36(x2)");
  OK(!strcmp(cpus("1,8(x2),65536", 4), "1 8 8 65536"), "several items, up to 65536 CPUs");
  OK(!strcmp(cpus("2(x3),1", 5), "") &&
     !strcmp(err, "SLURM_JOB_CPUS_PER_NODE '2(x3),1': counts for 4 nodes, SLURM_JOB_NODELIST has 5"), "too few nodes: the whole message");
  OK(!strcmp(cpus("2(x3),1", 3), "") && says("SLURM_JOB_CPUS_PER_NODE '2(x3),1': counts for more than the 3 nodes", NULL, NULL),
     "too many nodes");
  OK(!strcmp(cpus("2(x99999),1", 3), "") && says("bad repeat '2(x99999)' (1 to 65536)", NULL, NULL), "a repeat too large");
  OK(!strcmp(cpus("2(x0)", 1), "") && says("bad repeat '2(x0)'", NULL, NULL), "a repeat of 0");
  OK(!strcmp(cpus("0", 1), "") && says("SLURM_JOB_CPUS_PER_NODE '0': bad CPU count '0' (1 to 65536)", NULL, NULL), "0 CPUs");
  OK(!strcmp(cpus("x", 1), "") && says("bad item 'x'", "an item is 'N' or 'N(xM)'", NULL), "letters");
  OK(!strcmp(cpus("2(3)", 3), "") && says("bad item '2(3)'", NULL, NULL), "a repeat without 'x'");
  OK(!strcmp(cpus("2(x3", 3), "") && says("bad item '2(x3'", NULL, NULL), "an unclosed '('");
  OK(!strcmp(cpus("(x3)", 3), "") && says("bad item '(x3)'", NULL, NULL), "a repeat without a count");
  OK(!strcmp(cpus("2,,1", 3), "") && says("bad item ''", NULL, NULL), "an empty item");
  OK(!strcmp(cpus("", 1), "") && says("SLURM_JOB_CPUS_PER_NODE '': bad item ''", NULL, NULL), "an empty list");

  /* ---- PBS: $PBS_NODEFILE ---- */
  char path[300];
  clearenv_();
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "--nodes pbs: not inside a PBS job (PBS_NODEFILE is not set)"), "PBS outside a job");
  snprintf(path, sizeof path, "%.250s/nodefile", dir);
  put("nodefile", "c1\nc1\nc2\nc1\n\nc3\nC2\nc3 \n");
  setenv("PBS_NODEFILE", path, 1);
  k = farm__hosts_pbs(&h, err, sizeof err);
  OK(k == 3 && !strcmp(h[0].host, "c1") && !strcmp(h[1].host, "c2") && !strcmp(h[2].host, "c3"),
     "PBS: each host once, in the order it first appears");
  OK(k == 3 && h[0].workers == 3 && h[1].workers == 2 && h[2].workers == 2, "PBS: a host's lines are its workers (any case)");
  snprintf(name, sizeof name, "%.300s:3", path);
  OK(k == 3 && h[0].kind == FARM_HOST_SSH && h[1].port == 22 && !h[1].user[0] && !strcmp(h[1].origin, name),
     "PBS: SSH hosts, port 22, origin FILE:LINE of the first line");
  if (k > 0) free(h);
  put("nodefile", "");
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && h == NULL && says("PBS_NODEFILE '", "/nodefile' lists no hosts", NULL),
     "PBS: an empty file");
  put("nodefile", "c1\nc2 4\n");
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && says("/nodefile:2: too many fields on the line", "a PBS_NODEFILE line is one host name", NULL),
     "PBS: two fields on a line");
  put("nodefile", "c1\nc$2\n");
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && says("/nodefile:2: bad character '$' in the host 'c$2'", NULL, NULL),
     "PBS: a bad host name");
  unlink("nodefile");
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && says("cannot read PBS_NODEFILE '", "/nodefile': No such file or directory", NULL),
     "PBS: a missing file");
  setenv("PBS_NODEFILE", dir, 1);
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && says("cannot read PBS_NODEFILE '", "Is a directory", NULL), "PBS: a directory");
  setenv("PBS_NODEFILE", "", 1);
  OK(farm__hosts_pbs(&h, err, sizeof err) == -1 && !strcmp(err, "--nodes pbs: not inside a PBS job (PBS_NODEFILE is empty)"),
     "PBS: an empty variable");
  unsetenv("PBS_NODEFILE");

  /* ---- SGE: $PE_HOSTFILE ---- */
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "--nodes sge: not inside an SGE job (PE_HOSTFILE is not set)"), "SGE outside a job");
  setenv("PE_HOSTFILE", "pe", 1);
  put("pe", "node02 4 all.q@node02 UNDEFINED\n"
            "node01.example.org 2 all.q@node01 <NULL>\n"
            "node02 1 gpu.q@node02 UNDEFINED\n"
            "node03 8\n");
  k = farm__hosts_sge(&h, err, sizeof err);
  OK(k == 3 && !strcmp(h[0].host, "node02") && !strcmp(h[1].host, "node01.example.org") && !strcmp(h[2].host, "node03"),
     "SGE: hosts in order");
  OK(k == 3 && h[0].workers == 5 && h[1].workers == 2 && h[2].workers == 8, "SGE: slots are workers, summed over a host's queues");
  OK(k == 3 && h[1].kind == FARM_HOST_SSH && h[1].port == 22 && !strcmp(h[1].origin, "pe:2"), "SGE: SSH hosts, origin FILE:LINE");
  if (k > 0) free(h);
  put("pe", "node01 4 all.q@node01 UNDEFINED\nnode02 x all.q@node02 UNDEFINED\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "pe:2: bad slot count 'x'; a PE_HOSTFILE line is 'host slots queue processors'"), "SGE: a bad slot count, the whole message");
  put("pe", "node01 0 all.q UNDEFINED\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && says("pe:1: bad slot count '0' (1 to 65536)", NULL, NULL), "SGE: 0 slots");
  put("pe", "node01\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && says("pe:1: no slot count after 'node01'", NULL, NULL), "SGE: a host alone");
  put("pe", "node01 1 q p extra\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && says("pe:1: too many fields", NULL, NULL), "SGE: five fields");
  put("pe", "\n\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && !strcmp(err, "PE_HOSTFILE 'pe' lists no hosts"), "SGE: a file of blank lines");
  put("pe", "node01 60000 a\nnode01 6000 b\n");
  OK(farm__hosts_sge(&h, err, sizeof err) == -1 && says("pe:2: more than 65536 slots for 'node01'", NULL, NULL), "SGE: a sum too large");
  unsetenv("PE_HOSTFILE");

  /* ---- Slurm from the environment ---- */
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "--nodes slurm: not inside a Slurm allocation (SLURM_JOB_NODELIST is not set); run farm inside salloc or an sbatch script"),
     "Slurm outside an allocation: the whole message");
  setenv("SLURM_JOB_NODELIST", "cn[01-02],gpu1", 1);
  setenv("SLURM_JOB_CPUS_PER_NODE", "8(x2),4", 1);
  k = farm__hosts_slurm(&h, err, sizeof err);
  OK(k == 3 && !strcmp(h[0].host, "cn01") && !strcmp(h[1].host, "cn02") && !strcmp(h[2].host, "gpu1"), "Slurm: the nodes, in order");
  OK(k == 3 && h[0].kind == FARM_HOST_SLURM && h[2].kind == FARM_HOST_SLURM && h[0].port == 0 && !h[0].user[0],
     "Slurm: FARM_HOST_SLURM hosts");
  OK(k == 3 && h[0].workers == 8 && h[1].workers == 8 && h[2].workers == 4, "Slurm: each node's CPUs are its workers");
  OK(k == 3 && !strcmp(h[0].origin, "SLURM_JOB_NODELIST item 1") && !strcmp(h[2].origin, "SLURM_JOB_NODELIST item 3"),
     "Slurm: origin 'SLURM_JOB_NODELIST item K'");
  if (k == 3) farm__host_name(&h[2], name, sizeof name);
  OK(k == 3 && !strcmp(name, "gpu1"), "name: a Slurm node is its name");
  if (k > 0) free(h);
  setenv("SLURM_JOB_CPUS_PER_NODE", "8(x2)", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "SLURM_JOB_CPUS_PER_NODE '8(x2)': counts for 2 nodes, SLURM_JOB_NODELIST has 3"), "Slurm: CPUs for too few nodes");
  unsetenv("SLURM_JOB_CPUS_PER_NODE");
  k = farm__hosts_slurm(&h, err, sizeof err);
  OK(k == 3 && h[0].workers == 0 && h[2].workers == 0, "Slurm: no CPU counts, the node decides");
  if (k > 0) free(h);
  setenv("SLURM_TASKS_PER_NODE", "1(x3)", 1);
  k = farm__hosts_slurm(&h, err, sizeof err);
  OK(k == 3 && h[0].workers == 1 && h[2].workers == 1, "Slurm: SLURM_TASKS_PER_NODE as a fallback");
  if (k > 0) free(h);
  setenv("SLURM_TASKS_PER_NODE", "1(x2", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && says("SLURM_TASKS_PER_NODE '1(x2': bad item", NULL, NULL),
     "Slurm: its errors name the variable read");
  unsetenv("SLURM_TASKS_PER_NODE");
  setenv("SLURM_JOB_NODELIST", "cn[01-", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && h == NULL &&
     !strcmp(err, "malformed host list 'cn[01-' (SLURM_JOB_NODELIST): '[' without ']' in 'cn[01-'"), "Slurm: a malformed list");
  setenv("SLURM_JOB_NODELIST", "a,b,A", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 &&
     !strcmp(err, "SLURM_JOB_NODELIST item 3: duplicate host 'A' (also SLURM_JOB_NODELIST item 1); list each host once"),
     "Slurm: a node listed twice");
  setenv("SLURM_JOB_NODELIST", "", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && says("(SLURM_JOB_NODELIST is empty)", NULL, NULL), "Slurm: an empty variable");
  unsetenv("SLURM_JOB_NODELIST");
  setenv("SLURM_NODELIST", "old[1-2]", 1);
  k = farm__hosts_slurm(&h, err, sizeof err);
  OK(k == 2 && !strcmp(h[1].host, "old2") && !strcmp(h[1].origin, "SLURM_NODELIST item 2"), "Slurm: SLURM_NODELIST as a fallback");
  if (k > 0) free(h);
  setenv("SLURM_NODELIST", "old[2-1]", 1);
  OK(farm__hosts_slurm(&h, err, sizeof err) == -1 && says("malformed host list 'old[2-1]' (SLURM_NODELIST): bad range", NULL, NULL),
     "Slurm: the fallback's errors name it");
  unsetenv("SLURM_NODELIST");

  /* ---- auto, and what --nodes ARG means ---- */
  const char *which = NULL;
  h = (farm_host *)&which;
  OK(farm__hosts_auto(&h, &which, err, sizeof err) == 0 && h == NULL && which && !strcmp(which, "local"),
     "auto: no scheduler, no hosts: the local pool");
  put("pe", "s1 2\n");
  put("nodefile", "p1\n");
  setenv("PE_HOSTFILE", "pe", 1);
  k = farm__hosts_auto(&h, &which, err, sizeof err);
  OK(k == 1 && !strcmp(which, "sge") && !strcmp(h[0].host, "s1") && h[0].workers == 2, "auto: SGE");
  if (k > 0) free(h);
  setenv("PBS_NODEFILE", "nodefile", 1);
  k = farm__hosts_auto(&h, &which, err, sizeof err);
  OK(k == 1 && !strcmp(which, "pbs") && !strcmp(h[0].host, "p1"), "auto: PBS before SGE");
  if (k > 0) free(h);
  setenv("SLURM_JOB_NODELIST", "n[1-2]", 1);
  k = farm__hosts_auto(&h, &which, err, sizeof err);
  OK(k == 2 && !strcmp(which, "slurm") && h[1].kind == FARM_HOST_SLURM, "auto: Slurm before PBS");
  if (k > 0) free(h);
  setenv("SLURM_JOB_NODELIST", "n[", 1);
  OK(farm__hosts_auto(&h, &which, err, sizeof err) == -1 && h == NULL && !strcmp(which, "slurm") &&
     says("malformed host list 'n['", NULL, NULL), "auto: the error of the scheduler found");
  setenv("SLURM_JOB_NODELIST", "n[1-2]", 1);
  k = farm__hosts_named("slurm", &h, err, sizeof err);
  OK(k == 2 && h[0].kind == FARM_HOST_SLURM, "--nodes slurm");
  if (k > 0) free(h);
  k = farm__hosts_named("pbs", &h, err, sizeof err);
  OK(k == 1 && !strcmp(h[0].host, "p1"), "--nodes pbs");
  if (k > 0) free(h);
  k = farm__hosts_named("sge", &h, err, sizeof err);
  OK(k == 1 && !strcmp(h[0].host, "s1"), "--nodes sge");
  if (k > 0) free(h);
  k = farm__hosts_named("auto", &h, err, sizeof err);
  OK(k == 2 && h[0].kind == FARM_HOST_SLURM, "--nodes auto");
  if (k > 0) free(h);
  clearenv_();
  OK(farm__hosts_named("auto", &h, err, sizeof err) == 0 && h == NULL, "--nodes auto outside any job: 0 hosts");
  put("slurm", "f1 2\n");
  OK(farm__hosts_named("slurm", &h, err, sizeof err) == -1 && says("--nodes slurm: not inside a Slurm allocation", NULL, NULL),
     "--nodes slurm is the allocation even with a file named slurm here");
  k = farm__hosts_named("./slurm", &h, err, sizeof err);
  OK(k == 1 && !strcmp(h[0].host, "f1") && h[0].workers == 2 && !strcmp(h[0].origin, "./slurm:1"), "--nodes ./slurm is that file");
  if (k > 0) free(h);
  OK(farm__hosts_named("missing", &h, err, sizeof err) == -1 && !strcmp(err, "cannot read hostfile 'missing': No such file or directory"),
     "--nodes FILE: a hostfile");
  OK(farm__hosts_named(NULL, &h, err, sizeof err) == -1 && says("--nodes: no hostfile given", NULL, NULL), "--nodes with nothing");
  unlink("slurm");
  unlink("pe");
  unlink("nodefile");

  unlink("hosts");
  if (chdir(cwd) != 0 || rmdir(dir) != 0) { perror(dir); fails++; }
  err[0] = '\0';
  OK(access(dir, F_OK) != 0, "the temporary directory is gone");
  printf("1..%d\n", n);
  return fails != 0;
}
