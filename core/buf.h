/*
 * buf.h -- growable byte buffers and a bounds-checked reader.
 *
 * Every encoder in farm writes into a farm_buf; every decoder reads through a
 * farm_rd, which never reads past its end: a short or malformed input makes the
 * reader fail (rd->err set, further reads return zero) instead of trusting a length.
 */
#ifndef FARM_BUF_H
#define FARM_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct farm_buf {
  char *p;        /* bytes; NULL while empty */
  size_t n;       /* bytes used */
  size_t cap;     /* bytes allocated */
} farm_buf;

/* All return 0 on success, FARM_ENOMEM (negative) when memory runs out. */
void farm__buf_init(farm_buf *b);
void farm__buf_free(farm_buf *b);
int  farm__buf_reserve(farm_buf *b, size_t extra);
int  farm__buf_put(farm_buf *b, const void *p, size_t n);
int  farm__buf_u8(farm_buf *b, uint8_t v);
int  farm__buf_uvar(farm_buf *b, uint64_t v);    /* LEB128 */
int  farm__buf_svar(farm_buf *b, int64_t v);     /* zigzag + LEB128 */
int  farm__buf_u64le(farm_buf *b, uint64_t v);
int  farm__buf_str(farm_buf *b, const void *p, size_t n);  /* uvar length + bytes */
/* Hand the bytes over to the caller (who frees them with free()); b becomes empty. */
char *farm__buf_steal(farm_buf *b, size_t *n);

typedef struct farm_rd {
  const unsigned char *p, *end;
  int err;        /* nonzero once anything was out of bounds or malformed */
} farm_rd;

void     farm__rd_init(farm_rd *r, const void *p, size_t n);
size_t   farm__rd_left(const farm_rd *r);
uint8_t  farm__rd_u8(farm_rd *r);
uint64_t farm__rd_uvar(farm_rd *r);              /* at most 10 bytes, else err */
int64_t  farm__rd_svar(farm_rd *r);
uint64_t farm__rd_u64le(farm_rd *r);
/* Returns a pointer into the input and its length; checks the length against
   what is left before trusting it. NULL (and err set) when it does not fit. */
const char *farm__rd_str(farm_rd *r, size_t *n);
const void *farm__rd_bytes(farm_rd *r, size_t n);

/* A size for people: "512 bytes", "12.3 KiB", "256.0 MiB". Returns out. */
const char *farm__size_text(size_t n, char *out, size_t len);

/* A file that travels (files =, farm.send_file): path must be a regular file
   of at most limit bytes; its bytes are appended to b (b NULL: only checked),
   and st says which file it was. 0, or -1 with why in err (the path named; the
   caller puts its own name in front), and errno as open() left it when the
   file could not be opened. */
struct stat;
int farm__file_take(const char *path, size_t limit, farm_buf *b, struct stat *st,
                    char *err, size_t errlen);

#endif
