#include "proto.h"

#include <stdlib.h>
#include <string.h>

#include "pb.h"

const char *method_name(int method) {
  switch (method) {
    case M_PING: return "Ping";
    case M_SETUP_GUEST: return "SetupGuest";
    case M_CREATE: return "CreateContainer";
    case M_START: return "StartContainer";
    case M_EXEC: return "ExecProcess";
    case M_SIGNAL: return "SignalProcess";
    case M_WAIT: return "WaitProcess";
    case M_RESIZE: return "ResizePty";
    case M_CLOSE_STDIN: return "CloseStdin";
    case M_STATS: return "Stats";
    case M_PAUSE: return "PauseContainer";
    case M_RESUME: return "ResumeContainer";
    case M_DELETE: return "DeleteContainer";
    case M_DELETE_PROCESS: return "DeleteProcess";
    case M_UPDATE: return "UpdateContainer";
    default: return "?";
  }
}

// Replaces *dst with a copy of a string field; strings must not contain NUL.
static int take_str(char **dst, const pb_field *f, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "string field has the wrong wire type";
    return -1;
  }
  if (memchr(f->bytes, 0, f->len)) {
    *err = "string field contains a NUL byte";
    return -1;
  }
  free(*dst);
  *dst = xstrndup((const char *)f->bytes, f->len);
  return 0;
}

static int take_bytes(uint8_t **dst, size_t *len, const pb_field *f, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "bytes field has the wrong wire type";
    return -1;
  }
  free(*dst);
  *dst = xmalloc(f->len + 1);
  memcpy(*dst, f->bytes, f->len);
  (*dst)[f->len] = 0;
  *len = f->len;
  return 0;
}

static int take_varint(uint64_t *dst, const pb_field *f, const char **err) {
  if (f->wire_type != PB_VARINT) {
    *err = "integer field has the wrong wire type";
    return -1;
  }
  *dst = f->varint;
  return 0;
}

int hello_decode(const uint8_t *p, size_t n, struct hello *h, const char **err) {
  memset(h, 0, sizeof *h);
  h->container_id = xstrdup("");
  h->exec_id = xstrdup("");
  pb_reader r = pb_reader_of(p, n);
  pb_field f;
  int rc;
  uint64_t v;
  while ((rc = pb_next(&r, &f)) > 0) {
    switch (f.field) {
      case 1:
        if (take_varint(&v, &f, err) < 0) return -1;
        h->version = (uint32_t)v;
        break;
      case 2:
        if (take_varint(&v, &f, err) < 0) return -1;
        h->role = (int)v;
        break;
      case 3:
        if (take_str(&h->container_id, &f, err) < 0) return -1;
        break;
      case 4:
        if (take_str(&h->exec_id, &f, err) < 0) return -1;
        break;
      case 5:
        if (take_varint(&v, &f, err) < 0) return -1;
        h->port = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        break;
      default:
        break;  // proto3: unknown fields are ignored (forward compatibility)
    }
  }
  if (rc < 0) {
    *err = "malformed protobuf in Hello";
    return -1;
  }
  return 0;
}

void hello_free(struct hello *h) {
  free(h->container_id);
  free(h->exec_id);
  memset(h, 0, sizeof *h);
}

static int decode_stdio(const pb_field *f, struct stdio_mode *m, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "StdioMode has the wrong wire type";
    return -1;
  }
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  uint64_t v;
  while ((rc = pb_next(&r, &g)) > 0) {
    if (g.field < 1 || g.field > 4) continue;
    if (take_varint(&v, &g, err) < 0) return -1;
    bool b = v != 0;
    if (g.field == 1) m->terminal = b;
    if (g.field == 2) m->in = b;
    if (g.field == 3) m->out = b;
    if (g.field == 4) m->err = b;
  }
  if (rc < 0) {
    *err = "malformed protobuf in StdioMode";
    return -1;
  }
  return 0;
}

static void push_str(char ***list, size_t *n, char *s) {
  *list = xrealloc(*list, (*n + 1) * sizeof **list);
  (*list)[(*n)++] = s;
}

static int decode_pause_holder(const pb_field *f, struct request *req, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "PauseHolder has the wrong wire type";
    return -1;
  }
  req->pause = true;
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  while ((rc = pb_next(&r, &g)) > 0) {
    char *text = NULL;
    if (g.field < 1 || g.field > 3) continue;
    if (take_str(&text, &g, err) < 0) return -1;
    if (g.field == 1) push_str(&req->pause_namespaces, &req->n_pause_namespaces, text);
    if (g.field == 2) free(req->hostname), req->hostname = text;
    if (g.field == 3) free(req->pause_cgroup), req->pause_cgroup = text;
  }
  if (rc < 0) {
    *err = "malformed protobuf in PauseHolder";
    return -1;
  }
  return 0;
}

