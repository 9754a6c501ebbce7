/*
 * fake_node.c -- a hostile farm node, for the tests of the client's walls
 * (DESIGN.md section 3, "Client <- node"; spec/hostile_node_spec.lua).
 *
 * It holds the key and speaks the protocol as `farm node` does (nodes/node.c):
 * it binds a PAIR link, runs the node's side of the handshake, says HELLO with
 * a capacity and a heartbeat, answers BEATs and TAKEs. Then, on the JOBS it
 * gets, it does one thing an honest node never does (--attack):
 *
 *   submit      SUBMIT a function that creates the marker file wherever it runs
 *               (only the client's own workers may submit; the node's jobs'
 *               sub-jobs run on the node)
 *   suspended   SUSPENDED claiming more waiting jobs than it holds, for an id it
 *               was never sent
 *   gc          answer each job with a table whose metatable travels by value,
 *               with __gc = a function that creates the marker
 *   loop        answer with a function whose surrounding text never ends
 *   alloc       answer with a function whose surrounding text allocates 1.5 GiB
 *               (string.rep stops at 2 GiB; a bigger or endless allocation would
 *               risk the test machine) -- the first job it answers: a table
 *               claiming 2^40 array slots
 *   file        FILE util.lua (text: creates the marker) for the first job of the
 *               first JOBS, then RESULTS 42 for every job
 *   honest-ish  RESULTS 42 for every job (checks the harness itself)
 *   shm         RESULTS whose every entry says its block is in shared memory (status
 *               OK_SHM, position 0, 100000 bytes), which only a client's own local
 *               workers may say (core/shm.h)
 *   partial     PARTIAL for each job: a table whose metatable travels by value with
 *               a __gc that creates the marker (as gc), and one PARTIAL for a job it
 *               was never sent; then RESULTS 42
 *
 * Messages are built by hand from proto.h and codec.h's block grammar (buf.h
 * helpers), so that nothing here depends on the client's encoder refusing what
 * it would refuse.
 *
 *   fake_node --listen tcp://127.0.0.1:PORT --key-file F --attack NAME [--marker PATH]
 *
 * Prints "FAKE-NODE READY" on stdout once it listens; exits 0 when the client
 * goes (QUIT, or silence for 5 heartbeats, or a frame that does not open) or on
 * SIGTERM / SIGINT; exits 2 on a bad command line, 1 when it cannot listen.
 * What it does goes to stderr, one line each.
 *
 * All of the handshake is in accept_client(): when the node's side of it
 * changes, that function is the one to port.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>
#include "farm.h"
#include "buf.h"
#include "clock.h"
#include "codec.h"
#include "proto.h"
#include "session.h"
#include "transport.h"

#define CAPACITY 4
#define BEAT 0.2                   /* seconds; said in HELLO */
#define LOST_BEATS 5.0
#define MAX_MESSAGE (256u << 20)

enum { A_SUBMIT, A_SUSPENDED, A_GC, A_LOOP, A_ALLOC, A_FILE, A_HONEST, A_PARTIAL, A_SHM };
static const char *attacks[] = { "submit", "suspended", "gc", "loop", "alloc", "file", "honest-ish", "partial", "shm",
                                 NULL };

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

typedef struct fake {
  farm_link *link;
  int attack;
  const char *marker;
  int jobs_seen;                   /* JOBS messages so far */
  uint64_t answered;               /* jobs answered so far */
  double last_sent, last_recv, client_beat;
  farm_buf out;
} fake;

static void say(const char *fmt, const char *a) {
  fprintf(stderr, "fake_node[%ld]: ", (long)getpid());
  fprintf(stderr, fmt, a);
  fputc('\n', stderr);
}

static int send_out(fake *f) {
  f->last_sent = farm__now();
  for (double until = farm__now() + 5; ; ) {        /* the client reads; never long */
    int rc = farm__link_send(f->link, f->out.p, f->out.n, 1);
    if (rc != FARM_EAGAIN) return rc;
    if (farm__now() > until || stop) return FARM_EAGAIN;
    usleep(1000);
  }
}

/* ---- the handshake: all of it here -------------------------------------------- */

/* Listen at url with a lobby (session.h), say READY, and take the first client
   that proves it knows key: a PAIR link of its own on a free port of
   127.0.0.1, sealed under the session's keys. The client speaks first on it; the
   lobby stays open (a stranger's hello is answered as a node's would be, and
   its port is not used again). Returns 0 with f->link sealed, 1 when told to
   stop first, <0 when it cannot listen. */
