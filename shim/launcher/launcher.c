// containerd-shim-stencil-v2: the executable containerd runs for every container of a pod.
//
// containerd waits for `start` before each container, and a Node process costs ~55-80 ms to
// start on metal (seconds under emulation) before it can do anything. So `start` is native:
//   - the pod's daemon runs (each app container after the sandbox's): answer its recorded address;
//   - else bind the pod's socket, give it to this containerd's spare daemon (spare.h: Node
//     already loaded) or spawn the daemon (Node, `serve`) on it, and answer what the daemon
//     reports once it has read containerd's runtime options and its configuration (the address
//     says which protocol it serves; a bad configuration fails `start` with its message); then,
//     if the configuration wants one, start the next spare.
// Everything else (`delete`, the daemon itself, `-info`, flags this does not know) is the Node
// shim (shim/src/shim/main.ts), run with the same arguments.
//
// The pod's socket is named as shim/src/shim/address.ts names it (and `delete` finds it): the
// SHA-256 of path.join(containerd address, namespace, group), where the group is the CRI
// sandbox id annotation of the bundle's config.json, else the task id.
// Tests: shim/src/shim/launcher.test.ts, shim/src/shim/lifecycle.test.ts.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon_spawn.h"
#include "spare.h"
#include "spec_annotation.h"

#define SOCKET_DIR "/run/containerd/s"                     // address.ts SOCKET_DIR
// The Node processes' argv[0]: ps shows them as the shim they are, as containerd's Go shims.
#define SHIM_ARGV0 "containerd-shim-stencil-v2"
// V8's low-memory mode: an idle daemon with every module loaded holds 17.9 MB of anonymous memory
// instead of 24.2 MB (Node 20, this machine), one pod daemon per pod. Its code runs once per call
// or pod, so giving up some of V8's speed for size costs little.
#define NODE_FLAG "--optimize-for-size"
#define SANDBOX_ANNOTATION "io.kubernetes.cri.sandbox-id"  // address.ts SANDBOX_ANNOTATIONS
#define MAX_SPEC_BYTES (64 << 20)
#define MAX_OPTIONS_BYTES (1 << 20)
// How long a new daemon may take to report (Node's start under load, many pods at once).
#define DAEMON_REPORT_TIMEOUT_MS (180 * 1000)

struct start_flags {
  const char *namespace_, *address, *publish_binary, *id;
  bool debug;
};

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  // Only on failure: containerd puts start's combined output into its error message.
  va_list ap;
  va_start(ap, fmt);
  fputs("containerd-shim-stencil-v2: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

// The repository this executable was built in (build/bin/ → ..).
static void repo_root(char *out, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", out, cap - 1);
  if (n <= 0) fail("cannot find its own path: %s", strerror(errno));
  out[n] = '\0';
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(out, '/');
    if (slash) *slash = '\0';
  }
}

// The Node shim's entry: the ES bundle `make build` made from shim/src/shim/main.ts.
static void node_script(char *out, size_t cap) {
  char root[PATH_MAX];
  repo_root(root, sizeof root);
  if ((size_t)snprintf(out, cap, "%s/dist/shim-bundle/main.js", root) >= cap) fail("its path is too long");
}

static void run_node_shim(char **argv) {
  char script[PATH_MAX];
  node_script(script, sizeof script);
  int argc = 0;
  while (argv[argc]) argc++;
  const char **args = calloc((size_t)argc + 3, sizeof *args);
  if (!args) fail("out of memory");
  args[0] = SHIM_ARGV0;
  args[1] = NODE_FLAG;
  args[2] = script;
  for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
  execvp("node", (char *const *)args);
  fail("cannot run node (%s): %s", script, strerror(errno));
}

