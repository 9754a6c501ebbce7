/*
 * kernels.c -- compute kernels: hot loops in C, for jobs that would spend
 * their time in them (declarations and contracts in kernels_decl.h).
 *
 * Plain C with no Lua in it, so the same object goes into libfarm, farm.so
 * (where core/lkernels.c gives it to Lua as farm.kernels) and
 * libfarmkernels.{a,so}, which LuaJIT loads through its FFI. No state outside
 * the arguments: every kernel may run in several threads at once.
 *
 * Reproducibility is part of each contract: the generator is specified to the
 * bit, the sieve's sums wrap as Lua integers do, and the floating-point
 * kernels do their operations in a fixed order (the Makefile builds this file
 * with -ffp-contract=off, so no compiler fuses a multiply and an add where
 * another would not).
 *
 * Threads: any (no state).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "farm_kernels.h"

enum { KERNEL_OK = 0, KERNEL_ENOMEM = -1, KERNEL_EINVAL = -2 };  /* as in farm.h */

/* ---- pi ---------------------------------------------------------------------
 * xoshiro256** (Blackman and Vigna), its 256-bit state filled by splitmix64
 * from the seed, as its authors recommend: fast (about a nanosecond a number),
 * and a few lines that Lua 5.4's wrapping integers redo exactly (spec/). */

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

uint64_t farm_kernel_pi_hits(uint64_t n, uint64_t seed) {
  uint64_t s0 = splitmix64(&seed), s1 = splitmix64(&seed),
           s2 = splitmix64(&seed), s3 = splitmix64(&seed);
  uint64_t hits = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t r = rotl(s1 * 5, 7) * 9, t = s1 << 17;
    s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 45);
    /* x and y are 32-bit fractions; x^2 + y^2 < 2^64 exactly when the
       64-bit sum does not carry */
    uint64_t x = r >> 32, y = r & 0xffffffffu, x2 = x * x, sum = x2 + y * y;
    hits += sum >= x2;
  }
  return hits;
}

/* ---- primes -----------------------------------------------------------------
 * A segmented sieve of Eratosthenes over odd numbers only: byte i of the
 * whole (never materialised) sieve stands for 2i+1, and it is walked in
 * segments of SEGMENT bytes, each crossed off by the odd primes up to
 * sqrt(n), which are found first by a plain sieve and kept with the index of
 * their next multiple. The multiples of 3, 5, 7, 11 and 13 are not crossed
 * off one by one: each segment starts as a copy of their pattern, which
 * repeats every 3*5*7*11*13 odd numbers (the smallest primes cross off the
 * most). Memory: one
 * segment, that pattern, and the primes up to sqrt(n) (12 bytes each),
 * whatever n is. Bytes rather than bits: simpler, and within a small factor of
 * a bit sieve at the sizes jobs use (1e10 in about 10 s on one core). */

#define SIEVE_MAX ((uint64_t)1 << 48)
#define SEGMENT (256 * 1024)
#define PRESIEVE 15015                     /* 3*5*7*11*13 */
#define PRESIEVE_LAST 13

static uint64_t isqrt(uint64_t v) {
  uint64_t r = (uint64_t)sqrt((double)v);
  while (r * r > v) r--;
  while ((r + 1) * (r + 1) <= v) r++;
  return r;
}

