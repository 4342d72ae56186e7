// The seed corpus of each fuzz target is written by the target itself, with the real encoders, so
// that it follows the formats: `STENCIL_FUZZ_WRITE_SEEDS=DIR target` writes DIR/seed-N and exits
// (scripts/fuzz.sh --write-seeds refreshes fuzz/corpus/ with it). Also the targets' scratch
// directory.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace stencil::fuzz {

using Seed = std::vector<uint8_t>;

inline void WriteSeedsIfAsked(const std::function<std::vector<Seed>()>& make) {
  const char* dir = std::getenv("STENCIL_FUZZ_WRITE_SEEDS");
  if (!dir) return;
  std::vector<Seed> seeds = make();
  for (size_t i = 0; i < seeds.size(); i++) {
    std::string path = std::string(dir) + "/seed-" + std::to_string(i);
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(seeds[i].data(), 1, seeds[i].size(), f) != seeds[i].size() || std::fclose(f) != 0) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      std::exit(1);
    }
  }
  std::fprintf(stderr, "wrote %zu seeds to %s\n", seeds.size(), dir);
  std::exit(0);
}

template <typename T>
void Put(Seed& s, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  s.insert(s.end(), p, p + sizeof v);
}

inline void PutAt(Seed& s, size_t offset, const void* data, size_t len) {
  if (s.size() < offset + len) s.resize(offset + len);
  const auto* p = static_cast<const uint8_t*>(data);
  std::copy(p, p + len, s.begin() + offset);
}

// A fresh directory /tmp/<prefix>-XXXXXX for a target's sockets or files, removed at exit.
inline std::string ScratchDirRemovedAtExit(const std::string& prefix) {
  static std::vector<std::string> dirs;
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) __builtin_trap();
  if (dirs.empty()) std::atexit([] {
    for (const std::string& d : dirs) std::system(("rm -rf '" + d + "'").c_str());
  });
  dirs.push_back(tmpl);
  return tmpl;
}

}  // namespace stencil::fuzz
