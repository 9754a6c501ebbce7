/*
 * test_ssh.c -- the SSH launcher (core/ssh.c) against a real OpenSSH sshd on
 * 127.0.0.1 with throwaway keys (scripts/sshd-testbed): running a command and
 * reading its first line, what happens to it when the session closes, host key
 * checks by OpenSSH's rules (unknown, accept-new, changed, a portless line for
 * another port, hashed lines, @revoked keys), refused logins (a wrong key, an RSA key), a
 * command that is not there, an unknown host name and a closed port. Runs from
 * the top of the tree, with HOME in the test bed. Everything it starts it
 * stops. TAP.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "farm.h"
#include "ssh.h"

static int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); fflush(stdout); } while (0)

static char dir[200];              /* the test bed */
static int port;
static volatile sig_atomic_t started;

/* scripts/sshd-testbed ARGS..., with fork and exec only (also from a signal
   handler), its signal mask cleared; returns its exit status */
static int testbed(const char *what, const char *port_arg) {
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execl("/bin/sh", "sh", "scripts/sshd-testbed", what, dir, port_arg, (char *)NULL);
    _exit(127);
  }
  if (pid < 0) return -1;
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static volatile pid_t agent;        /* an ssh-agent this test started */

static void agent_stop(void) {
  pid_t a = agent;
  agent = 0;
  if (a > 0) { kill(a, SIGTERM); while (waitpid(a, NULL, 0) < 0 && errno == EINTR) {} }
}

static void testbed_stop(void) {
  agent_stop();
  if (!started) return;
  started = 0;
  testbed("stop", NULL);
}

static void on_signal(int sig) {
  testbed_stop();
  signal(sig, SIG_DFL);
  raise(sig);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) { fputs(text, f); fclose(f); }
}

static char *get(const char *path) {
  static char buf[8192];
  buf[0] = 0;
  FILE *f = fopen(path, "r");
  if (!f) return buf;
  size_t k = fread(buf, 1, sizeof buf - 1, f);
  buf[k] = 0;
  fclose(f);
  return buf;
}

/* "type base64" of a .pub file */
static void pubkey(const char *path, char *out, size_t n) {
  char *s = get(path), *sp = strchr(s, ' ');
  sp = sp ? strchr(sp + 1, ' ') : NULL;
  if (sp) *sp = 0;
  s[strcspn(s, "\n")] = 0;
  snprintf(out, n, "%s", s);
}

/* how many processes have a command line matching the regex */
static int procs(const char *regex) {
  char cmd[300], l[512];
  snprintf(cmd, sizeof cmd, "pgrep -f '%s'", regex);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  int k = 0;
  while (fgets(l, sizeof l, p)) k++;
  pclose(p);
  return k;
}

static int gone_within(const char *regex, double secs) {
  double end = now_s() + secs;
  while (procs(regex) > 0) {
    if (now_s() > end) return 0;
    usleep(50000);
  }
  return 1;
}

static char logged[4096];
static void logline(void *ud, const char *line) {
  (void)ud;
  size_t k = strlen(logged);
  snprintf(logged + k, sizeof logged - k, "%s|", line);
}

static char line[256], err[1024];

static int launch(farm_ssh **s, const char *user, const char *host, int p, const char *cmd,
                  const char *in, int accept_new, double timeout) {
  farm_ssh_opts o = { .user = user, .host = host, .port = p, .command = cmd, .input = in,
                      .ninput = in ? strlen(in) : 0, .accept_new = accept_new, .timeout = timeout };
  farm_ssh *tmp = NULL;
  int rc = farm__ssh_launch(s ? s : &tmp, &o, line, sizeof line, err, sizeof err);
  if (rc < 0) printf("# %s\n", err);
  farm__ssh_close(tmp);
  return rc;
}

/* launch `echo up` and close: 0, or the error */
static int try_login(void) {
  farm_ssh *s = NULL;
  int rc = launch(&s, NULL, "127.0.0.1", port, "echo up", NULL, 0, 10);
  if (rc == 0 && strcmp(line, "up")) rc = -100;
  farm__ssh_close(s);
  return rc;
}

