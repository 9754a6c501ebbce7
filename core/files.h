/*
 * files.h -- where the files jobs send (farm.send_file) land on the client
 * (files.c): the name each gets below the destination, and the writing,
 * queued by the engine with the checks done and written outside its lock, in
 * the order they came. Threads: any thread queues (a small lock, held for a
 * pointer); one flushes at a time (the writer's lock, held across the writes),
 * never with the engine's lock held, as term.h's terminal is flushed.
 */
#ifndef FARM_FILES_H
#define FARM_FILES_H
#include <stddef.h>
#include <stdint.h>

struct farm_term;
typedef struct farm_files farm_files;

/* The files of one engine, written below dest (absolute, or relative to the
   current directory); NULL or "": the run's own farm-out/YYYYmmdd-HHMMSS-PID
   below the current directory, made at the first file (the user is told
   where on term). NULL when out of memory. */
farm_files *farm__files_new(struct farm_term *term, const char *dest);
/* Frees what was never written too. */
void farm__files_free(farm_files *fs);

/* Where a sent file goes under the destination: its path as the job named it
   when that stays below (relative, no ".."; empty and "." parts dropped), else
   its last component. From another host (untrusted) a part that begins with a
   dot is refused: a node must not plant .bashrc or .git/config. 0 or -1. */
int  farm__files_name(const char *path, size_t n, int untrusted, char *out, size_t outlen);

/* Queue a file to write at name (from farm__files_name); data is copied. job
   and from (the peer) name it in messages; untrusted (from a node): it never
   replaces a file that was there, nor one a local worker wrote; dev and ino (a
   local worker's file, 0: none): nothing is written when the file there is
   that very one. 0, or FARM_ENOMEM. Any thread. */
int  farm__files_queue(farm_files *fs, const char *name, const void *data, size_t n,
                       uint64_t dev, uint64_t ino, int untrusted, uint64_t job, const char *from);
/* Files queued and not yet written (any thread). */
int  farm__files_pending(const farm_files *fs);
/* Write what is queued, in order, and say on term what went wrong (any
   thread; never with the engine's lock held). */
void farm__files_flush(farm_files *fs);

/* Write data to rel (parts checked by the caller: no "..", none empty) below
   directory dir, at once (a temporary file renamed over it), making the
   directories on the way and never following a symlink below dir. Nothing is
   written when the file there is the one with same_ino (and same_dev; 0: no
   such check). xbits: execute bits (of 0111, no others) the file gets besides
   its 0644 less the umask. 0, or -1 with why. (The node's files too.) */
int farm__write_below(const char *dir, const char *rel, const void *data, size_t n,
                      uint64_t same_dev, uint64_t same_ino, unsigned xbits, char *why, size_t whylen);
#endif