static int decode_mount(const pb_field *f, struct mount_req *m, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "Mount has the wrong wire type";
    return -1;
  }
  m->source = xstrdup("");
  m->target = xstrdup("");
  m->fstype = xstrdup("");
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  while ((rc = pb_next(&r, &g)) > 0) {
    switch (g.field) {
      case 1:
        if (take_str(&m->source, &g, err) < 0) return -1;
        break;
      case 2:
        if (take_str(&m->target, &g, err) < 0) return -1;
        break;
      case 3:
        if (take_str(&m->fstype, &g, err) < 0) return -1;
        break;
      case 4: {
        char *s = NULL;
        if (take_str(&s, &g, err) < 0) return -1;
        push_str(&m->options, &m->n_options, s);
        break;
      }
    }
  }
  if (rc < 0) {
    *err = "malformed protobuf in Mount";
    return -1;
  }
  return 0;
}

static int decode_iface(const pb_field *f, struct net_iface_req *it, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "NetworkInterface has the wrong wire type";
    return -1;
  }
  it->name = xstrdup("");
  it->mac = xstrdup("");
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  uint64_t v;
  while ((rc = pb_next(&r, &g)) > 0) {
    char *s = NULL;
    switch (g.field) {
      case 1:
        if (take_str(&it->name, &g, err) < 0) return -1;
        break;
      case 2:
        if (take_str(&it->mac, &g, err) < 0) return -1;
        break;
      case 3:
        if (take_varint(&v, &g, err) < 0) return -1;
        it->mtu = (uint32_t)v;
        break;
      case 4:
        if (take_str(&s, &g, err) < 0) return -1;
        push_str(&it->addresses, &it->n_addresses, s);
        break;
    }
  }
  if (rc < 0) {
    *err = "malformed protobuf in NetworkInterface";
    return -1;
  }
  return 0;
}

static int decode_route(const pb_field *f, struct route_req *rt, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "Route has the wrong wire type";
    return -1;
  }
  rt->destination = xstrdup("");
  rt->gateway = xstrdup("");
  rt->device = xstrdup("");
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  while ((rc = pb_next(&r, &g)) > 0) {
    char **field = g.field == 1 ? &rt->destination : g.field == 2 ? &rt->gateway : g.field == 3 ? &rt->device : NULL;
    if (field && take_str(field, &g, err) < 0) return -1;
  }
  if (rc < 0) {
    *err = "malformed protobuf in Route";
    return -1;
  }
  return 0;
}

// A map<string, string> entry: 1 key, 2 value.
static int decode_string_pair(const pb_field *f, char **key, char **value, const char **err) {
  if (f->wire_type != PB_LEN) {
    *err = "map entry has the wrong wire type";
    return -1;
  }
  *key = xstrdup("");
  *value = xstrdup("");
  pb_reader r = pb_reader_of(f->bytes, f->len);
  pb_field g;
  int rc;
  while ((rc = pb_next(&r, &g)) > 0) {
    char **field = g.field == 1 ? key : g.field == 2 ? value : NULL;
    if (field && take_str(field, &g, err) < 0) return -1;
  }
  if (rc < 0) {
    *err = "malformed protobuf in a map entry";
    return -1;
  }
  return 0;
}

static int decode_setup_guest(const uint8_t *p, size_t n, struct request *req, const char **err) {
  pb_reader r = pb_reader_of(p, n);
  pb_field f;
  int rc;
  uint64_t v;
  while ((rc = pb_next(&r, &f)) > 0) {
    switch (f.field) {
      case 1:
        if (take_varint(&v, &f, err) < 0) return -1;
        req->time_ns = (int64_t)v;
        break;
      case 2:
        if (take_str(&req->hostname, &f, err) < 0) return -1;
        break;
      case 3:
        if (take_bytes(&req->entropy, &req->entropy_len, &f, err) < 0) return -1;
        break;
      case 4:
        req->mounts = xrealloc(req->mounts, (req->n_mounts + 1) * sizeof *req->mounts);
        memset(&req->mounts[req->n_mounts], 0, sizeof *req->mounts);
        req->n_mounts++;
        if (decode_mount(&f, &req->mounts[req->n_mounts - 1], err) < 0) return -1;
        break;
      case 5:
        req->ifaces = xrealloc(req->ifaces, (req->n_ifaces + 1) * sizeof *req->ifaces);
        memset(&req->ifaces[req->n_ifaces], 0, sizeof *req->ifaces);
        req->n_ifaces++;
        if (decode_iface(&f, &req->ifaces[req->n_ifaces - 1], err) < 0) return -1;
        break;
      case 6:
        req->routes = xrealloc(req->routes, (req->n_routes + 1) * sizeof *req->routes);
        memset(&req->routes[req->n_routes], 0, sizeof *req->routes);
        req->n_routes++;
        if (decode_route(&f, &req->routes[req->n_routes - 1], err) < 0) return -1;
        break;
      case 7:
        req->sysctl_keys = xrealloc(req->sysctl_keys, (req->n_sysctls + 1) * sizeof *req->sysctl_keys);
        req->sysctl_values = xrealloc(req->sysctl_values, (req->n_sysctls + 1) * sizeof *req->sysctl_values);
        req->sysctl_keys[req->n_sysctls] = req->sysctl_values[req->n_sysctls] = NULL;
        req->n_sysctls++;
        if (decode_string_pair(&f, &req->sysctl_keys[req->n_sysctls - 1], &req->sysctl_values[req->n_sysctls - 1], err) < 0)
          return -1;
        break;
    }
  }
  if (rc < 0) {
    *err = "malformed protobuf in SetupGuestRequest";
    return -1;
  }
  return 0;
}

