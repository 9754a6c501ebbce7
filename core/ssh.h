/*
 * ssh.h -- starting a command on another host over SSH, with libssh2 (ssh.c).
 *
 * The host key is checked against ~/.ssh/known_hosts before anything else, by
 * OpenSSH's rules: a host on a port other than 22 matches only `[host]:port`
 * entries (hashed or not); a key marked `@revoked` is refused first, for any
 * host and even with accept_new; a changed key is refused; an unknown host is
 * refused with the ssh-keyscan line that would add it, unless accept_new (then
 * the key is added to known_hosts, as `StrictHostKeyChecking=accept-new` does).
 * `@cert-authority` lines are ignored. A key added is told (the note callback):
 * "added host 127.0.0.1:2222 (ssh-ed25519 SHA256:...) to ~/.ssh/known_hosts".
 *
 * ~/.ssh/config is read first (sshconfig.h): its Host entries give HostName,
 * Port, User and IdentityFile, as ssh_config(5) says; a user or port given in
 * the options wins over the file's. The host key is then checked under the
 * real HostName and Port, as OpenSSH does.
 *
 * Authentication: the SSH agent (SSH_AUTH_SOCK), else the config's
 * IdentityFile keys, else ~/.ssh/id_ed25519, then ~/.ssh/id_ecdsa. A key file
 * protected by a passphrase is not tried (nothing here can ask for it): it is
 * named with the fix, loading it into ssh-agent. An RSA key is refused with a
 * message saying why (Debian's libssh2 1.10 signs only with SHA-1, which
 * OpenSSH refuses) and naming ed25519.
 *
 * The command runs on an exec channel without a pty. Its stdin stays open for
 * as long as the session: closing it (farm__ssh_close, or this process dying)
 * is how the remote command learns that its client is gone.
 */
#ifndef FARM_SSH_H
#define FARM_SSH_H
#include <stddef.h>

typedef struct farm_ssh farm_ssh;

typedef struct farm_ssh_opts {
  const char *user;                /* NULL or "": ~/.ssh/config's User, else $USER (or the login name) */
  const char *host;                /* as given: ~/.ssh/config's Host patterns match it */
  int port;                        /* 0: ~/.ssh/config's Port, else 22 */
  const char *command;             /* run there by the user's shell */
  const void *input;               /* written to the command's stdin at once (a secret: */
  size_t ninput;                   /* ...never on a command line) */
  int accept_new;                  /* add an unknown host's key to known_hosts */
  double timeout;                  /* seconds for connect, handshake, auth, exec, first line */
  void (*note)(void *ud, const char *line);   /* NULL, or told what was done for the user */
  void *note_ud;                   /* (a host key added to known_hosts), one line each */
} farm_ssh_opts;

/* Connect, check the host key, authenticate, run the command, write input, and
   read the first line the command prints on stdout (without its newline) into
   line. On failure returns a negative FARM_E* code and one line in err naming
   the host and the fix, e.g.
     "host 127.0.0.1:2222: unknown host key; add it with: ssh-keyscan -p 2222 -t ed25519 127.0.0.1 >> ~/.ssh/known_hosts (or pass --accept-new-hosts)"
     "host h: the host key has CHANGED (ssh-ed25519 SHA256:...); if that is expected, remove the old line from ~/.ssh/known_hosts"
     "host h: the host key (ssh-ed25519 SHA256:...) is marked @revoked in ~/.ssh/known_hosts line 3: it was revoked and you cannot connect to it (...); the host needs a new key: ask its administrator"
     "host h: login refused for user root (tried the SSH agent, ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa)"
     "host h: ~/.ssh/id_ed25519 is protected by a passphrase; load it into ssh-agent (ssh-add ~/.ssh/id_ed25519) and run again"
     "host alias (127.0.0.1:2222 from ~/.ssh/config): connection refused (is sshd running there?)"
     "host h: ~/.ssh/config line 4: bad Port 'x' (a number, 1 to 65535); fix that line"
     "host h: 'farm' was not found there (sh: 1: farm: not found); install farm there or pass --remote-farm PATH"
   The last: the command exited before printing a line (its stderr is in err). */
int  farm__ssh_launch(farm_ssh **out, const farm_ssh_opts *o, char *line, size_t linelen,
                      char *err, size_t errlen);
/* The numeric address it connected to ("127.0.0.1", "10.203.0.2", "::1"). */
const char *farm__ssh_addr(const farm_ssh *s);
/* The session's socket, to poll for input. */
int  farm__ssh_fd(const farm_ssh *s);
/* Never blocks: read what the command wrote since (stdout and stderr lines are
   passed to log, when given, one line at a time). Returns 0 while it runs, 1
   once the channel is closed (why: its exit status and last stderr line), <0
   when the connection failed (why says how). */
int  farm__ssh_poll(farm_ssh *s, void (*log)(void *ud, const char *line), void *ud,
                    char *why, size_t whylen);
/* Close the command's stdin and the channel, disconnect, free. NULL is fine. */
void farm__ssh_close(farm_ssh *s);
#endif
