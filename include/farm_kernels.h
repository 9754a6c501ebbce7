/*
 * farm_kernels.h -- farm's compute kernels, for C and C++.
 *
 * A thin wrapper: the declarations and their contracts are in kernels_decl.h,
 * which LuaJIT's ffi.cdef reads as it is and which must therefore stay free of
 * preprocessor lines; this header adds what a C compiler needs around them.
 * Link with -lfarmkernels (no Lua in it) or with libfarm.
 */
#ifndef FARM_KERNELS_H
#define FARM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels_decl.h"

#ifdef __cplusplus
}
#endif
#endif
