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
 *
 * A batch scheduler's allocation is hosts too (`--nodes slurm|pbs|sge|auto`):
 *
 *     slurm   SLURM_JOB_NODELIST in Slurm's hostlist syntax (`cn[01-04,07]`) and
 *             SLURM_JOB_CPUS_PER_NODE (`2(x3),1`): FARM_HOST_SLURM hosts, one per
 *             node, its CPUs as workers (srun starts them; no SSH)
 *     pbs     $PBS_NODEFILE, one host name a line, repeated once per CPU: SSH hosts
 *     sge     $PE_HOSTFILE, lines 'host slots queue processors': SSH hosts
 *     auto    the first of these that the environment shows, else none (the local pool)
 */
#ifndef FARM_HOSTS_H
#define FARM_HOSTS_H
#include <stddef.h>

enum { FARM_HOST_SSH = 1, FARM_HOST_NODE = 2, FARM_HOST_SLURM = 3 };

typedef struct farm_host {
  int kind;                        /* FARM_HOST_SSH, FARM_HOST_NODE or FARM_HOST_SLURM */
  char user[64];                   /* "" : the current user */
  char host[256];                  /* name or address, without brackets */
  int port;                        /* SSH port (22) or the node's port (7070); 0 for a
                                      Slurm node until its launcher picks one */
  int port_given;                  /* the port was written (`host:22` too): for an SSH
                                      host, it wins over ~/.ssh/config's Port */
  int workers;                     /* 0: the node decides */
  char origin[320];                /* where it was given: "hosts:3", "--hosts item 2" */
} farm_host;

/* Read a hostfile. Returns the number of hosts (>= 0) with *out malloc'd (the
   caller frees it; NULL when 0), or -1 with one line in err, e.g.
   "hosts:3: bad worker count 'x'; a line is 'host [workers]'". */
int farm__hosts_file(const char *path, farm_host **out, char *err, size_t errlen);
/* One hostfile line given alone (farm.add_nodes): 1 with *out filled, 0 for a
   blank or comment line, or -1 with one line in err, which origin begins. */
int farm__hosts_line(const char *line, const char *origin, farm_host *out, char *err, size_t errlen);
/* Parse a --hosts list the same way. */
int farm__hosts_list(const char *list, farm_host **out, char *err, size_t errlen);
/* "user@host:port" as given (for messages): the host with what was set; a
   Slurm node is its name alone. */
void farm__host_name(const farm_host *h, char *out, size_t n);

/* At most this many names in one expanded host list, and workers on one host. */
#define FARM_HOSTLIST_MAX 65536

/* Expand a Slurm hostlist, as SLURM_JOB_NODELIST holds it, in Slurm's order:
     cn[01-04,07]       cn01 cn02 cn03 cn04 cn07 (the low number's zero padding kept)
     rack[1-2]-n[1-3]   rack1-n1 rack1-n2 rack1-n3 rack2-n1 ... (the last bracket fastest)
     a,b[1-2],c         a b1 b2 c (commas inside brackets belong to the bracket)
     n[5]               n5
   A name is letters, digits, '-', '.' and '_' (not starting with '-'), at most
   255 bytes. Returns the number of names (>= 1) with *names a malloc'd array of
   malloc'd strings (free with farm__hostlist_free), or -1 with *names NULL and
   one line in err: "malformed host list 'cn[01-' (SLURM_JOB_NODELIST): '[' without
   ']' in 'cn[01-'". More than FARM_HOSTLIST_MAX names in all is refused before
   any is made. Names are not deduplicated (Slurm does not either). */
int farm__hostlist_expand(const char *list, char ***names, char *err, size_t errlen);
/* Free what farm__hostlist_expand gave (names may be NULL). */
void farm__hostlist_free(char **names, int n);

/* Expand SLURM_JOB_CPUS_PER_NODE ("2(x3),1", "4", "36(x2)": a count, then how
   many nodes in a row have it) into cpus[0..n). The counts must cover exactly n
   nodes, each 1 to FARM_HOSTLIST_MAX. Returns n, or -1 with one line in err:
   "SLURM_JOB_CPUS_PER_NODE '2(x3),1': it gives 4 nodes, SLURM_JOB_NODELIST has 5". */
int farm__cpus_per_node(const char *spec, int n, int *cpus, char *err, size_t errlen);

/* The Slurm allocation this process is in: SLURM_JOB_NODELIST (else
   SLURM_NODELIST) and SLURM_JOB_CPUS_PER_NODE (else SLURM_TASKS_PER_NODE; neither:
   workers 0, the node decides). Hosts are FARM_HOST_SLURM, port 0, workers the
   node's CPUs, origin "SLURM_JOB_NODELIST item K". Returns the number of hosts
   (*out malloc'd), or -1 with one line in err; outside an allocation "--nodes
   slurm: not inside a Slurm allocation (SLURM_JOB_NODELIST is not set); run farm
   inside salloc or an sbatch script". */
int farm__hosts_slurm(farm_host **out, char *err, size_t errlen);
/* The PBS job's $PBS_NODEFILE: one host name a line (blank lines skipped), a
   host repeated once per CPU it gives. SSH hosts (port 22), in the order they
   first appear, workers = their number of lines, origin "FILE:LINE" of the
   first. Unset: "--nodes pbs: not inside a PBS job (PBS_NODEFILE is not set)";
   a file that cannot be read or lists no hosts, or a bad line: one line naming
   the file (and the line). */
int farm__hosts_pbs(farm_host **out, char *err, size_t errlen);
/* The SGE job's $PE_HOSTFILE: lines 'host slots [queue [processors]]'. SSH
   hosts (port 22), workers = slots (a host on several lines, e.g. two queues:
   their sum), in order, origin "FILE:LINE". Unset: "--nodes sge: not inside an
   SGE job (PE_HOSTFILE is not set)"; a bad line: "FILE:LINE: ..."; a file that
   cannot be read or lists no hosts: one line naming it. */
int farm__hosts_sge(farm_host **out, char *err, size_t errlen);
/* The first of Slurm, PBS and SGE that the environment shows (SLURM_JOB_NODELIST
   or SLURM_NODELIST, PBS_NODEFILE, PE_HOSTFILE set and not empty), read as
   above, with *which = "slurm", "pbs" or "sge" (static strings). None: 0 hosts,
   *out NULL, *which = "local" (the local pool). -1 on an error of the one found. */
int farm__hosts_auto(farm_host **out, const char **which, char *err, size_t errlen);
/* What `--nodes ARG` means: "slurm", "pbs", "sge" and "auto" as above (auto may
   give 0 hosts: the local pool), anything else a hostfile (farm__hosts_file). A
   hostfile that is named like one of these words is given with a path, as
   ./slurm. */
int farm__hosts_named(const char *arg, farm_host **out, char *err, size_t errlen);
#endif