// containerd's Go flag syntax for `start` (flags.ts): -name value or -name=value, then the
// action. False for anything else (other actions, unknown or repeated flags): Node decides.
static bool parse_start_flags(int argc, char **argv, struct start_flags *out) {
  static const char *const strings[] = {"namespace", "address", "publish-binary", "id", "bundle"};
  enum { N = sizeof strings / sizeof *strings };
  const char *values[N] = {0};
  out->debug = false;
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *name = argv[i] + (argv[i][1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (strcmp(name, "debug") == 0 && !out->debug) {
      out->debug = true;
      continue;
    }
    size_t k = 0;
    while (k < N && !(strlen(strings[k]) == len && strncmp(name, strings[k], len) == 0)) k++;
    if (k == N || values[k]) return false;
    if (eq) {
      values[k] = eq + 1;
    } else {
      if (i + 1 >= argc) return false;
      values[k] = argv[++i];
    }
  }
  if (i != argc - 1 || strcmp(argv[i], "start") != 0) return false;
  out->namespace_ = values[0];
  out->address = values[1] ? values[1] : "";
  out->publish_binary = values[2] ? values[2] : "";
  out->id = values[3];
  return out->namespace_ && *out->namespace_ && out->id && *out->id;
}

// A whole file, NUL-terminated; NULL if unreadable (errno set; EFBIG when over `max` bytes).
static char *read_file(const char *path, size_t max, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  char *buf = NULL;
  size_t used = 0, cap = 0;
  while (true) {
    if (used == cap) {
      cap = cap ? cap * 2 : 64 * 1024;
      if (cap > max + 1) cap = max + 1;
      char *grown = used < cap ? realloc(buf, cap + 1) : NULL;
      if (!grown) {
        free(buf);
        close(fd);
        errno = used < cap ? ENOMEM : EFBIG;
        return NULL;
      }
      buf = grown;
    }
    ssize_t n = read(fd, buf + used, cap - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      free(buf);
      close(fd);
      errno = e;
      return NULL;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  close(fd);
  buf[used] = '\0';
  *size = used;
  return buf;
}

// The pod the task belongs to (address.ts groupId): the CRI sandbox id, else the task id.
static char *group_of(const struct start_flags *f) {
  size_t size = 0;
  char *spec = read_file("config.json", MAX_SPEC_BYTES, &size);
  if (!spec && errno == EFBIG) fail("the OCI spec config.json is over %d MiB", MAX_SPEC_BYTES >> 20);
  char *sandbox = NULL;
  enum annotation_lookup found = spec ? find_spec_annotation(spec, size, SANDBOX_ANNOTATION, &sandbox) : ANNOTATION_ABSENT;
  free(spec);
  if (found == ANNOTATION_INVALID) fail("the OCI spec's annotation %s is not valid UTF-8 text", SANDBOX_ANNOTATION);
  if (found == ANNOTATION_FOUND && *sandbox) return sandbox;
  free(sandbox);
  return strdup(f->id);
}

// Node's path.posix.join(a, b, c): non-empty parts joined by '/', then normalised ('.', '..',
// repeated slashes; a trailing slash kept).
static char *path_join(const char *const parts[3]) {
  size_t total = 4;
  for (int i = 0; i < 3; i++) total += strlen(parts[i]) + 1;
  char *joined = calloc(1, total), *out = calloc(1, total + 1);
  if (!joined || !out) fail("out of memory");
  for (int i = 0; i < 3; i++) {
    if (!*parts[i]) continue;
    if (*joined) strcat(joined, "/");
    strcat(joined, parts[i]);
  }
  bool absolute = joined[0] == '/', trailing = *joined && joined[strlen(joined) - 1] == '/';
  size_t n = 0;
  int depth = 0;  // segments in `out` that a '..' may remove
  for (char *seg = strtok(joined, "/"); seg; seg = strtok(NULL, "/")) {
    if (strcmp(seg, ".") == 0) continue;
    if (strcmp(seg, "..") == 0) {
      if (depth > 0) {
        while (n > 0 && out[n - 1] != '/') n--;
        if (n > 0) n--;
        depth--;
        continue;
      }
      if (absolute) continue;
    } else {
      depth++;
    }
    if (n > 0) out[n++] = '/';
    strcpy(out + n, seg);
    n += strlen(seg);
  }
  out[n] = '\0';
  free(joined);
  char *result = NULL;
  if (asprintf(&result, "%s%s%s", absolute ? "/" : "", n == 0 && !absolute ? "." : out, trailing && n > 0 ? "/" : "") < 0) fail("out of memory");
  free(out);
  return result;
}

static void sha256_hex(const char *text, char hex[65]) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(text, strlen(text), digest, &n, EVP_sha256(), NULL) != 1 || n != 32) fail("SHA-256 (libcrypto) failed");
  for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

// address.ts socketPath().
static void socket_path(const struct start_flags *f, const char *group, char *out, size_t cap) {
  char *joined = path_join((const char *const[]){f->address, f->namespace_, group});
  char hex[65];
  sha256_hex(joined, hex);
  free(joined);
  snprintf(out, cap, "%s/%s", SOCKET_DIR, hex);
}

// What identifies this build's daemon code (spare.ts compares it to tell a rebuilt shim).
static bool build_identity(const char *script, char *out, size_t cap) {
  struct stat st;
  if (stat(script, &st) != 0) return false;
  snprintf(out, cap, "%llu:%llu:%lld.%09ld:%lld", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (long long)st.st_mtim.tv_sec,
           st.st_mtim.tv_nsec, (long long)st.st_size);
  return true;
}

// The spare of this containerd and this build (spare.h).
static bool spare_paths_for(const char *address, const char *script, const char *build, struct spare_paths *out) {
  char *key_text = NULL;
  if (asprintf(&key_text, "%s\n%s\n%s", address, script, build) < 0) return false;
  char hex[65];
  sha256_hex(key_text, hex);
  free(key_text);
  hex[32] = '\0';
  snprintf(out->sock, sizeof out->sock, "%s/%s.sock", SPARE_DIR, hex);
  snprintf(out->lock, sizeof out->lock, "%s/%s.lock", SPARE_DIR, hex);
  return true;
}

// SOCKET_DIR and a SHA-256 in hex always fit sun_path.
static struct sockaddr_un unix_address(const char *sock) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t len = strlen(sock);
  if (len >= sizeof sa.sun_path) fail("the socket path %s is too long", sock);
  memcpy(sa.sun_path, sock, len + 1);
  return sa;
}

// address.ts isListening(): something accepts connections on the socket.
static bool is_listening(const char *sock) {
  int fd = connect_unix(sock);
  if (fd < 0) return false;
  close(fd);
  return true;
}

// Where the address given out for the daemon on `sock` is recorded (address.ts daemonAddressPath).
static void record_path(const char *sock, char *out, size_t cap) { snprintf(out, cap, "%s.address", sock); }

// address.ts removeDaemonSocket(): the socket and its recorded address.
static void remove_daemon_socket(const char *sock) {
  char record[PATH_MAX + 16];
  record_path(sock, record, sizeof record);
  unlink(sock);
  unlink(record);
}

// The address recorded beside the socket, or NULL.
static char *recorded_address(const char *sock) {
  char path[PATH_MAX + 16];
  record_path(sock, path, sizeof path);
  size_t size = 0;
  char *address = read_file(path, 4096, &size);
  if (address && size > 0 && strlen(address) == size) return address;
  free(address);
  return NULL;
}

// address.ts writeAddressFile(), in the bundle (the working directory).
static void write_address_file(const char *address) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, ".address.%d", (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot write the bundle's address file: %s", strerror(errno));
  size_t len = strlen(address);
  bool ok = write(fd, address, len) == (ssize_t)len;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, "address") != 0) {
    int e = errno;
    unlink(tmp);
    fail("cannot write the bundle's address file: %s", strerror(e));
  }
}

