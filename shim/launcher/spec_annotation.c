// A strict JSON scanner (RFC 8259, as JSON.parse accepts it) that keeps nothing but one string of
// the top-level object's "annotations", unescaped to UTF-8.
#include "spec_annotation.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 256

struct scanner {
  const char *p, *end;
};

// A string token's raw text (between the quotes), escapes and all.
struct token {
  const char *text;
  size_t len;
};

static void skip_ws(struct scanner *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool scan_string(struct scanner *s, struct token *t) {
  if (s->p >= s->end || *s->p != '"') return false;
  t->text = ++s->p;
  while (s->p < s->end) {
    unsigned char c = (unsigned char)*s->p;
    if (c == '"') {
      t->len = (size_t)(s->p++ - t->text);
      return true;
    }
    if (c < 0x20) return false;
    if (c == '\\') {
      if (++s->p >= s->end) return false;
      if (*s->p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (s->p + i >= s->end || !is_hex(s->p[i])) return false;
        s->p += 4;
      } else if (!strchr("\"\\/bfnrt", *s->p) || *s->p == '\0') {
        return false;
      }
    }
    s->p++;
  }
  return false;
}

static bool scan_digits(struct scanner *s) {
  if (s->p >= s->end || !is_digit(*s->p)) return false;
  while (s->p < s->end && is_digit(*s->p)) s->p++;
  return true;
}

static bool scan_number(struct scanner *s) {
  if (s->p < s->end && *s->p == '-') s->p++;
  if (s->p < s->end && *s->p == '0') {
    s->p++;
  } else if (!scan_digits(s)) {
    return false;
  }
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!scan_digits(s)) return false;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!scan_digits(s)) return false;
  }
  return true;
}

static bool scan_literal(struct scanner *s, const char *word) {
  size_t len = strlen(word);
  if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len) != 0) return false;
  s->p += len;
  return true;
}

static bool scan_value(struct scanner *s, int depth);

// An object or array after its opening bracket, through its closing one. For an object,
// `member` (when set) is called at each value with the key, and scans that value itself.
typedef bool (*member_fn)(struct scanner *s, const struct token *key, void *ctx, int depth);

static bool scan_container(struct scanner *s, char close, member_fn member, void *ctx, int depth) {
  if (depth > MAX_DEPTH) return false;
  skip_ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    return true;
  }
  while (true) {
    skip_ws(s);
    if (close == '}') {
      struct token key;
      if (!scan_string(s, &key)) return false;
      skip_ws(s);
      if (s->p >= s->end || *s->p != ':') return false;
      s->p++;
      skip_ws(s);
      if (member ? !member(s, &key, ctx, depth + 1) : !scan_value(s, depth + 1)) return false;
    } else if (!scan_value(s, depth + 1)) {
      return false;
    }
    skip_ws(s);
    if (s->p >= s->end) return false;
    if (*s->p == close) {
      s->p++;
      return true;
    }
    if (*s->p++ != ',') return false;
  }
}

static bool scan_value(struct scanner *s, int depth) {
  if (s->p >= s->end) return false;
  struct token t;
  switch (*s->p) {
    case '{': s->p++; return scan_container(s, '}', NULL, NULL, depth);
    case '[': s->p++; return scan_container(s, ']', NULL, NULL, depth);
    case '"': return scan_string(s, &t);
    case 't': return scan_literal(s, "true");
    case 'f': return scan_literal(s, "false");
    case 'n': return scan_literal(s, "null");
    default: return scan_number(s);
  }
}

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): what Node's
// UTF-8 decoding of the file keeps as it is.
static bool is_valid_utf8(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; k++)
      if ((p[i + k] & 0xc0) != 0x80) return false;
    if ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0) || (c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90)) return false;
    i += len;
  }
  return true;
}