/* The count and the sum (mod 2^64) of the primes below n. */
static int sieve_below(uint64_t n, uint64_t *count, uint64_t *sum) {
  if (n > SIEVE_MAX) return KERNEL_EINVAL;
  uint64_t cnt = n > 2, total = n > 2 ? 2 : 0;       /* 2, the even prime */
  if (n <= 3) goto done;
  uint64_t top = (n - 2) / 2;              /* index of the last odd number below n */
  uint64_t root = isqrt(n - 1);            /* odd primes up to here cross off */
  size_t nsmall = (size_t)(root - 1) / 2 + 1;   /* odd numbers 1..root */
  unsigned char *small = calloc(nsmall, 1), *seg = NULL, *pattern = NULL;
  uint32_t *prime = NULL;
  uint64_t *next = NULL;
  int rc = KERNEL_ENOMEM;
  if (!small) goto out;
  size_t np = 0;
  for (size_t i = 1; i < nsmall; i++) {
    if (small[i]) continue;
    np++;
    for (size_t j = 2 * i * (i + 1); j < nsmall; j += 2 * i + 1) small[j] = 1;
  }
  prime = malloc((np ? np : 1) * sizeof *prime);
  next = malloc((np ? np : 1) * sizeof *next);
  seg = malloc(SEGMENT);
  pattern = calloc(PRESIEVE, 1);
  if (!prime || !next || !seg || !pattern) goto out;
  for (uint64_t p = 3; p <= PRESIEVE_LAST; p += 2)
    for (size_t j = (p - 1) / 2; j < PRESIEVE; j += p) pattern[j] = 1;   /* odd multiples of p */
  np = 0;
  for (size_t i = 1; i < nsmall; i++) {
    uint64_t p = 2 * i + 1;
    if (small[i] || p <= PRESIEVE_LAST) continue;
    prime[np] = (uint32_t)p;
    next[np++] = (p * p - 1) / 2;          /* smaller multiples have smaller factors */
  }
  size_t active = 0;                       /* primes whose square is below this segment's end */
  for (uint64_t lo = 0; lo <= top; lo += SEGMENT) {
    uint64_t hi = top + 1 - lo < SEGMENT ? top + 1 : lo + SEGMENT;
    size_t len = (size_t)(hi - lo), off = (size_t)(lo % PRESIEVE);
    for (size_t done = 0, part; done < len; done += part, off = 0) {
      part = PRESIEVE - off < len - done ? PRESIEVE - off : len - done;
      memcpy(seg + done, pattern + off, part);
    }
    while (active < np && next[active] < hi) active++;
    for (size_t k = 0; k < active; k++) {
      uint64_t j = next[k], p = prime[k];
      for (; j < hi; j += p) seg[j - lo] = 1;
      next[k] = j;
    }
    if (lo == 0) {                         /* 1 is not a prime; the pattern's primes are */
      static const unsigned char patterned[] = { 3, 5, 7, 11, 13 };
      seg[0] = 1;
      for (size_t k = 0; k < sizeof patterned; k++)
        if ((size_t)(patterned[k] - 1) / 2 < len) seg[(patterned[k] - 1) / 2] = 0;
    }
    /* branch-free, so the compiler may vectorise it: about one number in ten
       is prime near 1e9, too often for a branch to predict */
    uint64_t c = 0, s = 0, v = 2 * lo + 1;
    for (size_t i = 0; i < len; i++) {
      uint64_t is = (uint64_t)(seg[i] == 0);
      c += is;
      s += (0 - is) & (v + 2 * i);
    }
    cnt += c;
    total += s;
  }
  rc = KERNEL_OK;
out:
  free(small);
  free(prime);
  free(next);
  free(seg);
  free(pattern);
  if (rc != KERNEL_OK) return rc;
done:
  if (count) *count = cnt;
  if (sum) *sum = total;
  return KERNEL_OK;
}

int farm_kernel_count_primes_below(uint64_t n, uint64_t *count) {
  if (!count) return KERNEL_EINVAL;
  return sieve_below(n, count, NULL);
}

int farm_kernel_sum_primes_below(uint64_t n, uint64_t *sum) {
  if (!sum) return KERNEL_EINVAL;
  return sieve_below(n, NULL, sum);
}

/* ---- BLAKE2b ------------------------------------------------------------- */

int farm_kernel_blake2b(unsigned char *out, size_t outlen, const unsigned char *in, size_t inlen) {
  if (!out || (!in && inlen) || outlen < crypto_generichash_BYTES_MIN
      || outlen > crypto_generichash_BYTES_MAX) return KERNEL_EINVAL;
  /* libsodium wants this before any other call; it is cheap once done, and
     safe from several threads */
  if (sodium_init() < 0) return KERNEL_ENOMEM;
  static const unsigned char none[1];
  return crypto_generichash(out, outlen, in ? in : none, inlen, NULL, 0) == 0
    ? KERNEL_OK : KERNEL_EINVAL;
}

/* ---- Mandelbrot ---------------------------------------------------------- */

int farm_kernel_mandelbrot(unsigned char *out, double x0, double y0, double dx, double dy,
                           uint32_t w, uint32_t h, uint32_t maxiter) {
  if (!out || w == 0 || h == 0 || maxiter == 0 || maxiter > 65535) return KERNEL_EINVAL;
  int wide = maxiter > 255;
  for (uint32_t j = 0; j < h; j++) {
    double ci = y0 + (double)j * dy;
    for (uint32_t i = 0; i < w; i++) {
      double cr = x0 + (double)i * dx, zr = 0, zi = 0;
      uint32_t it = 0;
      while (it < maxiter) {
        double zr2 = zr * zr, zi2 = zi * zi;
        if (zr2 + zi2 > 4.0) break;
        zi = 2 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        it++;
      }
      size_t px = (size_t)j * w + i;
      if (wide) {
        out[2 * px] = (unsigned char)(it & 0xff);
        out[2 * px + 1] = (unsigned char)(it >> 8);
      } else {
        out[px] = (unsigned char)it;
      }
    }
  }
  return KERNEL_OK;
}

/* ---- matrix multiply ------------------------------------------------------
 * The i-p-j loop order: the inner loop runs along a row of b and of c, so it
 * streams memory and vectorises, and each c[i][j] still adds its terms in
 * order of p. Not blocked for cache: that pays from a few hundred rows on, and
 * a job that size is better split across workers by rows anyway. */

void farm_kernel_matmul(double *c, const double *a, const double *b,
                        size_t n, size_t m, size_t k) {
  for (size_t i = 0; i < n; i++) {
    double *restrict ci = c + i * k;
    for (size_t j = 0; j < k; j++) ci[j] = 0.0;
    for (size_t p = 0; p < m; p++) {
      double aip = a[i * m + p];
      const double *restrict bp = b + p * k;
      for (size_t j = 0; j < k; j++) ci[j] += aip * bp[j];
    }
  }
}
