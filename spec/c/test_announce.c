/*
 * test_announce.c -- a node's announcement (announce.c) and the client that
 * hears it (join.c).
 *
 * The record is checked against the layout announce.h documents (the MAC is
 * computed here from that text, not from announce.c), then attacked: every
 * single bit flipped, every length from 0 to 300 of random bytes, records of
 * another key, of another protocol, naming no lobby, stale and from the future
 * (each with a good MAC where that matters): each is refused with the code
 * announce.h gives, nothing else is. Then the client's side for real: a
 * joiner listening on 127.0.0.1 is sent good records (over the node's own
 * announcer and by hand), repeats, records of another key and junk over
 * nanomsg; the node is added once, nothing else is, and another key's records
 * are said on stderr once. Prints TAP.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sodium.h>
#include "farm.h"
#include "announce.h"
#include "clock.h"
#include "join.h"
#include "session.h"
#include "transport.h"

static int n = 0, fails = 0;
#define OK(c, what) do { int ok_ = (c); n++; if (!ok_) fails++; printf("%sok %d - %s\n", ok_ ? "" : "not ", n, what); fflush(stdout); } while (0)

static unsigned char key[FARM_KEYLEN], other[FARM_KEYLEN];

/* The MAC as announce.h writes it down. */
static void doc_mac(unsigned char *rec, const unsigned char *k) {
  static const char dom[] = "farm announce 1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, k, FARM_KEYLEN, 32);
  crypto_generichash_update(&st, (const unsigned char *)dom, sizeof dom - 1);
  crypto_generichash_update(&st, rec, 36);
  crypto_generichash_final(&st, rec + 36, 32);
}

/* A record laid out by hand, as announce.h says, MAC'd under k. */
static void doc_record(unsigned char *rec, const unsigned char *k, int proto, const char *ip, unsigned port,
                       double when) {
  memcpy(rec, "FmAn", 4);
  rec[4] = (unsigned char)proto;
  rec[5] = 0;
  rec[6] = (unsigned char)(port >> 8);
  rec[7] = (unsigned char)port;
  inet_pton(AF_INET, ip, rec + 8);
  uint64_t ms = (uint64_t)(when * 1e3);
  for (int i = 0; i < 8; i++) rec[12 + i] = (unsigned char)(ms >> (56 - 8 * i));
  randombytes_buf(rec + 20, 16);
  doc_mac(rec, k);
}

static int check(const void *rec, size_t len, const unsigned char *k, double now) {
  farm_announce a;
  char err[300];
  return farm__announce_check(rec, len, k, now, &a, err, sizeof err);
}

/* ---- the joiner's side: what it added ---- */
typedef struct added { int calls; char ip[64]; unsigned port; } added;
static int on_add(void *arg, const char *ip, unsigned port, char *err, size_t errlen) {
  added *ad = arg;
  ad->calls++;
  snprintf(ad->ip, sizeof ad->ip, "%s", ip);
  ad->port = port;
  (void)err; (void)errlen;
  return 0;
}

static void pause_s(double s) { usleep((useconds_t)(s * 1e6)); }

static int wait_calls(added *ad, int want, double seconds) {
  for (double until = farm__now() + seconds; farm__now() < until; pause_s(0.02))
    if (ad->calls >= want) return 1;
  return ad->calls >= want;
}

