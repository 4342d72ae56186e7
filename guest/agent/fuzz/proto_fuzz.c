// libFuzzer target: the agent's decoders of what the host sends (proto.c over pb.c): Hello and
// Request messages, every call's fields, nested messages and repeated fields. The first byte
// picks the message; every input decodes or is refused with an error message, and what decoded
// is freed.
#include <stddef.h>
#include <stdint.h>

#include "../src/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *err = NULL;
  if (data[0] & 1) {
    struct hello h;
    if (hello_decode(data + 1, size - 1, &h, &err) < 0 && !err) __builtin_trap();
    hello_free(&h);
  } else {
    struct request req;
    if (request_decode(data + 1, size - 1, &req, &err) < 0 && !err) __builtin_trap();
    request_free(&req);
  }
  return 0;
}