static int has(const char *s, const char *what) { return strstr(s, what) != NULL; }

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  signal(SIGPIPE, SIG_IGN);

  pid_t me = getpid();
  snprintf(dir, sizeof dir, "/tmp/farm-test-ssh-%ld", (long)me);
  int up = 0;
  sigset_t stops, was;                /* a signal while it starts: stop it once it has */
  sigemptyset(&stops);
  sigaddset(&stops, SIGINT);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGHUP);
  for (int i = 0; i < 5 && !up; i++) {
    port = 20000 + (int)((me + i * 7919) % 20000);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    sigprocmask(SIG_BLOCK, &stops, &was);
    started = 1;
    up = testbed("start", ps) == 0;
    sigprocmask(SIG_SETMASK, &was, NULL);
    if (!up) testbed_stop();
  }
  if (!up) {
    printf("Bail out! cannot start sshd (scripts/sshd-testbed start %s PORT)\n", dir);
    return 1;
  }
  atexit(testbed_stop);

  char home[300], ssh_dir[320], kh[360], path[400], hostkey[200], other[200], want[600], tmp[1200];
  snprintf(home, sizeof home, "%s/home", dir);
  snprintf(ssh_dir, sizeof ssh_dir, "%s/.ssh", home);
  snprintf(kh, sizeof kh, "%s/known_hosts", ssh_dir);
  setenv("HOME", home, 1);
  unsetenv("SSH_AUTH_SOCK");
  struct passwd *pw = getpwuid(getuid());
  const char *me_name = pw ? pw->pw_name : "root";
  setenv("USER", me_name, 1);
  snprintf(path, sizeof path, "%s/hostkey.pub", dir);
  pubkey(path, hostkey, sizeof hostkey);
  sh("ssh-keygen -q -t ed25519 -N '' -C other -f %s/other", dir);
  snprintf(path, sizeof path, "%s/other.pub", dir);
  pubkey(path, other, sizeof other);
  char good[400];
  snprintf(good, sizeof good, "[127.0.0.1]:%d %s\n", port, hostkey);
  char marker[64], regex[64];
  snprintf(marker, sizeof marker, "farm-ssh-test-marker-%ld", (long)me);
  snprintf(regex, sizeof regex, "farm-ssh-test-marke[r]-%ld", (long)me);

  /* ---- running a command ---- */
  farm_ssh *s = NULL;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "read k; echo \"got:$k\"; cat >/dev/null; echo bye >&2; : %s-1", marker);
  int rc = launch(&s, NULL, "127.0.0.1", port, cmd, "secret\n", 0, 10);
  OK(rc == 0 && s, "launch runs the command over SSH");
  OK(!strcmp(line, "got:secret"), "it returns the first line, which saw the input on stdin");
  OK(s && !strcmp(farm__ssh_addr(s), "127.0.0.1"), "farm__ssh_addr is the numeric address it connected to");
  OK(s && farm__ssh_fd(s) >= 0, "farm__ssh_fd is the session's socket");
  snprintf(tmp, sizeof tmp, "%s-1", regex);
  OK(procs(tmp) >= 1, "the command runs there while the session is open");
  char why[300];
  double t0 = now_s();
  rc = s ? farm__ssh_poll(s, logline, NULL, why, sizeof why) : -1;
  OK(rc == 0 && now_s() - t0 < 0.5, "farm__ssh_poll returns 0 at once while it runs");
  usleep(200000);
  OK(procs(tmp) >= 1, "it is still there a while later (its stdin stays open)");
  t0 = now_s();
  farm__ssh_close(s);
  s = NULL;
  OK(now_s() - t0 < 2.0, "farm__ssh_close returns within its bound");
  OK(gone_within(tmp, 5.0), "after farm__ssh_close the command is gone (its stdin closed)");
  farm__ssh_close(NULL);
  OK(1, "farm__ssh_close(NULL) is fine");

  logged[0] = 0;
  rc = launch(&s, me_name, "127.0.0.1", port, "echo ready; echo more; echo oops >&2; exit 3", NULL, 0, 10);
  OK(rc == 0 && !strcmp(line, "ready"), "launch with the user named");
  int prc = 0;
  double end = now_s() + 5;
  while (s && prc == 0 && now_s() < end) {
    struct pollfd p = { .fd = farm__ssh_fd(s), .events = POLLIN };
    poll(&p, 1, 200);
    prc = farm__ssh_poll(s, logline, NULL, why, sizeof why);
  }
  printf("# why: %s; logged: %s\n", why, logged);
  OK(prc == 1, "farm__ssh_poll returns 1 once the command has exited by itself");
  OK(has(why, "exited with status 3") && has(why, "oops"), "with its exit status and last stderr line");
  OK(has(logged, "more|") && has(logged, "oops|"), "stdout and stderr lines went to log");
  OK(s && farm__ssh_poll(s, logline, NULL, why, sizeof why) == 1, "and keeps saying so");
  farm__ssh_close(s);
  s = NULL;

  rc = launch(NULL, NULL, "127.0.0.1", port, "echo boom >&2; exit 5", NULL, 0, 10);
  OK(rc == FARM_ESSH && has(err, "exited with status 5") && has(err, "(boom)"),
     "a command that exits before its first line: its status and stderr");
  rc = launch(NULL, NULL, "127.0.0.1", port, "nonexistent-farm-xyz node", NULL, 0, 10);
  snprintf(want, sizeof want, "host 127.0.0.1:%d: 'nonexistent-farm-xyz' was not found there (", port);
  OK(rc == FARM_ESSH && !strncmp(err, want, strlen(want)) && has(err, "not found)") &&
     has(err, "; install nonexistent-farm-xyz there or pass --remote-farm PATH"),
     "a command that is not there: 'NAME' was not found there ... --remote-farm PATH");
  rc = launch(NULL, NULL, "127.0.0.1", port, "exec 'nonexistent-farm-xyz' node --launched", "secret\n", 0, 10);
  OK(rc == FARM_ESSH && has(err, "'nonexistent-farm-xyz' was not found there"),
     "...also as `exec 'NAME' ...`, with input for it");

  char small[8];
  farm_ssh_opts lo = { .host = "127.0.0.1", .port = port, .command = "echo 1234567; echo 12345678", .timeout = 10 };
  rc = farm__ssh_launch(&s, &lo, small, sizeof small, err, sizeof err);
  OK(rc == 0 && !strcmp(small, "1234567"), "a first line that just fits the buffer");
  farm__ssh_close(s);
  s = NULL;
  lo.command = "echo 12345678; sleep 1";
  rc = farm__ssh_launch(&s, &lo, small, sizeof small, err, sizeof err);
  printf("# %s\n", err);
  OK(rc == FARM_ESSH && has(err, "'echo' printed a first line longer than 7 bytes") && !s,
     "one a byte longer: refused");
  snprintf(cmd, sizeof cmd, "cat >/dev/null; : %s-2", marker);
  t0 = now_s();
  rc = launch(NULL, NULL, "127.0.0.1", port, cmd, NULL, 0, 1.0);
  double took = now_s() - t0;
  OK(rc == FARM_ESSH && has(err, "no answer within 1 s"), "a command that prints nothing: no answer within the timeout");
  OK(took < 2.5, "the launch is bounded by the timeout");
  snprintf(tmp, sizeof tmp, "%s-2", regex);
  OK(gone_within(tmp, 5.0), "and the command it gave up on is gone");

  /* ---- host keys ---- */
  put(kh, "");
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 0, 10);
  snprintf(want, sizeof want, "host 127.0.0.1:%d: unknown host key; add it with: ssh-keyscan -p %d -t ed25519 "
           "127.0.0.1 >> ~/.ssh/known_hosts (or pass --accept-new-hosts)", port, port);
  OK(rc == FARM_ESSH && !strcmp(err, want), "an unknown host key is refused with the ssh-keyscan line");
  snprintf(want, sizeof want, "ssh-keyscan -p %d -t ed25519 127.0.0.1 2>/dev/null | grep -qxF '%.*s'",
           port, (int)strlen(good) - 1, good);
  OK(sh("%s", want) == 0, "that ssh-keyscan line prints the very line known_hosts needs");
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  OK(rc == 0 && !strcmp(line, "up"), "accept_new logs in to an unknown host");
  OK(!strcmp(get(kh), good), "and adds [127.0.0.1]:PORT TYPE KEY to known_hosts");
  OK(try_login() == 0, "after which it is known");

  unlink(kh);
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  struct stat st;
  OK(rc == 0 && stat(kh, &st) == 0 && (st.st_mode & 0777) == 0600 && !strcmp(get(kh), good),
     "accept_new makes a missing known_hosts, mode 0600");
  snprintf(path, sizeof path, "%s/fresh", dir);
  mkdir(path, 0755);
  setenv("HOME", path, 1);
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  snprintf(tmp, sizeof tmp, "%s/.ssh", path);
  OK(stat(tmp, &st) == 0 && (st.st_mode & 0777) == 0700, "and a missing ~/.ssh, mode 0700");
  OK(rc == FARM_ESSH && has(err, "no key (no SSH agent, no ~/.ssh/id_ed25519 or ~/.ssh/id_ecdsa)") &&
     has(err, "ssh-keygen -t ed25519"), "with no key at all: says so, and how to make one");
  setenv("HOME", home, 1);

  snprintf(tmp, sizeof tmp, "[127.0.0.1]:%d %s\n", port, other);
  put(kh, tmp);
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  char fp[120] = "?";
  snprintf(cmd, sizeof cmd, "ssh-keygen -lf %s/hostkey.pub", dir);
  FILE *pp = popen(cmd, "r");
  if (pp) { if (fscanf(pp, "%*s %119s", fp) != 1) fp[0] = 0; pclose(pp); }
  snprintf(want, sizeof want, "host 127.0.0.1:%d: the host key has CHANGED (ssh-ed25519 %s); if that is "
           "expected, remove the old line from ~/.ssh/known_hosts", port, fp);
  OK(rc == FARM_ESSH && !strcmp(err, want), "a changed host key is refused (even with accept_new), with its fingerprint");
  OK(!strcmp(get(kh), tmp), "and known_hosts is left alone");

  snprintf(tmp, sizeof tmp, "127.0.0.1 %s\n", hostkey);
  put(kh, tmp);
  rc = try_login();
  OK(rc == FARM_ESSH && has(err, "unknown host key"), "a portless `127.0.0.1 KEY` line does not vouch for port PORT");
  snprintf(tmp, sizeof tmp, "[127.0.0.1]:%d %s\n", port + 1, hostkey);
  put(kh, tmp);
  OK(try_login() == FARM_ESSH && has(err, "unknown host key"), "nor does a line for another port");
  snprintf(tmp, sizeof tmp, "# a comment\n@cert-authority *.example.org %s\n127.0.0.1 %s\nbroken\n"
           "localhost,[127.0.0.1]:%d %s\n", other, other, port, hostkey);
  put(kh, tmp);
  OK(try_login() == 0, "a portless line with another key does not make it CHANGED; comments, markers, "
     "bad lines and lists are fine");

  put(kh, good);
  OK(sh("ssh-keygen -H -f %s >/dev/null 2>&1", kh) == 0 && !strncmp(get(kh), "|1|", 3) &&
     !has(get(kh), "127.0.0.1"), "ssh-keygen -H hashes known_hosts");
  OK(try_login() == 0, "a hashed [127.0.0.1]:PORT line works");
  snprintf(tmp, sizeof tmp, "127.0.0.1 %s\n", hostkey);
  put(kh, tmp);
  sh("ssh-keygen -H -f %s >/dev/null 2>&1", kh);
  OK(try_login() == FARM_ESSH && has(err, "unknown host key"), "a hashed portless line does not vouch for port PORT");
  snprintf(tmp, sizeof tmp, "[127.0.0.1]:%d %s\n", port, other);
  put(kh, tmp);
  sh("ssh-keygen -H -f %s >/dev/null 2>&1", kh);
  OK(try_login() == FARM_ESSH && has(err, "CHANGED"), "a hashed line with another key: CHANGED");
  put(kh, good);
  OK(try_login() == 0, "known_hosts as it was: it logs in again");

  /* @revoked: the key is refused whatever else known_hosts says, and never
     appended; libssh2 1.10 itself would read such a line as a host named
     "@revoked" and drop the revocation */
  char revoked[1000], rwant[700];
  snprintf(revoked, sizeof revoked, "[127.0.0.1]:%d %s\n@revoked [127.0.0.1]:%d %s\n", port, hostkey, port, hostkey);
  put(kh, revoked);
  rc = try_login();
  snprintf(rwant, sizeof rwant, "host 127.0.0.1:%d: the host key (ssh-ed25519 %s) is marked @revoked in "
           "~/.ssh/known_hosts line 2: it was revoked and you cannot connect to it (a stolen key may be "
           "posing as the host); the host needs a new key: ask its administrator", port, fp);
  OK(rc == FARM_ESSH && !strcmp(err, rwant), "a @revoked host key is refused, though a normal line has it too");
  OK(!strcmp(get(kh), revoked), "and known_hosts is left alone");
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  OK(rc == FARM_ESSH && !strcmp(err, rwant), "...also with accept_new");
  OK(!strcmp(get(kh), revoked), "and known_hosts is left alone");
  snprintf(revoked, sizeof revoked, "@revoked [127.0.0.1]:%d %s\n", port, hostkey);
  put(kh, revoked);
  rc = try_login();
  snprintf(rwant, sizeof rwant, "host 127.0.0.1:%d: the host key (ssh-ed25519 %s) is marked @revoked in "
           "~/.ssh/known_hosts line 1: it was revoked", port, fp);
  OK(rc == FARM_ESSH && !strncmp(err, rwant, strlen(rwant)), "a @revoked key with no normal line: refused, not unknown");
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 1, 10);
  OK(rc == FARM_ESSH && !strncmp(err, rwant, strlen(rwant)) && !strcmp(get(kh), revoked),
     "...also with accept_new, which does not append it");
  snprintf(revoked, sizeof revoked, "# keys\n[127.0.0.1]:%d %s\n  @revoked\t*.example.org,10.9.9.9 %s stolen\n",
           port, hostkey, hostkey);
  put(kh, revoked);
  OK(try_login() == FARM_ESSH && has(err, "is marked @revoked in ~/.ssh/known_hosts line 3:"),
     "a @revoked key is refused whatever host patterns its line has");
  put(kh, good);
  sh("ssh-keygen -H -f %s >/dev/null 2>&1", kh);
  snprintf(revoked, sizeof revoked, "@revoked %s", get(kh));
  put(kh, revoked);
  OK(try_login() == FARM_ESSH && has(err, "is marked @revoked"), "...hashed ones too");
  snprintf(revoked, sizeof revoked, "@revoked * %s\n%s", other, good);
  put(kh, revoked);
  OK(try_login() == 0, "another key marked @revoked does not keep the host out");
  snprintf(revoked, sizeof revoked, "%s@revoked * ssh-ed25519 not-base64!\n", good);
  put(kh, revoked);
  rc = try_login();
  snprintf(rwant, sizeof rwant, "host 127.0.0.1:%d: ~/.ssh/known_hosts line 2: the key on a @revoked line is "
           "not a base64 key of type ssh-ed25519; fix or remove that line", port);
  OK(rc == FARM_ESSH && !strcmp(err, rwant), "a @revoked line that cannot be read is an error, not skipped");
  snprintf(revoked, sizeof revoked, "%s@revoked *\n", good);
  put(kh, revoked);
  OK(try_login() == FARM_ESSH && has(err, "line 2: a @revoked line needs host patterns, a key type and a key"),
     "...as is one with no key");
  snprintf(revoked, sizeof revoked, "@cert-authority * %s\n@cert-authority [127.0.0.1]:%d %s\n%s",
           other, port, hostkey, good);
  put(kh, revoked);
  OK(try_login() == 0, "@cert-authority lines are ignored; the normal line still vouches for the host");
  put(kh, good);

  /* ---- logging in ---- */
  char home3[300];
  snprintf(home3, sizeof home3, "%s/wrongkey", dir);
  sh("mkdir -p %s/.ssh && cp %s/other %s/.ssh/id_ed25519 && cp %s/other.pub %s/.ssh/id_ed25519.pub && cp %s %s/.ssh/",
     home3, dir, home3, dir, home3, kh, home3);
  setenv("HOME", home3, 1);
  rc = launch(NULL, me_name, "127.0.0.1", port, "echo up", NULL, 0, 10);
  snprintf(want, sizeof want, "host %s@127.0.0.1:%d: login refused for user %s (tried ~/.ssh/id_ed25519)",
           me_name, port, me_name);
  OK(rc == FARM_ESSH && !strcmp(err, want), "a key the host does not know: login refused, saying what was tried");
  sh("ssh-keygen -q -t rsa -b 2048 -N '' -f %s/.ssh/id_rsa", home3);
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 0, 10);
  OK(rc == FARM_ESSH && has(err, "login refused for user") && has(err, "~/.ssh/id_rsa cannot be used: Debian's libssh2 1.10 "
     "cannot sign with RSA-SHA2") && has(err, "ssh-keygen -t ed25519"), "...and when there is an id_rsa, why it was not used");
  sh("rm -f %s/.ssh/id_ed25519 %s/.ssh/id_ed25519.pub && cat %s/.ssh/id_rsa.pub >> %s/authorized_keys",
     home3, home3, home3, dir);
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 0, 10);
  OK(rc == FARM_ESSH && has(err, "the only key is ~/.ssh/id_rsa, an RSA key, and Debian's libssh2 1.10 cannot sign "
     "with RSA-SHA2 (OpenSSH refuses its SHA-1 signatures); use an ed25519 key (ssh-keygen -t ed25519)"),
     "an RSA key alone (even an authorized one): the RSA message");
  /* the agent, with a home that has no key */
  snprintf(path, sizeof path, "%s/agent.sock", dir);
  pid_t ag = fork();
  if (ag == 0) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) { dup2(null, 1); dup2(null, 2); }
    execlp("ssh-agent", "ssh-agent", "-D", "-a", path, (char *)NULL);
    _exit(127);
  }
  if (ag > 0) agent = ag;
  for (int i = 0; i < 50 && access(path, F_OK) != 0; i++) usleep(20000);
  setenv("SSH_AUTH_SOCK", path, 1);
  OK(ag > 0 && sh("ssh-add -q %s/other %s/client 2>/dev/null", dir, dir) == 0, "an ssh-agent with two keys, one authorized");
  snprintf(tmp, sizeof tmp, "%s/fresh", dir);
  setenv("HOME", tmp, 1);
  OK(try_login() == 0, "logs in with the agent's key (there is none in ~/.ssh)");
  sh("ssh-add -q -D 2>/dev/null");
  rc = try_login();
  OK(rc == FARM_ESSH && has(err, "(tried the SSH agent (it has no keys))"), "an empty agent: says so");
  agent_stop();
  unlink(path);
  rc = try_login();
  OK(rc == FARM_ESSH && has(err, "(tried the SSH agent (cannot reach it at $SSH_AUTH_SOCK))"), "an agent that is not there: says so");
  unsetenv("SSH_AUTH_SOCK");
  setenv("HOME", home, 1);
  OK(try_login() == 0, "the right key logs in");

  /* ---- reaching the host ---- */
  rc = launch(NULL, NULL, "no-such-host.invalid", 0, "echo up", NULL, 0, 10);
  OK(rc == FARM_ESSH && !strncmp(err, "host no-such-host.invalid: unknown host (", 41),
     "an unknown host name: unknown host");
  int fd = socket(AF_INET, SOCK_STREAM, 0);        /* bound, not listening: refused */
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  int closed = 0;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0)
    closed = ntohs(a.sin_port);
  rc = launch(NULL, NULL, "127.0.0.1", closed, "echo up", NULL, 0, 10);
  snprintf(want, sizeof want, "host 127.0.0.1:%d: connection refused (is sshd running there?)", closed);
  OK(closed && rc == FARM_ESSH && !strcmp(err, want), "a closed port: connection refused");
  if (fd >= 0) close(fd);
  farm_ssh_opts bad = { .host = "127.0.0.1" };
  OK(farm__ssh_launch(&s, &bad, line, sizeof line, err, sizeof err) == FARM_EINVAL && !s, "no command: FARM_EINVAL");
  OK(farm__ssh_poll(NULL, NULL, NULL, why, sizeof why) < 0, "farm__ssh_poll(NULL) is an error");

  /* ---- a host that stops answering ---- */
  snprintf(path, sizeof path, "%s/sshd.pid", dir);
  long sshd = atol(get(path));
  snprintf(cmd, sizeof cmd, "echo up; cat >/dev/null; : %s-4", marker);
  rc = launch(&s, NULL, "127.0.0.1", port, cmd, NULL, 0, 10);
  /* freeze the processes serving this connection (the listener's children and theirs) */
  char kids[200];
  snprintf(kids, sizeof kids, "k=$(ps -o pid= --ppid %ld); for p in $k; do ps -o pid= --ppid $p; done; echo $k", sshd);
  char frozen[200] = "";
  pp = popen(kids, "r");
  if (pp) {
    char w[32];
    while (fscanf(pp, "%31s", w) == 1) { size_t k = strlen(frozen); snprintf(frozen + k, sizeof frozen - k, " %s", w); }
    pclose(pp);
  }
  OK(rc == 0 && *frozen && sh("kill -STOP%s", frozen) == 0, "a session, and the sshd serving it frozen (SIGSTOP)");
  t0 = now_s();
  rc = s ? farm__ssh_poll(s, NULL, NULL, why, sizeof why) : -1;
  OK(rc == 0 && now_s() - t0 < 0.5, "farm__ssh_poll does not block on it");
  t0 = now_s();
  farm__ssh_close(s);
  s = NULL;
  took = now_s() - t0;
  printf("# close took %.2f s\n", took);
  OK(took < 2.5, "farm__ssh_close gives up on it within its bound");
  sh("kill -CONT%s", frozen);
  snprintf(tmp, sizeof tmp, "%s-4", regex);
  OK(gone_within(tmp, 5.0), "once it thaws, the command is gone");
  sh("kill -STOP %ld", sshd);
  t0 = now_s();
  rc = launch(NULL, NULL, "127.0.0.1", port, "echo up", NULL, 0, 1.0);
  took = now_s() - t0;
  sh("kill -CONT %ld", sshd);
  OK(rc == FARM_ESSH && has(err, "no answer within 1 s (the SSH handshake)") && took < 2.5,
     "an sshd that accepts but never answers: no answer within the timeout");
  OK(try_login() == 0, "and once it thaws it logs in again");

  /* ---- the connection drops ---- */
  snprintf(cmd, sizeof cmd, "echo up; cat >/dev/null; : %s-3", marker);
  rc = launch(&s, NULL, "127.0.0.1", port, cmd, NULL, 0, 10);
  OK(rc == 0 && !strcmp(line, "up"), "a session, then sshd is stopped under it");
  testbed_stop();                                 /* kills sshd and the connection it serves */
  prc = 0;
  end = now_s() + 5;
  while (s && prc == 0 && now_s() < end) {
    struct pollfd p = { .fd = farm__ssh_fd(s), .events = POLLIN };
    poll(&p, 1, 200);
    prc = farm__ssh_poll(s, NULL, NULL, why, sizeof why);
  }
  printf("# poll: %d, %s\n", prc, why);
  OK(prc != 0 && *why, "farm__ssh_poll reports the end of the connection, with a reason");
  t0 = now_s();
  farm__ssh_close(s);
  OK(now_s() - t0 < 2.0, "and farm__ssh_close does not hang on a dead connection");
  snprintf(tmp, sizeof tmp, "%s-3", regex);
  OK(gone_within(tmp, 5.0), "the command is gone with its connection");
  OK(access(dir, F_OK) != 0, "the test bed is gone");

  printf("1..%d\n", n);
  return fails != 0;
}
