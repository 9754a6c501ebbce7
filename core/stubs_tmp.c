/* TEMPORARY: stubs until codec.c / dump.c / client.c land. Delete the ones you implement. */
#include "luafuncs.h"
