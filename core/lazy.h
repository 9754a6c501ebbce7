/* lazy.h -- a shared library loaded when first needed (dlopen), its symbols
   into a table of the caller's: farm's executable and workers do not pay for
   libssh2 (with OpenSSL) and libedit at exec, only SSH launching and the REPL. */
#ifndef FARM_LAZY_H
#define FARM_LAZY_H
#include <stddef.h>

/* Open soname and set *slots[i] to the address of names[i] (n of them). 0,
   or -1 with err saying "cannot load SONAME (apt-get install PACKAGE): why".
   The handle is kept open for the process's life. */
int farm__lazy_load(const char *soname, const char *package, const char *const *names,
                    void **const *slots, int n, char *err, size_t errlen);

/* An X-macro list of symbols as the names and the slots of a table t. */
#define FARM_LAZY_NAME(f) #f,
#define FARM_LAZY_SLOT(f) (void **)&t.f,
#endif