// A start of the same pod that bound the socket first: its daemon records the address once it
// has read its configuration.
static char *wait_for_recorded_address(const char *sock) {
  for (int waited = 0; waited < DAEMON_REPORT_TIMEOUT_MS; waited += 20) {
    char *address = recorded_address(sock);
    if (address) return address;
    if (!is_listening(sock)) return NULL;
    nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
  }
  return NULL;
}

static int mkdir_p(const char *dir, mode_t mode) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(path, mode) != 0 && errno != EEXIST ? -1 : 0;
}

// Binds the pod's socket (mode 0600); -1 with errno EADDRINUSE when another start bound it first.
static int bind_pod_socket(const char *sock) {
  if (mkdir_p(SOCKET_DIR, 0711) != 0) fail("cannot create %s: %s", SOCKET_DIR, strerror(errno));
  remove_daemon_socket(sock);  // stale: its daemon is gone
  struct sockaddr_un sa = unix_address(sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("cannot make a socket: %s", strerror(errno));
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    if (e == EADDRINUSE) return -1;
    fail("cannot listen on %s: %s", sock, strerror(e));
  }
  if (chmod(sock, 0600) != 0 || listen(fd, 511) != 0) fail("cannot listen on %s: %s", sock, strerror(errno));
  return fd;
}

// containerd's runtime options (a protobuf Any), for the daemon to decode.
static char *read_stdin(size_t *len) {
  *len = 0;
  if (isatty(STDIN_FILENO)) return strdup("");
  char *buf = read_file("/dev/stdin", MAX_OPTIONS_BYTES, len);
  if (!buf && errno == EFBIG) fail("the runtime options on stdin are over %d MiB", MAX_OPTIONS_BYTES >> 20);
  return buf ? buf : strdup("");
}