static int accept_client(fake *f, const char *url, const unsigned char key[FARM_KEYLEN]) {
  static farm_lobby lb;            /* (large; one per process) */
  static farm_link *lobby;
  char err[300];
  int rc = farm__lobby_link_open(&lobby, url, 1, err, sizeof err);
  if (rc < 0) { say("cannot listen: %s", err); return rc; }
  printf("FAKE-NODE READY\n");
  fflush(stdout);
  while (!stop && !f->link) {
    struct pollfd pfd = { .fd = farm__link_rcvfd(lobby), .events = POLLIN };
    poll(&pfd, 1, 100);
    void *m;
    size_t n;
    if (farm__link_recv(lobby, &m, &n, 1) != 0) continue;
    farm_buf out;
    farm__buf_init(&out);
    farm_lobby_client acc;
    memset(&acc, 0, sizeof acc);
    rc = farm__lobby_answer(&lb, key, m, n, &out, &acc, err, sizeof err);
    farm__link_free(m);
    if (rc == 1) {
      char own[64];
      int port = farm__free_port("127.0.0.1");
      snprintf(own, sizeof own, "tcp://127.0.0.1:%d", port);
      if (port > 0 && farm__link_open(&f->link, own, 1, MAX_MESSAGE + (1u << 16), err, sizeof err) == 0) {
        farm__lobby_seal(f->link, &acc);
        farm__lobby_welcome(&out, port);
        say("client %s authenticated", acc.who);
      } else {
        say("cannot give a client a link: %s", err);
        farm__lobby_refuse(&out, "the fake node cannot listen; try again");
      }
    } else if (rc < 0) say("refused a client: %s", err);
    if (out.n) farm__link_send(lobby, out.p, out.n, 1);
    farm__buf_free(&out);
  }
  return f->link ? 0 : 1;
}

/* ---- blocks (codec.h) ------------------------------------------------------------ */

/* A FUNC value: text is a chunk that returns the function. */
static void put_func(farm_buf *b, const char *text) {
  farm__buf_u8(b, FARM_T_FUNC);
  farm__buf_str(b, "=fake_node", 10);
  farm__buf_uvar(b, 1);
  farm__buf_str(b, text, strlen(text));
  farm__buf_uvar(b, 0);            /* no upvalues */
}

static void block_begin(farm_buf *b, int nvalues) { b->n = 0; farm__buf_uvar(b, (uint64_t)nvalues); }
static void block_end(farm_buf *b) { farm__buf_uvar(b, 0); }   /* globals: none */

/* Lua text that creates the marker file, as a statement. */
static void marker_code(fake *f, char *out, size_t n) {
  char quoted[2100];
  size_t k = 0;
  quoted[k++] = '"';
  for (const char *s = f->marker; *s && k + 4 < sizeof quoted; s++) {
    if (*s == '"' || *s == '\\') quoted[k++] = '\\';
    quoted[k++] = *s;
  }
  quoted[k++] = '"';
  quoted[k] = 0;
  snprintf(out, n, "local h = io.open(%s, 'w') if h then h:write('written by a hostile node') h:close() end",
           quoted);
}

/* The value block this attack answers a job with (index: how many jobs it answered before). */
static void result_block(fake *f, farm_buf *b, uint64_t index) {
  char code[2400], text[2600];
  block_begin(b, 1);
  switch (f->attack) {
  case A_GC:                       /* setmetatable({}, {__gc = function() <marker> end}), by value */
    marker_code(f, code, sizeof code);
    snprintf(text, sizeof text, "return function() %s end", code);
    farm__buf_u8(b, FARM_T_TABLEMT);
    farm__buf_uvar(b, 0);
    farm__buf_uvar(b, 0);
    farm__buf_u8(b, FARM_T_TABLE);           /* the metatable: a plain table, no class */
    farm__buf_uvar(b, 0);
    farm__buf_uvar(b, 1);
    farm__buf_u8(b, FARM_T_STR);
    farm__buf_str(b, "__gc", 4);
    put_func(b, text);
    break;
  case A_LOOP:
    put_func(b, "while true do end return function() end");
    break;
  case A_ALLOC:
    if (index == 0) {                        /* a table that claims 2^40 array slots */
      farm__buf_u8(b, FARM_T_TABLE);
      farm__buf_uvar(b, (uint64_t)1 << 40);
      farm__buf_uvar(b, 0);
      farm__buf_u8(b, FARM_T_SMALLINT + 1);
    } else {
      put_func(b, "local s = ('x'):rep(2^29) s = s .. s s = nil return function() end");
    }
    break;
  default:                                   /* 42 */
    farm__buf_u8(b, FARM_T_SMALLINT + 42);
  }
  block_end(b);
}

