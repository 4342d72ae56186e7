#include "pb.h"

#include <string.h>

void pb_put_varint(buf_t *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    tmp[n++] = byte | (v ? 0x80 : 0);
  } while (v);
  buf_append(b, tmp, n);
}

void pb_put_tag(buf_t *b, uint32_t field, int wire_type) {
  pb_put_varint(b, ((uint64_t)field << 3) | (uint64_t)wire_type);
}

void pb_put_uint(buf_t *b, uint32_t field, uint64_t v) {
  if (!v) return;
  pb_put_tag(b, field, PB_VARINT);
  pb_put_varint(b, v);
}

void pb_put_int(buf_t *b, uint32_t field, int64_t v) { pb_put_uint(b, field, (uint64_t)v); }

void pb_put_bool(buf_t *b, uint32_t field, bool v) { pb_put_uint(b, field, v ? 1 : 0); }

void pb_put_bytes(buf_t *b, uint32_t field, const void *p, size_t n) {
  if (!n) return;
  pb_put_tag(b, field, PB_LEN);
  pb_put_varint(b, n);
  buf_append(b, p, n);
}

void pb_put_str(buf_t *b, uint32_t field, const char *s) {
  if (s) pb_put_bytes(b, field, s, strlen(s));
}

void pb_put_msg(buf_t *b, uint32_t field, const buf_t *sub) {
  pb_put_tag(b, field, PB_LEN);
  pb_put_varint(b, buf_pending(sub));
  buf_append(b, buf_head(sub), buf_pending(sub));
}

static int read_varint(pb_reader *r, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return -1;
    uint8_t byte = *r->p++;
    v |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;  // more than 10 bytes
}

int pb_next(pb_reader *r, pb_field *f) {
  if (r->p >= r->end) return 0;
  uint64_t key;
  if (read_varint(r, &key) < 0) return -1;
  memset(f, 0, sizeof *f);
  f->field = (uint32_t)(key >> 3);
  f->wire_type = (int)(key & 7);
  if (f->field == 0 || key >> 32) return -1;
  switch (f->wire_type) {
    case PB_VARINT:
      return read_varint(r, &f->varint) < 0 ? -1 : 1;
    case PB_FIXED64:
      if (r->end - r->p < 8) return -1;
      for (int i = 7; i >= 0; i--) f->varint = (f->varint << 8) | r->p[i];
      r->p += 8;
      return 1;
    case PB_FIXED32:
      if (r->end - r->p < 4) return -1;
      for (int i = 3; i >= 0; i--) f->varint = (f->varint << 8) | r->p[i];
      r->p += 4;
      return 1;
    case PB_LEN: {
      uint64_t n;
      if (read_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) return -1;
      f->bytes = r->p;
      f->len = (size_t)n;
      r->p += n;
      return 1;
    }
    default:  // groups (3, 4) are not used by proto3; 6 and 7 do not exist
      return -1;
  }
}
