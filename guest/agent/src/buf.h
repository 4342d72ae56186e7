// Growable byte buffers and small allocation helpers. Allocation failure aborts: the agent cannot
// do anything useful without memory, and checking every append would hide the real logic.
#ifndef STENCIL_AGENT_BUF_H
#define STENCIL_AGENT_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint8_t *data;
  size_t len;  // bytes in use
  size_t off;  // bytes already consumed from the front (readers advance it)
  size_t cap;
} buf_t;

void buf_reserve(buf_t *b, size_t extra);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_put_u8(buf_t *b, uint8_t v);
void buf_put_be32(buf_t *b, uint32_t v);
// Bytes not yet consumed.
static inline size_t buf_pending(const buf_t *b) { return b->len - b->off; }
static inline const uint8_t *buf_head(const buf_t *b) { return b->data + b->off; }
// Marks n bytes as consumed; compacts when everything (or a lot) has been consumed.
void buf_consume(buf_t *b, size_t n);
void buf_clear(buf_t *b);
void buf_free(buf_t *b);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
// printf into a fresh string.
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
