/*
 * kernels_decl.h -- the declarations of farm's compute kernels (kernels.c).
 *
 * This file is read as it is by LuaJIT's ffi.cdef, so it holds plain C
 * declarations and comments only: no #include, #define, include guard,
 * extern "C" or FILE*. C and C++ include include/farm_kernels.h, which adds
 * those around it. The kernels are in build/libfarmkernels.{a,so}, which does
 * not link Lua (LuaJIT: ffi.load it), and in libfarm and farm.so, where Lua
 * sees them as farm.kernels (core/lkernels.c).
 *
 * Integers are unsigned, so that a Lua integer's bits mean the same in C: a
 * seed of -1 is 2^64-1, a sum past 2^64 wraps as Lua integers do. Results are
 * the same on every machine for the same arguments (the floating-point
 * kernels are built without fused multiply-add, see the Makefile).
 *
 * Kernels that can refuse their arguments return 0, or -2 for a bad argument
 * and -1 for out of memory (FARM_EINVAL and FARM_ENOMEM of farm.h).
 */

/* Monte-Carlo pi: how many of n random points of the unit square fall inside
   the quarter disc. Each point is one output r of xoshiro256** (its state
   seeded by splitmix64 from seed): x = r >> 32 and y = r & 0xffffffff, as
   fractions of 2^32, and it is inside when x*x + y*y < 2^64 (exactly, in
   integers). pi is about 4 * hits / n. Same seed, same count, everywhere. */
uint64_t farm_kernel_pi_hits(uint64_t n, uint64_t seed);

/* How many primes are below n (p < n), and their sum modulo 2^64: a segmented
   sieve of Eratosthenes over odd numbers, in segments of 256 KiB plus the
   primes up to sqrt(n) (about 80 KB of them for n = 1e10). n may be at most
   2^48 (about 2.8e14, days of one core); above that, -2 and *out untouched. */
int farm_kernel_count_primes_below(uint64_t n, uint64_t *count);
int farm_kernel_sum_primes_below(uint64_t n, uint64_t *sum);

/* BLAKE2b of in[0..inlen) (libsodium's crypto_generichash, unkeyed) into
   out[0..outlen); outlen from 16 to 64 bytes (-2 otherwise). */
int farm_kernel_blake2b(unsigned char *out, size_t outlen, const unsigned char *in, size_t inlen);

/* A Mandelbrot tile of w by h pixels, rows first: pixel (i, j) is the point
   c = (x0 + i*dx) + (y0 + j*dy)i, and its value the number of iterations of
   z = z*z + c from z = 0 before |z| > 2, at most maxiter. Values are one byte
   each when maxiter <= 255, else two bytes little-endian (maxiter <= 65535),
   so out must hold w*h or 2*w*h bytes. -2 when w, h or maxiter is 0, or
   maxiter is above 65535. */
int farm_kernel_mandelbrot(unsigned char *out, double x0, double y0, double dx, double dy,
                           uint32_t w, uint32_t h, uint32_t maxiter);

/* c = a * b for dense row-major matrices: a is n by m, b is m by k, c is n by
   k (c may not overlap a or b). Each c[i][j] sums a[i][p] * b[p][j] for p
   from 0 up, in that order. */
void farm_kernel_matmul(double *c, const double *a, const double *b,
                        size_t n, size_t m, size_t k);
