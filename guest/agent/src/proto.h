// The messages of proto/agent.proto as C structs, with their decoders and encoders, and the
// frame header. Field numbers here must match the .proto file.
#ifndef STENCIL_AGENT_PROTO_H
#define STENCIL_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define PROTOCOL_VERSION 1
#ifndef AGENT_VERSION
#define AGENT_VERSION "0.1.0"
#endif
#define FRAME_HEADER 5
#define MAX_FRAME_PAYLOAD (4u << 20)

enum frame_kind { FK_HELLO = 1, FK_HELLO_REPLY = 2, FK_REQUEST = 3, FK_RESPONSE = 4, FK_DATA = 5, FK_EOF = 6, FK_DETACH = 7 };
enum role { ROLE_CONTROL = 1, ROLE_STDIN = 2, ROLE_STDOUT = 3, ROLE_STDERR = 4, ROLE_PORT = 5 };
enum err_code {
  E_OK = 0,
  E_INVALID_ARGUMENT = 1,
  E_NOT_FOUND = 2,
  E_ALREADY_EXISTS = 3,
  E_FAILED_PRECONDITION = 4,
  E_RUNTIME = 5,
  E_INTERNAL = 6,
  E_UNIMPLEMENTED = 7,
  E_PROTOCOL = 8,
};
// Request.call / Response.result field numbers.
enum method {
  M_NONE = 0,
  M_PING = 10,
  M_SETUP_GUEST = 11,
  M_CREATE = 12,
  M_START = 13,
  M_EXEC = 14,
  M_SIGNAL = 15,
  M_WAIT = 16,
  M_RESIZE = 17,
  M_CLOSE_STDIN = 18,
  M_STATS = 19,
  M_PAUSE = 20,
  M_RESUME = 21,
  M_DELETE = 22,
  M_DELETE_PROCESS = 23,
  M_UPDATE = 24,
  M_LAST = M_UPDATE,  // the highest call number this agent knows
};
const char *method_name(int method);

struct hello {
  uint32_t version;
  int role;
  char *container_id;
  char *exec_id;
  uint32_t port;  // ROLE_PORT: the guest TCP port
};

struct stdio_mode {
  bool terminal, in, out, err;
};

struct net_iface_req {
  char *name, *mac;
  uint32_t mtu;
  char **addresses;
  size_t n_addresses;
};

struct route_req {
  char *destination, *gateway, *device;
};

struct mount_req {
  char *source, *target, *fstype;
  char **options;
  size_t n_options;
};

// One decoded Request. Every string is non-NULL ("" when absent) and NUL-free.
struct request {
  uint64_t id;
  int method;
  char *container_id, *exec_id;
  uint8_t *payload;  // CreateContainer.oci_spec_json / ExecProcess.process_json / UpdateContainer.resources_json
  size_t payload_len;
  struct stdio_mode stdio;
  uint32_t signal;
  bool all;
  uint32_t width, height;
  int64_t time_ns;
  char *hostname;
  uint8_t *entropy;
  size_t entropy_len;
  struct mount_req *mounts;
  size_t n_mounts;
  struct net_iface_req *ifaces;
  size_t n_ifaces;
  struct route_req *routes;
  size_t n_routes;
  char **sysctl_keys, **sysctl_values;  // SetupGuest's sysctls, in the order sent
  size_t n_sysctls;
  // CreateContainer.pause (PauseHolder); its hostname is in `hostname`.
  bool pause;
  char **pause_namespaces;
  size_t n_pause_namespaces;
  char *pause_cgroup;
  bool start_through_exec_fifo;  // CreateContainer's 6
};

// 0 on success; -1 with *err naming the problem (a static string).
int hello_decode(const uint8_t *p, size_t n, struct hello *h, const char **err);
void hello_free(struct hello *h);
// On failure req->id still holds the id if it could be read (else 0).
int request_decode(const uint8_t *p, size_t n, struct request *req, const char **err);
void request_free(struct request *req);

// Appends a whole frame (header + payload) to out.
void frame_put(buf_t *out, int kind, const void *payload, size_t n);

// The next frame at the start of p[0..n): FRAME_NEXT_OK fills *kind, *len (the payload follows
// the header); FRAME_NEXT_INCOMPLETE: more bytes needed; FRAME_NEXT_TOO_LARGE: the header claims
// more than MAX_FRAME_PAYLOAD (*len says how much), and the connection cannot go on.
enum frame_next_result { FRAME_NEXT_OK, FRAME_NEXT_INCOMPLETE, FRAME_NEXT_TOO_LARGE };
enum frame_next_result frame_next(const uint8_t *p, size_t n, int *kind, uint32_t *len);
void hello_reply_frame(buf_t *out, int code, const char *message);
// A RESPONSE frame; result (may be NULL) is the encoded result message for field result_field.
void response_frame(buf_t *out, uint64_t id, int code, const char *message, int result_field, const buf_t *result);

struct wait_result {
  uint32_t exit_status;
  int64_t exited_at_ns;
  bool oom_killed;
};

struct stats_result {
  uint64_t cpu[6];     // CpuStats fields 1..6
  uint64_t memory[8];  // MemoryStats fields 1..8
  uint64_t pids[2];    // PidsStats fields 1..2
  uint64_t io[4];      // IoStats fields 1..4
  char cgroup[512];
};

void encode_ping(buf_t *b, const char *agent_version, uint64_t uptime_ns, uint32_t guest_cid);
void encode_pid(buf_t *b, uint32_t pid);
void encode_wait(buf_t *b, const struct wait_result *w);
void encode_stats(buf_t *b, const struct stats_result *s);

#endif
