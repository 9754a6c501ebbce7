/* repl.h -- `farm repl` (core/repl.c), a command of the executable alone. */
#ifndef FARM_REPL_H
#define FARM_REPL_H
/* `farm repl ARGS...`: the interactive prompt; returns the exit status. */
int farm_repl_main(int argc, char **argv);
#endif