int main(void) {
  if (sodium_init() < 0) return 1;
  randombytes_buf(key, sizeof key);
  randombytes_buf(other, sizeof other);
  double now = farm__announce_clock();
  unsigned char rec[FARM_ANNOUNCE_LEN], doc[FARM_ANNOUNCE_LEN];
  struct in_addr lobby;
  inet_pton(AF_INET, "10.203.0.2", &lobby);

  /* ---- the record ---- */
  farm__announce_make(rec, key, lobby, 7070, now);
  farm_announce a;
  char err[300];
  int rc = farm__announce_check(rec, sizeof rec, key, now, &a, err, sizeof err);
  OK(rc == 0 && a.addr.s_addr == lobby.s_addr && a.port == 7070 && a.time > now - 0.01 && a.time < now + 0.01,
     "a record made is read back: address, port, time");
  memcpy(doc, rec, sizeof doc);
  doc_mac(doc, key);
  OK(memcmp(doc, rec, sizeof rec) == 0 && rec[4] == FARM_PROTOCOL && !memcmp(rec, "FmAn", 4) &&
     rec[6] == 7070 >> 8 && rec[7] == (7070 & 255),
     "its layout and MAC are the ones announce.h documents");
  unsigned char rec2[FARM_ANNOUNCE_LEN];
  farm__announce_make(rec2, key, lobby, 7070, now);
  OK(memcmp(rec + 20, rec2 + 20, 16) != 0, "two records carry different nonces");
  doc_record(doc, key, FARM_PROTOCOL, "192.168.1.9", 65535, now - 5);
  rc = farm__announce_check(doc, sizeof doc, key, now, &a, err, sizeof err);
  OK(rc == 0 && a.port == 65535 && ntohl(a.addr.s_addr) == 0xc0a80109, "a record laid out by hand from the header is good");

  OK(check(rec, sizeof rec, other, now) == FARM_EAUTH, "under another key: FARM_EAUTH");
  farm__announce_check(rec, sizeof rec, other, now, &a, err, sizeof err);
  OK(strstr(err, "another key") != NULL, "...which the message says");

  int flips_ok = 1;
  for (size_t i = 0; i < sizeof rec; i++)
    for (int b = 0; b < 8; b++) {
      unsigned char t[FARM_ANNOUNCE_LEN];
      memcpy(t, rec, sizeof t);
      t[i] ^= (unsigned char)(1u << b);
      int r = check(t, sizeof t, key, now);
      flips_ok &= r == (i < 4 ? FARM_EPROTO : FARM_EAUTH);
    }
  OK(flips_ok, "each of its 544 bits flipped: refused (the magic's as not a record, the rest by the MAC)");

  int lens_ok = 1;
  unsigned char junk[300];
  for (size_t len = 0; len <= sizeof junk; len++) {
    randombytes_buf(junk, sizeof junk);
    if (len >= 4) memcpy(junk, "FmAn", 4);
    lens_ok &= check(junk, len, key, now) < 0;
  }
  OK(lens_ok, "random bytes of every length from 0 to 300 (with the magic): refused, none read");
  unsigned char longer[FARM_ANNOUNCE_LEN + 1];
  memcpy(longer, rec, sizeof rec);
  longer[FARM_ANNOUNCE_LEN] = 0;
  OK(check(longer, sizeof longer, key, now) == FARM_EPROTO && check(rec, sizeof rec - 1, key, now) == FARM_EPROTO,
     "a good record with a byte more, or one less: not a record");

  doc_record(doc, key, FARM_PROTOCOL + 1, "10.203.0.2", 7070, now);
  rc = farm__announce_check(doc, sizeof doc, key, now, &a, err, sizeof err);
  OK(rc == FARM_EVERSION && strstr(err, "protocol version") != NULL, "another protocol, with a good MAC: FARM_EVERSION, said");
  const char *nowhere[] = { "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.1.1.1", "255.255.255.255" };
  int nowhere_ok = 1;
  for (int i = 0; i < 5; i++) {
    doc_record(doc, key, FARM_PROTOCOL, nowhere[i], 7070, now);
    nowhere_ok &= check(doc, sizeof doc, key, now) == FARM_EPROTO;
  }
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 0, now);
  nowhere_ok &= check(doc, sizeof doc, key, now) == FARM_EPROTO;
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, now);
  doc[5] = 1;
  doc_mac(doc, key);
  nowhere_ok &= check(doc, sizeof doc, key, now) == FARM_EPROTO;
  OK(nowhere_ok, "a good MAC over no lobby (0.0.0.0/8, multicast, broadcast, port 0, reserved byte set): refused");

  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, now - FARM_ANNOUNCE_FRESH - 1);
  rc = farm__announce_check(doc, sizeof doc, key, now, &a, err, sizeof err);
  OK(rc == FARM_ETIMEDOUT && strstr(err, "ago") != NULL, "made 61 s ago: stale, said");
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, now + FARM_ANNOUNCE_FRESH + 1);
  rc = farm__announce_check(doc, sizeof doc, key, now, &a, err, sizeof err);
  OK(rc == FARM_ETIMEDOUT && strstr(err, "ahead") != NULL, "made 61 s ahead: refused, said");
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, now - FARM_ANNOUNCE_FRESH + 2);
  int r1 = check(doc, sizeof doc, key, now);
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, now + FARM_ANNOUNCE_FRESH - 2);
  OK(r1 == 0 && check(doc, sizeof doc, key, now) == 0, "58 s either way: good");
  doc_record(doc, key, FARM_PROTOCOL, "10.203.0.2", 7070, 0);
  OK(check(doc, sizeof doc, key, now) == FARM_ETIMEDOUT, "time 0: stale");

  /* ---- options ---- */
  char url[300], iface[16];
  unsigned port;
  OK(farm__join_url("--listen", "7078", url, sizeof url, err, sizeof err) == 0 && !strcmp(url, "tcp://127.0.0.1:7078") &&
     farm__join_url("--listen", "10.0.0.1:9", url, sizeof url, err, sizeof err) == 0 && !strcmp(url, "tcp://10.0.0.1:9") &&
     farm__join_url("--join", "tcp://h.example:65535", url, sizeof url, err, sizeof err) == 0 &&
     !strcmp(url, "tcp://h.example:65535"),
     "--listen/--join: PORT, HOST:PORT and tcp://HOST:PORT");
  const char *badurls[] = { "", "0", "65536", "h:", ":7", "h:x", "tcp://h", "[::1]:7", "a/b:7", "h:7x" };
  int badurl_ok = 1;
  for (int i = 0; i < 10; i++) {
    err[0] = 0;
    badurl_ok &= farm__join_url("--listen", badurls[i], url, sizeof url, err, sizeof err) < 0 &&
                 strstr(err, "--listen takes HOST:PORT") != NULL;
  }
  OK(badurl_ok, "--listen: ten bad addresses, each refused in a line naming the option and the form");
  OK(farm__iface_parse("--announce", "eth0", iface, &port, err, sizeof err) == 0 && !strcmp(iface, "eth0") &&
     port == FARM_DISCOVERY_PORT && farm__iface_parse("--announce", "br-x:9000", iface, &port, err, sizeof err) == 0 &&
     !strcmp(iface, "br-x") && port == 9000, "--announce/--discover: IFACE and IFACE:PORT (default 7079)");
  const char *badif[] = { "", ":7079", "eth0:", "eth0:0", "eth0:70000", "averyveryverylongname", "a/b", "eth0:x" };
  int badif_ok = 1;
  for (int i = 0; i < 8; i++) badif_ok &= farm__iface_parse("--discover", badif[i], iface, &port, err, sizeof err) < 0 &&
                                         strstr(err, "--discover takes") != NULL;
  OK(badif_ok, "--discover: eight bad interfaces, each refused in a line naming the option");
  struct in_addr ia, bc;
  OK(farm__iface_addr("nosuch0", &ia, &bc, err, sizeof err) < 0 && strstr(err, "no network interface 'nosuch0'") &&
     strstr(err, "lo"), "no such interface: said, with the interfaces there are");
  OK(farm__iface_addr("lo", &ia, &bc, err, sizeof err) < 0 && strstr(err, "no broadcast address"),
     "loopback: no broadcast address, said");

  /* ---- the client hears nodes join (join.c) over nanomsg ---- */
  int p = farm__free_port("127.0.0.1");
  char listen[64], lobby_url[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", p);
  added ad = { 0 };
  FILE *log = tmpfile();
  fflush(stderr);
  int saved = dup(2);
  dup2(fileno(log), 2);
  farm_join *j = NULL;
  farm_join_opts jo = { .listen = listen, .key = key, .add = on_add, .arg = &ad };
  rc = farm__join_open(&j, &jo, err, sizeof err);
  farm_join *j2 = NULL;
  int rc2 = farm__join_open(&j2, &jo, err, sizeof err);
  OK(rc == 0 && rc2 < 0 && strstr(err, "--listen") && strstr(err, listen), "a second listener at the same address: refused, said");
  farm_link *push = NULL;
  snprintf(url, sizeof url, "tcp://%s", listen);
  farm__join_link_open(&push, url, 0, err, sizeof err);
  /* another key's records, junk, an empty message, first */
  unsigned char bad[FARM_ANNOUNCE_LEN];
  for (int i = 0; i < 5; i++) {
    farm__announce_make(bad, other, lobby, 7070, farm__announce_clock());
    farm__link_send(push, bad, sizeof bad, 0);
    farm__link_send(push, junk, 100, 0);
    farm__link_send(push, junk, 0, 0);
  }
  /* then an announcer, as a node runs it, offering 127.0.0.1:<a port> */
  int lp = farm__free_port("127.0.0.1");
  snprintf(lobby_url, sizeof lobby_url, "tcp://127.0.0.1:%d", lp);
  const char *joins[1] = { url };
  farm_announcer *an = NULL;
  rc = farm__announcer_open(&an, key, lobby_url, joins, 1, NULL, 0, err, sizeof err);
  OK(rc == 0, "a node's announcer opens for --join");
  char note[700];
  double t0 = farm__now();
  for (double t = t0; t < t0 + 5 && !ad.calls; t = farm__now()) {
    farm__announcer_tick(an, t, note, sizeof note);
    pause_s(0.05);
  }
  OK(wait_calls(&ad, 1, 5) && !strcmp(ad.ip, "127.0.0.1") && ad.port == (unsigned)lp,
     "the node is added: 127.0.0.1 and its lobby's port");
  /* the same again and again: nothing more while JOIN_AGAIN lasts */
  for (int i = 0; i < 5; i++) farm__announcer_tick(an, farm__now() + 2.0 * (i + 1), note, sizeof note);
  farm__announce_make(rec, key, lobby, 7071, farm__announce_clock());
  farm__link_send(push, rec, sizeof rec, 0);
  OK(wait_calls(&ad, 2, 5) && !strcmp(ad.ip, "10.203.0.2") && ad.port == 7071,
     "a second node, by hand: added too");
  pause_s(0.3);
  OK(ad.calls == 2, "the first node's repeats and another key's records added nothing");
  farm__announcer_close(an);
  farm__link_close(push);
  farm__join_close(j);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char said[4096] = "";
  rewind(log);
  size_t got = fread(said, 1, sizeof said - 1, log);
  said[got] = 0;
  fclose(log);
  int ignored = 0, adding = 0;
  for (char *s = said; (s = strstr(s, "ignored an announcement from --listen")); s++) ignored++;
  for (char *s = said; (s = strstr(s, "announced itself")); s++) adding++;
  OK(ignored == 1 && strstr(said, "another key") != NULL,
     "fifteen bad messages from one source: one line on stderr, naming another key");
  OK(adding == 2, "each node added: one line");
  if (fails) fprintf(stderr, "stderr was:\n%s", said);

  /* ---- the node's announcer refuses what could not work ---- */
  rc = farm__announcer_open(&an, key, "tcp://127.0.0.1:7070", NULL, 0, "nosuch0", 7079, err, sizeof err);
  OK(rc < 0 && strstr(err, "--announce nosuch0: no network interface"), "--announce on no such interface: refused, said");
  rc = farm__announcer_open(&an, key, "tcp://127.0.0.1:7070", NULL, 0, "lo", 7079, err, sizeof err);
  OK(rc < 0 && strstr(err, "--announce lo:"), "--announce on loopback: refused, said");
  rc = farm__announcer_open(&an, key, "tcp://somehost:7070", joins, 1, NULL, 0, err, sizeof err);
  OK(rc < 0 && strstr(err, "IPv4 address"), "a node listening on a name, not an address: refused, said");

  printf("1..%d\n", n);
  return fails ? 1 : 0;
}
