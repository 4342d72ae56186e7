// Protocol Buffers wire format: just enough to read and write the messages of proto/agent.proto.
//
// Why hand-written rather than Debian's protobuf-c: the agent is a static musl binary, and
// Debian ships libprotobuf-c built against glibc only (its static archive cannot be linked with
// musl-gcc safely), so we would have to build protobuf-c from source and add protoc-c code
// generation to the guest build. The subset the agent needs (varints, length-delimited fields,
// nested messages, skipping unknown fields) is ~150 lines, has no dependencies and is fuzzable
// through the agent's own tests.
#ifndef STENCIL_AGENT_PB_H
#define STENCIL_AGENT_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

// ---- encoding (proto3: scalar fields equal to their default are not written) ----
void pb_put_varint(buf_t *b, uint64_t v);
void pb_put_tag(buf_t *b, uint32_t field, int wire_type);
void pb_put_uint(buf_t *b, uint32_t field, uint64_t v);
void pb_put_int(buf_t *b, uint32_t field, int64_t v);  // int32/int64 (two's complement)
void pb_put_bool(buf_t *b, uint32_t field, bool v);
void pb_put_bytes(buf_t *b, uint32_t field, const void *p, size_t n);
void pb_put_str(buf_t *b, uint32_t field, const char *s);
// A nested message, always written (even when empty: presence matters for oneofs).
void pb_put_msg(buf_t *b, uint32_t field, const buf_t *sub);

// ---- decoding ----
typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} pb_reader;

typedef struct {
  uint32_t field;
  int wire_type;
  uint64_t varint;       // PB_VARINT, PB_FIXED64, PB_FIXED32
  const uint8_t *bytes;  // PB_LEN
  size_t len;            // PB_LEN
} pb_field;

static inline pb_reader pb_reader_of(const void *p, size_t n) {
  pb_reader r = {(const uint8_t *)p, (const uint8_t *)p + n};
  return r;
}
// Reads the next field: 1 = got one, 0 = end of message, -1 = malformed.
int pb_next(pb_reader *r, pb_field *f);

#endif