/* ---- what the client sends ---------------------------------------------------------- */

typedef struct job { uint64_t id, attempt; } job;

static int on_jobs(fake *f, farm_rd *r) {
  farm_msg_jobs h;
  if (farm__proto_get_jobs(r, &h, NULL, 0) < 0 || h.count > farm__rd_left(r)) return FARM_EPROTO;
  uint32_t count = h.count;
  job *js = calloc(count ? count : 1, sizeof *js);
  if (!js) return FARM_ENOMEM;
  for (uint32_t i = 0; i < count && !r->err; i++) {
    farm_msg_job m;
    if (farm__proto_get_job(r, &m, NULL, 0) < 0) break;
    js[i].id = m.id;
    js[i].attempt = m.attempt;
  }
  if (r->err) { free(js); return FARM_EPROTO; }
  int first = f->jobs_seen++ == 0;
  char line[64];
  snprintf(line, sizeof line, "%u", count);
  say("got JOBS with %s jobs", line);
  farm_buf blk;
  farm__buf_init(&blk);
  int rc = 0;
  if (f->attack == A_SUBMIT) {
    if (!first) goto out;                    /* the client should have dropped us */
    char code[2400], text[2600];
    marker_code(f, code, sizeof code);
    snprintf(text, sizeof text, "return function() %s return 'ran' end", code);
    farm_buf args;
    farm__buf_init(&args);
    block_begin(&blk, 1);
    put_func(&blk, text);
    block_end(&blk);
    block_begin(&args, 0);
    block_end(&args);
    farm_msg_submit m = { .subid = 1, .mode = FARM_MODE_CALL, .retries = -1,   /* not fresh, no options */
                          .fnb = blk.p, .nfn = blk.n, .args = args.p, .nargs = args.n };
    farm__proto_put_list(&f->out, FARM_MSG_SUBMIT);
    farm__proto_put_submit(&f->out, &m);
    farm__proto_count(&f->out, 1);
    farm__buf_free(&args);
    rc = send_out(f);
    say("sent SUBMIT of a function that writes %s", f->marker);
    goto out;                                /* and holds its jobs */
  }
  if (f->attack == A_SUSPENDED) {
    if (!first) goto out;
    farm__proto_put_suspended(&f->out, (uint64_t)count + 7, 0x7fffffffULL + randombytes_uniform(1000000));
    rc = send_out(f);
    say("%s", "sent SUSPENDED for more jobs than it holds and an id it never got");
    goto out;
  }
  if (f->attack == A_FILE && first && count) {
    char code[2400];
    marker_code(f, code, sizeof code);
    farm_msg_file m = { .id = js[0].id, .path = "util.lua", .npath = 8, .data = code, .ndata = strlen(code) };
    farm__proto_put_file(&f->out, &m);
    if ((rc = send_out(f)) < 0) goto out;
    say("%s", "sent FILE util.lua");
  }
  if (f->attack == A_PARTIAL) {             /* provisional results the client must take as data */
    f->attack = A_GC;
    result_block(f, &blk, 1);
    f->attack = A_PARTIAL;
    for (uint32_t i = 0; i < count; i++) {
      farm__proto_put_partial(&f->out, js[i].id, blk.p, blk.n);
      if ((rc = send_out(f)) < 0) goto out;
    }
    farm__proto_put_partial(&f->out, 0x7fffffffULL + randombytes_uniform(1000000), blk.p, blk.n);
    if ((rc = send_out(f)) < 0) goto out;
    say("%s", "sent PARTIAL with a __gc by value for each job, and one for a job it never got");
  }
  /* one RESULTS for the lot */
  farm__proto_put_list(&f->out, FARM_MSG_RESULTS);
  for (uint32_t i = 0; i < count; i++) {
    result_block(f, &blk, f->answered++);
    farm_msg_result m = { .id = js[i].id, .attempt = js[i].attempt, .status = FARM_JOB_OK,
                          .busy = 0.001, .out = "", .nout = 0,   /* 1 ms busy, printed nothing */
                          .block = blk.p, .nblock = blk.n };
    if (f->attack == A_SHM) { m.shm = 1; m.pos = 0; m.nblock = 100000; }
    farm__proto_put_result(&f->out, &m);
  }
  farm__proto_count(&f->out, count);
  rc = send_out(f);
  say("sent RESULTS (%s)", attacks[f->attack]);
out:
  farm__buf_free(&blk);
  free(js);
  return rc;
}

