/* cli.h -- the farm command line (the executable's, not the library's).
   The options `farm run` and `farm repl` share are cliopts.h's; `farm repl`
   is repl.h's. */
#ifndef FARM_CLI_H
#define FARM_CLI_H
/* Run `farm ARGS...` (run, worker, --help, --version); returns the exit status. */
int farm_main(int argc, char **argv);
/* `farm node ARGS...` (nodes/node.c). */
int farm_node_main(int argc, char **argv);
#endif
