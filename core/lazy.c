/* lazy.c -- see lazy.h. Threads: whichever loads the library (no state). */
#include <dlfcn.h>
#include <stdio.h>
#include "lazy.h"

int farm__lazy_load(const char *soname, const char *package, const char *const *names,
                    void **const *slots, int n, char *err, size_t errlen) {
  void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(err, errlen, "cannot load %s (apt-get install %s): %s", soname, package, dlerror());
    return -1;
  }
  for (int i = 0; i < n; i++) {
    if (!(*slots[i] = dlsym(h, names[i]))) {
      snprintf(err, errlen, "cannot load %s (apt-get install %s): it has no %s", soname, package, names[i]);
      dlclose(h);
      return -1;
    }
  }
  return 0;
}
