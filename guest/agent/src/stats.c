// The Stats call: a container's cgroup v2 counters.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container.h"

static uint64_t read_u64_file(const char *dir, const char *name) {
  char path[700], text[64];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (read_small(path, text, sizeof text) <= 0) return 0;
  if (!strncmp(text, "max", 3)) return 0;
  return strtoull(text, NULL, 10);
}

// "key value" lines (cpu.stat, memory.stat, memory.events): the values of keys[i] into out[i].
static void read_keyed(const char *dir, const char *name, const char *const *keys, uint64_t *const *out) {
  char path[700];
  static char text[16384];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (read_small(path, text, sizeof text) <= 0) return;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *sp = strchr(line, ' ');
    if (!sp) continue;
    *sp = 0;
    for (size_t i = 0; keys[i]; i++)
      if (!strcmp(line, keys[i])) *out[i] = strtoull(sp + 1, NULL, 10);
  }
}

static void read_io(const char *dir, uint64_t io[4]) {
  char path[700];
  static char text[16384];
  snprintf(path, sizeof path, "%s/io.stat", dir);
  if (read_small(path, text, sizeof text) <= 0) return;
  static const char *const keys[] = {"rbytes=", "wbytes=", "rios=", "wios="};
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    for (char *tok = strchr(line, ' '); tok; tok = strchr(tok + 1, ' ')) {
      for (int k = 0; k < 4; k++)
        if (!strncmp(tok + 1, keys[k], strlen(keys[k]))) io[k] += strtoull(tok + 1 + strlen(keys[k]), NULL, 10);
    }
  }
}

void do_stats(struct container *c, uint64_t conn_id, struct request *req) {
  if (!c->cgroup[0]) {
    respond(conn_id, req->id, E_FAILED_PRECONDITION, "Stats %s: the container has no cgroup of its own", c->id);
    return;
  }
  struct stats_result s;
  memset(&s, 0, sizeof s);
  snprintf(s.cgroup, sizeof s.cgroup, "%s", c->cgroup);
  const char *cpu_keys[] = {"usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec", NULL};
  uint64_t *cpu_out[] = {&s.cpu[0], &s.cpu[1], &s.cpu[2], &s.cpu[3], &s.cpu[4], &s.cpu[5]};
  read_keyed(c->cgroup, "cpu.stat", cpu_keys, cpu_out);
  s.memory[0] = read_u64_file(c->cgroup, "memory.current");
  s.memory[1] = read_u64_file(c->cgroup, "memory.max");
  s.memory[2] = read_u64_file(c->cgroup, "memory.peak");
  const char *mem_keys[] = {"anon", "file", NULL};
  uint64_t *mem_out[] = {&s.memory[3], &s.memory[4]};
  read_keyed(c->cgroup, "memory.stat", mem_keys, mem_out);
  s.memory[5] = read_u64_file(c->cgroup, "memory.swap.current");
  const char *ev_keys[] = {"oom", "oom_kill", NULL};
  uint64_t *ev_out[] = {&s.memory[6], &s.memory[7]};
  read_keyed(c->cgroup, "memory.events", ev_keys, ev_out);
  s.pids[0] = read_u64_file(c->cgroup, "pids.current");
  s.pids[1] = read_u64_file(c->cgroup, "pids.max");
  read_io(c->cgroup, s.io);
  buf_t b = {0};
  encode_stats(&b, &s);
  send_response(conn_id, req->id, E_OK, NULL, M_STATS, &b);
  buf_free(&b);
}
