/*
 * hosts.h -- where nodes are: hostfiles, --hosts lists (hosts.c).
 *
 * A hostfile line is one host, as SCOOP reads them, plus farm's forms:
 *
 *     # comment                      (and blank lines)
 *     host                           SSH to host (port 22), start `farm node` there
 *     host 4                         ...with 4 workers (default: the CPUs it may use)
 *     user@host:2222 4               ...as user, on SSH port 2222
 *     [2001:db8::1]:2222             an IPv6 address with a port
 *     node://host:7070 [4]           a standing node, reached without SSH (port default 7070)
 *
 * A --hosts list is the same items separated by commas, with no worker count
 * (`h1,user@h2:2222,node://h3:7070`). Anything else is an error naming the file
 * and line (or the list item) and the form expected.
 */
#ifndef FARM_HOSTS_H
#define FARM_HOSTS_H
#include <stddef.h>

enum { FARM_HOST_SSH = 1, FARM_HOST_NODE = 2 };

typedef struct farm_host {
  int kind;                        /* FARM_HOST_SSH or FARM_HOST_NODE */
  char user[64];                   /* "" : the current user */
  char host[256];                  /* name or address, without brackets */
  int port;                        /* SSH port (22) or the node's port (7070) */
  int workers;                     /* 0: the node decides */
  char origin[320];                /* where it was given: "hosts:3", "--hosts item 2" */
} farm_host;

/* Read a hostfile. Returns the number of hosts (>= 0) with *out malloc'd (the
   caller frees it; NULL when 0), or -1 with one line in err, e.g.
   "hosts:3: bad worker count 'x'; a line is 'host [workers]'". */
int farm__hosts_file(const char *path, farm_host **out, char *err, size_t errlen);
/* Parse a --hosts list the same way. */
int farm__hosts_list(const char *list, farm_host **out, char *err, size_t errlen);
/* "user@host:port" as given (for messages): the host with what was set. */
void farm__host_name(const farm_host *h, char *out, size_t n);
#endif