// Every container call shares one layout: 1 container_id, 2 exec_id, 3 and 4 per method (and
// CreateContainer's 5, its pause holder, and 6).
static int decode_container_call(const uint8_t *p, size_t n, struct request *req, const char **err) {
  pb_reader r = pb_reader_of(p, n);
  pb_field f;
  int rc;
  uint64_t v;
  bool bytes3 = req->method == M_CREATE || req->method == M_EXEC || req->method == M_UPDATE;
  bool ints34 = req->method == M_SIGNAL || req->method == M_RESIZE;
  while ((rc = pb_next(&r, &f)) > 0) {
    switch (f.field) {
      case 1:
        if (take_str(&req->container_id, &f, err) < 0) return -1;
        break;
      case 2:
        if (req->method == M_CREATE || req->method == M_UPDATE) break;  // no field 2 in these
        if (take_str(&req->exec_id, &f, err) < 0) return -1;
        break;
      case 3:
        if (bytes3) {
          if (take_bytes(&req->payload, &req->payload_len, &f, err) < 0) return -1;
        } else if (ints34) {
          if (take_varint(&v, &f, err) < 0) return -1;
          if (req->method == M_SIGNAL) req->signal = (uint32_t)v;
          else req->width = (uint32_t)v;
        }
        break;
      case 5:
        if (req->method == M_CREATE && decode_pause_holder(&f, req, err) < 0) return -1;
        break;
      case 6:
        if (req->method != M_CREATE) break;
        if (take_varint(&v, &f, err) < 0) return -1;
        req->start_through_exec_fifo = v != 0;
        break;
      case 4:
        if (req->method == M_CREATE || req->method == M_EXEC) {
          if (decode_stdio(&f, &req->stdio, err) < 0) return -1;
        } else if (ints34) {
          if (take_varint(&v, &f, err) < 0) return -1;
          if (req->method == M_SIGNAL) req->all = v != 0;
          else req->height = (uint32_t)v;
        }
        break;
    }
  }
  if (rc < 0) {
    *err = "malformed protobuf in request message";
    return -1;
  }
  return 0;
}

int request_decode(const uint8_t *p, size_t n, struct request *req, const char **err) {
  memset(req, 0, sizeof *req);
  req->container_id = xstrdup("");
  req->exec_id = xstrdup("");
  req->hostname = xstrdup("");
  // First pass: the id, so that even a broken request can be answered by id.
  pb_reader r = pb_reader_of(p, n);
  pb_field f;
  int rc;
  while ((rc = pb_next(&r, &f)) > 0) {
    if (f.field == 1 && f.wire_type == PB_VARINT) req->id = f.varint;
  }
  if (rc < 0) {
    *err = "malformed protobuf in Request";
    return -1;
  }
  r = pb_reader_of(p, n);
  const uint8_t *call = NULL;
  size_t call_len = 0;
  while ((rc = pb_next(&r, &f)) > 0) {
    if (f.field == 1) {
      if (f.wire_type != PB_VARINT) {
        *err = "Request.id has the wrong wire type";
        return -1;
      }
    } else if (f.field >= M_PING && f.field <= M_LAST) {
      if (f.wire_type != PB_LEN) {
        *err = "Request call has the wrong wire type";
        return -1;
      }
      // Last one wins, as for any oneof.
      req->method = (int)f.field;
      call = f.bytes;
      call_len = f.len;
    } else if (f.field > M_LAST && f.wire_type == PB_LEN && req->method == M_NONE) {
      // Possibly a call added by a newer protocol revision: answered UNIMPLEMENTED.
      req->method = -(int)f.field;
    }
  }
  if (req->method == M_NONE) {
    *err = "Request has no call";
    return -1;
  }
  if (req->method < 0) return 0;  // dispatch answers UNIMPLEMENTED
  if (req->method == M_PING) return 0;
  if (req->method == M_SETUP_GUEST) return decode_setup_guest(call, call_len, req, err);
  return decode_container_call(call, call_len, req, err);
}

