/* main.c -- the farm executable: everything is in farm_main (cli.c). */
#include "farm.h"
int main(int argc, char **argv) { return farm_main(argc, argv); }
