/*
 * sshconfig.h -- what ~/.ssh/config says of a host, as OpenSSH reads it
 * (sshconfig.c), for the SSH launcher (ssh.c).
 *
 * Read: Host blocks (patterns with `*`, `?` and `!` negation, matched against
 * the host as given, case-insensitively), `Match all` (any other Match
 * criterion cannot be judged here -- exec, canonical, ... -- and its block is
 * not applied), Include (globs, relative to ~/.ssh, at most 16 deep), and of
 * the keywords HostName (%h, %%), Port, User and IdentityFile (~ and the
 * tokens %d %h %i %n %p %r %u %%). The first value obtained for a keyword
 * wins; IdentityFile lines add up, in order (ssh_config(5)). Other keywords
 * are not farm's business and are skipped. `Keyword value`, `Keyword=value`,
 * double quotes and `#` comments are read as OpenSSH reads them.
 *
 * What was given with the host (a hostfile's `user@host:port`) wins over the
 * file's User and Port. A missing file says nothing; a file that cannot be
 * read, or a line that is malformed (even in a block for another host, as
 * OpenSSH also refuses it), is an error of one line naming the file and the
 * line, e.g. "~/.ssh/config line 4: bad Port 'ssh2' (a number, 1 to 65535); fix that line".
 */
#ifndef FARM_SSHCONFIG_H
#define FARM_SSHCONFIG_H
#include <stddef.h>

#define FARM_SSHCFG_MAX_IDENTITY 100   /* OpenSSH's SSH_MAX_IDENTITY_FILES */

typedef struct farm_sshcfg_query {
  const char *path;                /* the file, e.g. $HOME/.ssh/config */
  const char *home;                /* ~ and %d; files under it are shown as ~/... */
  const char *host;                /* as given: matched against Host patterns (%n) */
  const char *user;                /* given with the host, or NULL/"": wins over User */
  int port;                        /* given with the host, or 0: wins over Port */
  const char *local_user;          /* %u, and the user when nothing else says */
} farm_sshcfg_query;

typedef struct farm_sshcfg {
  char hostname[256];              /* where to connect: HostName, else the host */
  char user[256];                  /* given, else User, else the local user */
  int port;                        /* given, else Port, else 22 */
  int changed;                     /* HostName or Port came from the file */
  char **identity;                 /* IdentityFile paths, expanded, in order */
  int nidentity;
} farm_sshcfg;

/* Look q->host up in q->path into out (free it with farm__sshcfg_free, also
   after an error). 0, or -1 with one line in err. */
int  farm__sshcfg_lookup(const farm_sshcfg_query *q, farm_sshcfg *out, char *err, size_t errlen);
void farm__sshcfg_free(farm_sshcfg *c);
/* Does one ssh_config pattern (`*` any run, `?` any one character) match
   name, case-insensitively? (Exposed for the tests.) */
int  farm__sshcfg_match(const char *pattern, const char *name);
#endif
