/*
 * files.c -- the files jobs send, written on the client (files.h). Threads:
 * any queues (mu, held for a pointer); one flushes at a time (wmu, held across
 * the writes, which also guards what the writing decides by: the destination
 * made, the names nodes wrote), never with the engine's lock held: a file may
 * be 64 MiB and the file system slow, and the scheduler does not wait for it.
 * The engine handles no message while a file waits (farm__files_pending), so
 * a job's result is never seen before the file it sent first is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sodium.h>
#include "farm.h"
#include "files.h"
#include "hash.h"
#include "term.h"

/* A file a job sent, checked and waiting to be written. */
typedef struct pending_file {
  struct pending_file *next;
  char name[PATH_MAX];             /* below dest (farm__files_name checked it) */
  char from[48];                   /* the peer's name, for messages */
  uint64_t job;
  int untrusted;                   /* from a node: never replaces a file that was there */
  uint64_t dev, ino;               /* a local worker's: the file itself (0: no check) */
  size_t ndata;
  char data[];
} pending_file;

struct farm_files {
  pthread_mutex_t mu;              /* guards q, q_tail */
  pthread_mutex_t wmu;             /* one flush at a time; guards dest_default, node_names */
  pending_file *q, *q_tail;        /* queued, oldest first */
  int pending;                     /* (atomic) queued and not yet written */
  struct farm_term *term;
  char dest[PATH_MAX];             /* (fixed once made) */
  const char *dest_shown;          /* ...as the user is told it (a suffix of dest) */
  int dest_default;                /* dest is the run's own directory, made at its first file */
  farm_hash node_names;            /* names below dest that files from nodes created in this
                                      run (by name_hash, each its strdup'd name) */
};

farm_files *farm__files_new(struct farm_term *term, const char *dest) {
  farm_files *fs = calloc(1, sizeof *fs);
  if (!fs) return NULL;
  pthread_mutex_init(&fs->mu, NULL);
  pthread_mutex_init(&fs->wmu, NULL);
  fs->term = term;
  if (dest && *dest) {
    if (dest[0] == '/') snprintf(fs->dest, sizeof fs->dest, "%s", dest);
    else {
      char cwd[PATH_MAX];
      if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
      snprintf(fs->dest, sizeof fs->dest, "%.2000s/%.2000s", cwd, dest);
    }
  } else {
    /* farm-out/YYYYmmdd-HHMMSS-PID, made when the first file comes (make_dest) */
    char cwd[PATH_MAX], run[64];
    time_t now = time(NULL);
    struct tm tm;
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
    strftime(run, sizeof run, "%Y%m%d-%H%M%S", localtime_r(&now, &tm));
    int k = snprintf(fs->dest, sizeof fs->dest, "%.3000s/", cwd);
    snprintf(fs->dest + k, sizeof fs->dest - (size_t)k, "farm-out/%s-%ld", run, (long)getpid());
    fs->dest_shown = fs->dest + k;
    fs->dest_default = 1;
  }
  return fs;
}

void farm__files_free(farm_files *fs) {
  if (!fs) return;
  for (pending_file *f = fs->q, *next; f; f = next) { next = f->next; free(f); }
  void *name;
  for (size_t i = 0; (i = farm__hash_next(&fs->node_names, i, NULL, &name)); ) free(name);
  farm__hash_free(&fs->node_names);
  pthread_mutex_destroy(&fs->mu);
  pthread_mutex_destroy(&fs->wmu);
  free(fs);
}

int farm__files_name(const char *path, size_t n, int untrusted, char *out, size_t outlen) {
  if (!n || n >= outlen || memchr(path, 0, n)) return -1;
  int inside = path[0] != '/';
  for (size_t i = 0; inside && i < n; ) {          /* any ".." part: not inside */
    size_t k = i;
    while (k < n && path[k] != '/') k++;
    if (k - i == 2 && path[i] == '.' && path[i + 1] == '.') inside = 0;
    i = k + 1;
  }
  size_t from = 0, len = 0;
  if (!inside) for (size_t i = 0; i < n; i++) if (path[i] == '/') from = i + 1;
  for (size_t i = from; i < n; ) {
    size_t k = i;
    while (k < n && path[k] != '/') k++;
    size_t m = k - i;
    if (m && !(m == 1 && path[i] == '.')) {
      if ((m == 2 && path[i] == '.' && path[i + 1] == '.') || (untrusted && path[i] == '.')) return -1;
      if (len) out[len++] = '/';
      memcpy(out + len, path + i, m);
      len += m;
    }
    i = k + 1;
  }
  out[len] = 0;
  return len ? 0 : -1;
}

