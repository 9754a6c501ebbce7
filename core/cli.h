/* cli.h -- the farm command line (the executable's, not the library's). */
#ifndef FARM_CLI_H
#define FARM_CLI_H
/* Run `farm ARGS...` (run, worker, --help, --version); returns the exit status. */
int farm_main(int argc, char **argv);
/* `farm repl ARGS...` (core/repl.c): the interactive prompt. */
int farm_repl_main(int argc, char **argv);
/* `farm node ARGS...` (nodes/node.c). */
int farm_node_main(int argc, char **argv);
#endif
