/*
 * sockdir.h -- the directory local workers' sockets live in while they connect
 * (sockdir.c). It exists only while workers connect, so a client that ends by
 * os.exit or SIGKILL leaves nothing; one killed in that moment is swept up by
 * the next client (its farm-PID-* directory, once that PID is gone).
 * Threads: whoever holds the engine's lock (the loop, the opener).
 */
#ifndef FARM_SOCKDIR_H
#define FARM_SOCKDIR_H
#include <stddef.h>

/* Make dir (a buffer of PATH_MAX): $TMPDIR (or /tmp)/farm-PID-XXXXXX. dir, or
   NULL with err saying why. */
const char *farm__sockdir_make(char *dir, char *err, size_t errlen);
/* Sweep up what gone clients left in $TMPDIR (or /tmp): the engine's loop calls
   it once its first workers were started, while they exec and set up (reading
   a /tmp of 1,000 entries costs 0.3 ms, which the first result waited for when
   it ran before the first fork). */
void farm__sockdir_sweep(void);
/* Remove dir (made by farm__sockdir_make, its sockets gone) if any; dir is "" after. */
void farm__sockdir_remove(char *dir);
#endif
