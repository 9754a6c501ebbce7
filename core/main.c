/* main.c -- the farm executable: everything is in farm_main (cli.c). */
#include "cli.h"
int main(int argc, char **argv) { return farm_main(argc, argv); }
