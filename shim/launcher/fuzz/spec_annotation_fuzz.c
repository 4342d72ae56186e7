// libFuzzer target: the launcher's reading of an OCI spec (spec_annotation.c). Any bytes as
// config.json: no crash, no sanitizer report, and a found value is what the contract says (UTF-8
// without NUL, as long as it says).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../spec_annotation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // Exactly `size` bytes in their own allocation, so ASan sees any read past the end.
  char *json = malloc(size ? size : 1);
  if (!json) return 0;
  if (size) memcpy(json, data, size);
  char *value = NULL;
  enum annotation_lookup found = find_spec_annotation(json, size, "io.kubernetes.cri.sandbox-id", &value);
  if (found == ANNOTATION_FOUND) {
    if (!value || strlen(value) > size) abort();
  } else if (value) {
    abort();
  }
  free(value);
  free(json);
  return 0;
}
