/* main.c -- the farm executable: everything is in farm_main (cli.c). Main thread. */
#include <malloc.h>
#include "cli.h"
int main(int argc, char **argv) {
  /* Arguments and results of megabytes are allocated and freed for every job:
     keep such blocks in the heap instead of mapping fresh (zeroed) pages for
     each (this process's choice, not the library's: a C host keeps its own). */
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  return farm_main(argc, argv);
}