void request_free(struct request *req) {
  free(req->container_id);
  free(req->exec_id);
  free(req->payload);
  free(req->hostname);
  free(req->entropy);
  for (size_t i = 0; i < req->n_mounts; i++) {
    struct mount_req *m = &req->mounts[i];
    free(m->source);
    free(m->target);
    free(m->fstype);
    for (size_t j = 0; j < m->n_options; j++) free(m->options[j]);
    free(m->options);
  }
  free(req->mounts);
  for (size_t i = 0; i < req->n_ifaces; i++) {
    struct net_iface_req *it = &req->ifaces[i];
    free(it->name);
    free(it->mac);
    for (size_t j = 0; j < it->n_addresses; j++) free(it->addresses[j]);
    free(it->addresses);
  }
  free(req->ifaces);
  for (size_t i = 0; i < req->n_routes; i++) {
    free(req->routes[i].destination);
    free(req->routes[i].gateway);
    free(req->routes[i].device);
  }
  free(req->routes);
  for (size_t i = 0; i < req->n_sysctls; i++) {
    free(req->sysctl_keys[i]);
    free(req->sysctl_values[i]);
  }
  free(req->sysctl_keys);
  free(req->sysctl_values);
  for (size_t i = 0; i < req->n_pause_namespaces; i++) free(req->pause_namespaces[i]);
  free(req->pause_namespaces);
  free(req->pause_cgroup);
  memset(req, 0, sizeof *req);
}

enum frame_next_result frame_next(const uint8_t *p, size_t n, int *kind, uint32_t *len) {
  if (n < FRAME_HEADER) return FRAME_NEXT_INCOMPLETE;
  *len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
  *kind = p[4];
  if (*len > MAX_FRAME_PAYLOAD) return FRAME_NEXT_TOO_LARGE;
  return n - FRAME_HEADER < *len ? FRAME_NEXT_INCOMPLETE : FRAME_NEXT_OK;
}

void frame_put(buf_t *out, int kind, const void *payload, size_t n) {
  buf_reserve(out, FRAME_HEADER + n);
  buf_put_be32(out, (uint32_t)n);
  buf_put_u8(out, (uint8_t)kind);
  buf_append(out, payload, n);
}

static void encode_error(buf_t *b, uint32_t field, int code, const char *message) {
  buf_t e = {0};
  pb_put_uint(&e, 1, (uint64_t)code);
  pb_put_str(&e, 2, message ? message : "");
  pb_put_msg(b, field, &e);
  buf_free(&e);
}

void hello_reply_frame(buf_t *out, int code, const char *message) {
  buf_t m = {0};
  pb_put_uint(&m, 1, PROTOCOL_VERSION);
  if (code != E_OK) encode_error(&m, 2, code, message);
  pb_put_str(&m, 3, AGENT_VERSION);
  frame_put(out, FK_HELLO_REPLY, buf_head(&m), buf_pending(&m));
  buf_free(&m);
}

void response_frame(buf_t *out, uint64_t id, int code, const char *message, int result_field, const buf_t *result) {
  buf_t m = {0};
  pb_put_uint(&m, 1, id);
  if (code != E_OK) encode_error(&m, 2, code, message);
  else if (result) pb_put_msg(&m, (uint32_t)result_field, result);
  frame_put(out, FK_RESPONSE, buf_head(&m), buf_pending(&m));
  buf_free(&m);
}

void encode_ping(buf_t *b, const char *agent_version, uint64_t uptime_ns, uint32_t guest_cid) {
  pb_put_str(b, 1, agent_version);
  pb_put_uint(b, 2, PROTOCOL_VERSION);
  pb_put_uint(b, 3, uptime_ns);
  pb_put_uint(b, 4, guest_cid);
}

void encode_pid(buf_t *b, uint32_t pid) { pb_put_uint(b, 1, pid); }

void encode_wait(buf_t *b, const struct wait_result *w) {
  pb_put_uint(b, 1, w->exit_status);
  pb_put_int(b, 2, w->exited_at_ns);
  pb_put_bool(b, 3, w->oom_killed);
}

static void encode_u64s(buf_t *b, uint32_t field, const uint64_t *v, size_t n) {
  buf_t sub = {0};
  for (size_t i = 0; i < n; i++) pb_put_uint(&sub, (uint32_t)(i + 1), v[i]);
  pb_put_msg(b, field, &sub);
  buf_free(&sub);
}

void encode_stats(buf_t *b, const struct stats_result *s) {
  encode_u64s(b, 1, s->cpu, 6);
  encode_u64s(b, 2, s->memory, 8);
  encode_u64s(b, 3, s->pids, 2);
  encode_u64s(b, 4, s->io, 4);
  pb_put_str(b, 5, s->cgroup);
}
