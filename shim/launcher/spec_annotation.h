// Reads one annotation out of an OCI spec (config.json) as JSON.parse would.
#ifndef STENCIL_SPEC_ANNOTATION_H
#define STENCIL_SPEC_ANNOTATION_H

#include <stddef.h>

enum annotation_lookup {
  ANNOTATION_ABSENT,   // annotations[key] is missing or no string, or the text is no JSON object
  ANNOTATION_FOUND,    // *value (malloc'ed, caller frees) is annotations[key], as UTF-8
  ANNOTATION_INVALID,  // annotations[key] is a string UTF-8 cannot carry as it is (invalid
                       // UTF-8, a lone surrogate, NUL)
};

// `json` is `size` bytes. Duplicate keys: the last one wins, as in JSON.parse.
enum annotation_lookup find_spec_annotation(const char *json, size_t size, const char *key, char **value);

#endif