// JSON.parse's reading of a string token, as UTF-8: escapes decoded (a \u surrogate pair as one
// code point). False for what no UTF-8 string can carry: a lone surrogate, NUL, invalid UTF-8.
static bool decode_string(const struct token *t, char *out, size_t *out_len) {
  size_t n = 0;
  for (size_t i = 0; i < t->len; i++) {
    char c = t->text[i];
    if (c != '\\') {
      out[n++] = c;
      continue;
    }
    c = t->text[++i];
    if (c != 'u') {
      static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
      out[n++] = to[strchr(from, c) - from];
      continue;
    }
    unsigned cp = (unsigned)strtoul((char[5]){t->text[i + 1], t->text[i + 2], t->text[i + 3], t->text[i + 4], 0}, NULL, 16);
    i += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff) return false;
    if (cp >= 0xd800 && cp <= 0xdbff) {
      if (i + 6 >= t->len || t->text[i + 1] != '\\' || t->text[i + 2] != 'u') return false;
      unsigned low = (unsigned)strtoul((char[5]){t->text[i + 3], t->text[i + 4], t->text[i + 5], t->text[i + 6], 0}, NULL, 16);
      if (low < 0xdc00 || low > 0xdfff) return false;
      cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      i += 6;
    }
    if (cp == 0) return false;
    if (cp < 0x80) {
      out[n++] = (char)cp;
    } else if (cp < 0x800) {
      out[n++] = (char)(0xc0 | cp >> 6);
      out[n++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out[n++] = (char)(0xe0 | cp >> 12);
      out[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
      out[n++] = (char)(0x80 | (cp & 0x3f));
    } else {
      out[n++] = (char)(0xf0 | cp >> 18);
      out[n++] = (char)(0x80 | (cp >> 12 & 0x3f));
      out[n++] = (char)(0x80 | (cp >> 6 & 0x3f));
      out[n++] = (char)(0x80 | (cp & 0x3f));
    }
  }
  out[n] = '\0';
  *out_len = n;
  return is_valid_utf8((const unsigned char *)out, n);
}

struct lookup {
  const char *key;
  enum annotation_lookup result;
  char *value;
};

static bool token_is(const struct token *t, const char *word) {
  char *decoded = malloc(t->len + 1);
  size_t len = 0;
  bool same = decoded && decode_string(t, decoded, &len) && len == strlen(word) && memcmp(decoded, word, len) == 0;
  free(decoded);
  return same;
}

static void set_result(struct lookup *l, enum annotation_lookup result, char *value) {
  free(l->value);
  l->result = result;
  l->value = value;
}

// A member of "annotations": the one named lookup->key is kept (the last of duplicates).
static bool annotation_member(struct scanner *s, const struct token *key, void *ctx, int depth) {
  struct lookup *l = ctx;
  if (!token_is(key, l->key)) return scan_value(s, depth);
  if (s->p >= s->end || *s->p != '"') {
    set_result(l, ANNOTATION_ABSENT, NULL);
    return scan_value(s, depth);
  }
  struct token v;
  if (!scan_string(s, &v)) return false;
  char *value = malloc(v.len + 1);
  size_t len = 0;
  if (value && decode_string(&v, value, &len)) {
    set_result(l, ANNOTATION_FOUND, value);
  } else {
    free(value);
    set_result(l, ANNOTATION_INVALID, NULL);
  }
  return true;
}

// A member of the spec itself: a later "annotations" replaces an earlier one, as in JSON.parse.
static bool spec_member(struct scanner *s, const struct token *key, void *ctx, int depth) {
  struct lookup *l = ctx;
  if (!token_is(key, "annotations")) return scan_value(s, depth);
  set_result(l, ANNOTATION_ABSENT, NULL);
  if (s->p < s->end && *s->p == '{') {
    s->p++;
    return scan_container(s, '}', annotation_member, l, depth);
  }
  return scan_value(s, depth);
}

enum annotation_lookup find_spec_annotation(const char *json, size_t size, const char *key, char **value) {
  struct scanner s = {json, json + size};
  struct lookup l = {key, ANNOTATION_ABSENT, NULL};
  *value = NULL;
  skip_ws(&s);
  bool parsed = s.p < s.end && *s.p == '{';
  if (parsed) {
    s.p++;
    parsed = scan_container(&s, '}', spec_member, &l, 1);
    skip_ws(&s);
    parsed = parsed && s.p == s.end;
  }
  // Not a JSON object: JSON.parse fails, and the task is its own group.
  if (!parsed) set_result(&l, ANNOTATION_ABSENT, NULL);
  *value = l.value;
  return l.result;
}