/* TAKE: every job has begun here (none is given back). */
static int on_take(fake *f) {
  farm__proto_put_list(&f->out, FARM_MSG_TAKEN);
  return send_out(f);
}

static int send_hello(fake *f) {
  farm_msg_hello m = { .pid = (uint64_t)getpid(), .capacity = CAPACITY, .beat_ms = (uint64_t)(BEAT * 1e3) };
  farm__proto_put_hello(&f->out, &m);
  return send_out(f);
}

static int send_beat(fake *f) {            /* a node's BEAT is empty: HELLO said its heartbeat */
  farm__proto_put_beat(&f->out, &(farm_msg_beat){ .n = 0 });
  return send_out(f);
}

/* 1: the client is gone (or said QUIT); 0: go on; <0: broken. */
static int on_message(fake *f, const void *m, size_t n) {
  farm_rd r;
  char err[200];
  int type = farm__msg_open(&r, m, n, err, sizeof err);
  switch (type) {
  case FARM_MSG_JOBS: return on_jobs(f, &r);
  case FARM_MSG_TAKE: return on_take(f);
  case FARM_MSG_QUIT: say("%s", "the client said QUIT"); return 1;
  case FARM_MSG_BEAT: {
    farm_msg_beat m;
    farm__proto_get_beat(&r, &m, NULL, 0);
    if (m.n >= 1 && m.beat_ms >= 10 && m.beat_ms <= 3600000) f->client_beat = m.beat_ms / 1e3;
    return 0;
  }
  default: return type < 0 ? type : 0;      /* SHARE, KILL, SUBDONE: nothing to do */
  }
}

static int usage(const char *why, const char *a) {
  fputs("fake_node: ", stderr);
  fprintf(stderr, why, a);
  fputs("\nusage: fake_node --listen tcp://127.0.0.1:PORT --key-file F --attack NAME [--marker PATH]\n"
        "  attacks: submit suspended gc loop alloc file honest-ish partial shm\n", stderr);
  return 2;
}

int main(int argc, char **argv) {
  fake F = { .attack = -1, .marker = "/nonexistent/fake-node-marker" };
  fake *f = &F;
  const char *listen = NULL, *keyfile = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) return usage("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--listen")) listen = v;
    else if (!strcmp(a, "--key-file")) keyfile = v;
    else if (!strcmp(a, "--marker")) f->marker = v;
    else if (!strcmp(a, "--attack")) {
      for (int k = 0; attacks[k]; k++) if (!strcmp(v, attacks[k])) f->attack = k;
      if (f->attack < 0) return usage("no attack '%s'", v);
    } else return usage("unknown option '%s'", a);
  }
  if (!listen || strncmp(listen, "tcp://127.0.0.1:", 16)) return usage("%s", "--listen tcp://127.0.0.1:PORT is needed (loopback only)");
  if (!keyfile || f->attack < 0) return usage("%s", "--key-file and --attack are needed");
  if (strlen(f->marker) > 1000) return usage("%s", "--marker: too long");
  if (sodium_init() < 0) return usage("%s", "libsodium failed to start");
  unsigned char key[FARM_KEYLEN];
  char err[300];
  if (farm__key_load(keyfile, key, err, sizeof err) < 0) return usage("%s", err);
  struct sigaction sa = { .sa_handler = on_signal };
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  farm__buf_init(&f->out);
  int rc = accept_client(f, listen, key);
  if (rc < 0) return 1;
  if (rc == 0 && send_hello(f) < 0) say("%s", "cannot say hello");
  f->last_recv = farm__now();
  while (!stop) {
    struct pollfd pfd = { .fd = farm__link_rcvfd(f->link), .events = POLLIN };
    poll(&pfd, 1, 50);
    double now = farm__now();
    void *m;
    size_t n;
    int got = FARM_EAGAIN;
    while (!stop && (got = farm__link_recv(f->link, &m, &n, 1)) == 0) {
      f->last_recv = now;
      rc = on_message(f, m, n);
      farm__link_free(m);
      if (rc != 0) { stop = 1; break; }
    }
    if (!stop && got != FARM_EAGAIN) { say("%s", "the link failed (a frame did not open)"); break; }
    double beat = f->client_beat > BEAT ? f->client_beat : BEAT;
    if (now - f->last_recv > LOST_BEATS * beat) { say("%s", "no word from the client: it is gone"); break; }
    if (now - f->last_sent >= BEAT) send_beat(f);
  }
  farm__link_close(f->link);
  farm__buf_free(&f->out);
  sodium_memzero(key, sizeof key);
  say("%s", "exiting");
  return 0;
}
