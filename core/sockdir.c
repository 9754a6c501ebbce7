/*
 * sockdir.c -- the directory of local workers' sockets (sockdir.h).
 * Threads: whoever holds the engine's lock (the loop, the opener).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sockdir.h"

/* Remove what a client killed while its workers were connecting left behind:
   our own farm-PID-* directories of processes that are gone. */
static void sweep(const char *tmp) {
  DIR *d = opendir(tmp);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    long pid;
    char rest[16];
    if (sscanf(e->d_name, "farm-%ld-%15s", &pid, rest) != 2 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
    DIR *sub = opendir(path);
    if (sub) {
      struct dirent *f;
      char file[PATH_MAX + 256];
      while ((f = readdir(sub)))
        if (f->d_name[0] != '.') { snprintf(file, sizeof file, "%s/%s", path, f->d_name); unlink(file); }
      closedir(sub);
    }
    rmdir(path);
  }
  closedir(d);
}

static const char *tmpdir(void) {
  const char *tmp = getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

void farm__sockdir_sweep(void) { sweep(tmpdir()); }

const char *farm__sockdir_make(char *dir, char *err, size_t errlen) {
  if (dir[0]) return dir;
  const char *tmp = tmpdir();
  snprintf(dir, PATH_MAX, "%s/farm-%ld-XXXXXX", tmp, (long)getpid());
  if (mkdtemp(dir)) return dir;
  snprintf(err, errlen, "cannot make a directory for worker sockets in %s: %s", tmp, strerror(errno));
  dir[0] = 0;
  return NULL;
}

void farm__sockdir_remove(char *dir) {
  if (dir[0]) rmdir(dir);
  dir[0] = 0;
}
