/*
 * term.h -- what a client's engine writes to the terminal (term.c): the jobs'
 * output echoed to stdout, farm's own lines on stderr, and the live progress
 * line. Any thread queues, under the term's own small lock (never the
 * engine's); the writes happen in farm__term_flush, which the engine calls
 * with its own lock released, so a slow terminal never holds up the
 * scheduler. What is queued goes out in the order it was queued, the progress
 * line cleared before it and drawn again after: nothing is glued onto it.
 *
 * Standard output that goes away (`farm run x.lua | head -1`) ends the
 * process as it would any program writing there, by SIGPIPE -- unless it
 * ignores SIGPIPE, and then the echo stops.
 */
#ifndef FARM_TERM_H
#define FARM_TERM_H
#include <stddef.h>

typedef struct farm_term farm_term;

farm_term *farm__term_new(void);
void farm__term_free(farm_term *t);
/* Queue bytes for stdout (a job's output). */
void farm__term_out(farm_term *t, const char *p, size_t n);
/* Queue one line for stderr (the newline is added). */
void farm__term_say(farm_term *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The progress line to show from the next flush on (without "\r" or a
   newline); NULL or "": none (it is cleared). */
void farm__term_progress(farm_term *t, const char *line);
/* Write what is queued (any thread; never with the engine's lock held). */
void farm__term_flush(farm_term *t);
/* The script is about to write to the terminal itself: the progress line is
   cleared now, and drawn again at the next flush. */
void farm__term_clear(farm_term *t);
#endif
