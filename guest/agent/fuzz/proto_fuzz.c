// libFuzzer target: the agent's decoders of what the host sends (proto.c over pb.c). The first
// byte picks: bit 1 set, a byte stream the host wrote on a connection, split into frames as the
// agent splits it (frame_next: length, kind, payload; a length past the maximum ends the
// stream), each HELLO and REQUEST payload decoded; else one message alone (bit 0: a Hello,
// otherwise a Request: every call's fields, nested messages and repeated fields). Every input
// decodes or is refused with an error message, and what decoded is freed.
#include <stddef.h>
#include <stdint.h>

#include "../src/proto.h"

static void decode(int hello, const uint8_t *p, size_t n) {
  const char *err = NULL;
  if (hello) {
    struct hello h;
    if (hello_decode(p, n, &h, &err) < 0 && !err) __builtin_trap();
    hello_free(&h);
  } else {
    struct request req;
    if (request_decode(p, n, &req, &err) < 0 && !err) __builtin_trap();
    request_free(&req);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (!(data[0] & 2)) {
    decode(data[0] & 1, data + 1, size - 1);
    return 0;
  }
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  for (;;) {
    int kind;
    uint32_t len;
    enum frame_next_result next = frame_next(p, n, &kind, &len);
    if (next != FRAME_NEXT_OK) {
      if (next == FRAME_NEXT_TOO_LARGE && len <= MAX_FRAME_PAYLOAD) __builtin_trap();
      return 0;
    }
    if ((size_t)FRAME_HEADER + len > n) __builtin_trap();  // a frame must lie inside what was read
    if (kind == FK_HELLO || kind == FK_REQUEST) decode(kind == FK_HELLO, p + FRAME_HEADER, len);
    p += FRAME_HEADER + len;
    n -= FRAME_HEADER + len;
  }
}