// The report's address; with a trailing "\tspare" (the configuration wants a spare kept), *spare.
static char *reported_address(char *report, bool *spare) {
  char *tab = strchr(report, '\t');
  *spare = tab && strcmp(tab + 1, "spare") == 0;
  if (tab) *tab = '\0';
  return strdup(report + 3);
}

// Gives the pod to this containerd's spare daemon, else spawns its daemon, on `sock`; returns the
// address the daemon reports and, when its configuration asks for one, starts the next spare.
static char *launch_daemon(const struct start_flags *f, const char *sock, int listen_fd) {
  size_t options_len = 0;
  char *options = read_stdin(&options_len);
  char script[PATH_MAX], build[128];
  node_script(script, sizeof script);
  struct spare_paths spare;
  bool spares = build_identity(script, build, sizeof build) && spare_paths_for(f->address, script, build, &spare);
  char socket_fd[12], options_fd[12], report_fd[12];
  snprintf(socket_fd, sizeof socket_fd, "%d", DAEMON_SOCKET_FD);
  snprintf(options_fd, sizeof options_fd, "%d", DAEMON_OPTIONS_FD);
  snprintf(report_fd, sizeof report_fd, "%d", DAEMON_REPORT_FD);
  // The pod's flags (all a spare needs), then with the descriptor flags the argv of a spawn.
  const char *pod[16] = {"-namespace", f->namespace_, "-id", f->id, "-address", f->address, "-publish-binary", f->publish_binary, "-socket", sock};
  size_t npod = 10;
  if (f->debug) pod[npod++] = "-debug";
  char *why = NULL, *report = NULL;
  bool taken = false;
  if (spares) report = handoff_to_spare(&spare, pod, listen_fd, options, options_len, DAEMON_REPORT_TIMEOUT_MS, &taken, &why);
  if (!taken) {
    const char *argv[32] = {SHIM_ARGV0, NODE_FLAG, script};
    size_t n = 3;
    for (size_t i = 0; i < npod; i++) argv[n++] = pod[i];
    const char *tail[] = {"-socket-fd", socket_fd, "-options-fd", options_fd, "-report-fd", report_fd, "serve"};
    for (size_t i = 0; i < sizeof tail / sizeof *tail; i++) argv[n++] = tail[i];
    struct daemon_spawn d = {.file = "node", .argv = (char *const *)argv, .listen_fd = listen_fd, .options = options, .options_len = options_len};
    report = spawn_daemon(&d, DAEMON_REPORT_TIMEOUT_MS, &why);
  }
  close(listen_fd);
  free(options);
  if (report && strncmp(report, "ok ", 3) == 0 && report[3]) {
    bool want_spare = false;
    char *address = reported_address(report, &want_spare);
    if (want_spare && spares) {
      const char *spare_argv[] = {SHIM_ARGV0, NODE_FLAG, script, "-address", f->address, "-spare-socket", spare.sock, "-spare-build", build, "spare", NULL};
      ensure_spare(&spare, "node", (char *const *)spare_argv);
    }
    return address;
  }
  remove_daemon_socket(sock);  // the daemon is gone or going
  if (report && strncmp(report, "error ", 6) == 0) fail("%s", report + 6);
  if (report) fail("the shim daemon reported %s", report);
  fail("%s", why ? why : "the shim daemon did not start");
}

int main(int argc, char **argv) {
  struct start_flags flags;
  if (argc < 2 || !parse_start_flags(argc, argv, &flags)) run_node_shim(argv);
  char *group = group_of(&flags);
  char sock[PATH_MAX];
  socket_path(&flags, group, sock, sizeof sock);
  free(group);
  bool listening = is_listening(sock);
  char *address = listening ? recorded_address(sock) : NULL;
  if (!address && listening) address = wait_for_recorded_address(sock);
  if (!address) {
    int fd = bind_pod_socket(sock);
    address = fd >= 0 ? launch_daemon(&flags, sock, fd) : wait_for_recorded_address(sock);
    if (!address) fail("the shim daemon for %s did not start (see containerd's log)", flags.id);
  }
  write_address_file(address);
  // containerd's runtime options on stdin, when the running daemon had them already.
  if (!isatty(STDIN_FILENO)) {
    char sink[4096];
    while (read(STDIN_FILENO, sink, sizeof sink) > 0) {
    }
  }
  size_t len = strlen(address);
  if (write(STDOUT_FILENO, address, len) != (ssize_t)len) return 1;
  return 0;
}