/* Give the temporary file tmp the name part, unless part exists (whatever it
   is: a file, a directory, a symlink). renameat2 does it in one step; where the
   file system cannot (EINVAL), a hard link does, which fails on an existing
   name too. -1 with errno EEXIST when the name is taken. */
static int rename_noreplace(int dfd, const char *tmp, const char *part) {
#ifdef RENAME_NOREPLACE
  if (renameat2(dfd, tmp, dfd, part, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
  if (linkat(dfd, tmp, dfd, part, 0) < 0) return -1;
  unlinkat(dfd, tmp, 0);
  return 0;
}

/* farm__write_below; noreplace: never replace an existing name (1 when it
   exists, nothing written). */
static int write_below(const char *dir, const char *rel, const void *data, size_t n,
                       uint64_t same_dev, uint64_t same_ino, int noreplace, unsigned xbits,
                       char *why, size_t whylen) {
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1, fd = -1;
  char part[NAME_MAX + 1], tmp[NAME_MAX + 32];
  if (dfd < 0) { snprintf(why, whylen, "cannot open %s: %s", dir, strerror(errno)); return -1; }
  const char *s = rel;
  for (;;) {                             /* down the directories, never through a symlink */
    const char *slash = strchr(s, '/');
    size_t m = slash ? (size_t)(slash - s) : strlen(s);
    if (!m || m > NAME_MAX) { snprintf(why, whylen, "a bad name"); goto out; }
    memcpy(part, s, m);
    part[m] = 0;
    if (!slash) break;
    if (mkdirat(dfd, part, 0777) < 0 && errno != EEXIST) goto fail;
    int next = openat(dfd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) goto fail;
    close(dfd);
    dfd = next;
    s = slash + 1;
  }
  struct stat st;
  if (same_ino && fstatat(dfd, part, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      (uint64_t)st.st_dev == same_dev && (uint64_t)st.st_ino == same_ino) {
    rc = 0;                              /* it is that very file already */
    goto out;
  }
  if (noreplace && fstatat(dfd, part, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    rc = 1;                              /* (rename_noreplace says it again, atomically) */
    goto out;
  }
  for (int tries = 0; fd < 0 && tries < 16; tries++) {
    snprintf(tmp, sizeof tmp, ".%.200s.farm-%08x", part, randombytes_random());
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) goto fail;
  }
  if (fd < 0) goto fail;
  for (size_t at = 0; at < n; ) {
    ssize_t k = write(fd, (const char *)data + at, n - at);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) { if (!k) errno = EIO; goto fail_tmp; }
    at += (size_t)k;
  }
  /* a program shipped to run keeps its execute bits; only those (& 0111: never
     setuid, setgid or sticky), added to what the umask left */
  if (xbits & 0111) {
    struct stat fst;
    if (fstat(fd, &fst) < 0 || fchmod(fd, (fst.st_mode & 0777) | (xbits & 0111)) < 0) goto fail_tmp;
  }
  if (close(fd) < 0) { fd = -1; goto fail_tmp; }
  fd = -1;
  if ((noreplace ? rename_noreplace(dfd, tmp, part) : renameat(dfd, tmp, dfd, part)) < 0) {
    if (noreplace && errno == EEXIST) {
      unlinkat(dfd, tmp, 0);
      rc = 1;
      goto out;
    }
    goto fail_tmp;
  }
  rc = 0;
  goto out;
fail_tmp:
  snprintf(why, whylen, "%s", strerror(errno));
  unlinkat(dfd, tmp, 0);
  goto out;
fail:
  snprintf(why, whylen, "%s", strerror(errno));
out:
  if (fd >= 0) close(fd);
  close(dfd);
  return rc;
}

int farm__write_below(const char *dir, const char *rel, const void *data, size_t n,
                      uint64_t same_dev, uint64_t same_ino, unsigned xbits, char *why, size_t whylen) {
  return write_below(dir, rel, data, n, same_dev, same_ino, 0, xbits, why, whylen);
}

/* The names below dest that files from nodes created in this run: a node may
   write such a name again (a job tried again, elsewhere, sends its file anew),
   never one that was there before, nor one a local worker wrote. */
static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static int node_name_known(farm_files *fs, const char *name) {
  const char *x = farm__hash_get(&fs->node_names, name_hash(name));
  return x && !strcmp(x, name);
}

/* (Two names of one 64-bit hash: the second is not kept, so a node may not
   write it again -- the safe way to be wrong.) */
static int node_name_add(farm_files *fs, const char *name) {
  uint64_t k = name_hash(name);
  if (farm__hash_get(&fs->node_names, k)) return 0;
  char *x = strdup(name);
  if (!x || farm__hash_put(&fs->node_names, k, x) < 0) { free(x); return FARM_ENOMEM; }
  return 0;
}

/* The run's own directory for sent files (the default destination), made
   when the first file arrives: farm-out/ in the current directory, and in it
   one directory per run (a run never meets an earlier run's files, and
   nothing there is on package.path). The user is told once where it is. */
static int make_dest(farm_files *fs, char *why, size_t whylen) {
  if (!fs->dest_default) return 0;
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", fs->dest);
  char *slash = strrchr(parent, '/');
  if (slash) *slash = 0;
  if ((mkdir(parent, 0777) < 0 && errno != EEXIST) || (mkdir(fs->dest, 0777) < 0 && errno != EEXIST)) {
    snprintf(why, whylen, "cannot make %.200s: %s", fs->dest_shown, strerror(errno));
    return -1;
  }
  fs->dest_default = 0;
  farm__term_say(fs->term, "farm: the files jobs send are in %s (--dest DIR or farm.config{dest = DIR} to choose)",
                 fs->dest_shown);
  return 0;
}

int farm__files_queue(farm_files *fs, const char *name, const void *data, size_t n,
                      uint64_t dev, uint64_t ino, int untrusted, uint64_t job, const char *from) {
  /* The copy is the price of writing outside the engine's lock (the message
     it came in is freed when the engine is done with it). */
  pending_file *f = malloc(sizeof *f + n + 1);
  if (!f) return FARM_ENOMEM;
  memset(f, 0, sizeof *f);
  snprintf(f->name, sizeof f->name, "%s", name);
  snprintf(f->from, sizeof f->from, "%s", from);
  f->job = job;
  f->untrusted = untrusted;
  f->dev = dev;
  f->ino = ino;
  if (n) memcpy(f->data, data, n);
  f->ndata = n;
  pthread_mutex_lock(&fs->mu);
  if (fs->q_tail) fs->q_tail->next = f; else fs->q = f;
  fs->q_tail = f;
  __atomic_add_fetch(&fs->pending, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&fs->mu);
  return 0;
}

int farm__files_pending(const farm_files *fs) {
  return fs ? __atomic_load_n(&fs->pending, __ATOMIC_SEQ_CST) : 0;
}

void farm__files_flush(farm_files *fs) {
  if (!farm__files_pending(fs)) return;
  pthread_mutex_lock(&fs->wmu);
  for (;;) {
    pthread_mutex_lock(&fs->mu);
    pending_file *f = fs->q;
    if (f && !(fs->q = f->next)) fs->q_tail = NULL;
    pthread_mutex_unlock(&fs->mu);
    if (!f) break;
    char why[300];
    /* From a node, a file never replaces one that was there: the user may run it
       next (./?.lua is on package.path), and it was not the node's to change. */
    int noreplace = f->untrusted && !node_name_known(fs, f->name), rc;
    if (make_dest(fs, why, sizeof why) < 0)
      rc = -1;
    else
      /* what a node sends is data: never executable here (xbits 0) */
      rc = write_below(fs->dest, f->name, f->data, f->ndata, f->dev, f->ino, noreplace, 0, why, sizeof why);
    if (rc < 0)
      farm__term_say(fs->term, "farm: cannot write %s/%s, sent by job %llu: %s", fs->dest, f->name,
              (unsigned long long)f->job, why);
    else if (rc > 0)
      farm__term_say(fs->term, "farm: refused the file '%s' that job %llu sent from %s: a file of that name is "
              "already in %s (files from nodes never replace one)", f->name, (unsigned long long)f->job,
              f->from, fs->dest);
    else if (noreplace)
      node_name_add(fs, f->name);      /* (out of memory: the node may not write it again) */
    free(f);
    __atomic_sub_fetch(&fs->pending, 1, __ATOMIC_SEQ_CST);
  }
  pthread_mutex_unlock(&fs->wmu);
}
