// libFuzzer target: the 9P2000.L server (virtio/p9/server.h) over a real scratch share, driven by
// a hostile guest's request sequence. The input is a list of messages, each u16 length + type +
// tag + body; the size field is filled in here so that the fuzzer spends its effort on the
// bodies. After every input the directory next to the share is checked: a request that created,
// removed or changed anything outside the share is a crash.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/virtio/p9/server.h"
#include "seeds.h"

namespace {

std::string g_top;    // scratch dir: share/ and outside/
std::string g_share;
uint64_t g_inputs = 0;

void Sh(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) __builtin_trap();
}

// A share with a file, a directory, and symlinks that point out of it; a sibling it must not touch.
void MakeTree() {
  Sh("rm -rf '" + g_top + "/share' '" + g_top + "/outside' && mkdir -p '" + g_top + "/share/dir' '" + g_top + "/outside' && " +
     "echo hello > '" + g_top + "/share/file' && echo secret > '" + g_top + "/outside/secret' && " +
     "ln -s ../outside '" + g_top + "/share/escape' && ln -s /etc/passwd '" + g_top + "/share/dir/passwd'");
}

// What is outside the share: the names in the top dir and in outside/, and the secret's content.
std::string OutsideView() {
  std::string view;
  for (const std::string& d : {g_top, g_top + "/outside"}) {
    DIR* dir = opendir(d.c_str());
    if (!dir) return "missing " + d;
    std::vector<std::string> names;
    while (dirent* e = readdir(dir)) names.push_back(e->d_name);
    closedir(dir);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) view += d + "/" + n + "\n";
  }
  int fd = open((g_top + "/outside/secret").c_str(), O_RDONLY | O_CLOEXEC);
  char buf[64] = {};
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    (void)n;
    close(fd);
  }
  struct stat st {};
  stat((g_top + "/outside/secret").c_str(), &st);
  return view + buf + std::to_string(st.st_mode) + ":" + std::to_string(st.st_uid);
}

std::string g_outside;

// Messages in the target's framing (u16 length, then type, tag, body), built field by field.
class Session {
 public:
  Session& Msg(uint8_t type) {
    Flush();
    body_ = {type, 1, 0};  // tag 1
    return *this;
  }
  Session& U32(uint32_t v) { return Raw(&v, 4); }
  Session& U64(uint64_t v) { return Raw(&v, 8); }
  Session& U16(uint16_t v) { return Raw(&v, 2); }
  Session& Str(const std::string& v) { return U16(static_cast<uint16_t>(v.size())).Raw(v.data(), v.size()); }
  stencil::fuzz::Seed Done(bool writable) {
    Flush();
    stencil::fuzz::Seed s{static_cast<uint8_t>(writable ? 0 : 1)};
    s.insert(s.end(), out_.begin(), out_.end());
    return s;
  }

 private:
  Session& Raw(const void* p, size_t n) {
    body_.insert(body_.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    return *this;
  }
  void Flush() {
    if (body_.empty()) return;
    uint16_t len = static_cast<uint16_t>(body_.size());
    out_.push_back(len & 0xff), out_.push_back(len >> 8);
    out_.insert(out_.end(), body_.begin(), body_.end());
    body_.clear();
  }
  stencil::fuzz::Seed body_, out_;
};

enum : uint8_t { kTlopen = 12, kTlcreate = 14, kTreadlink = 22, kTgetattr = 24, kTreaddir = 40, kTversion = 100, kTattach = 104,
                 kTwalk = 110, kTread = 116, kTwrite = 118, kTclunk = 120 };

Session& Attach(Session& s) {
  return s.Msg(kTversion).U32(65536).Str("9P2000.L").Msg(kTattach).U32(0).U32(~0u).Str("root").Str("").U32(0);
}

std::vector<stencil::fuzz::Seed> Seeds() {
  std::vector<stencil::fuzz::Seed> seeds;
  Session read;
  Attach(read).Msg(kTwalk).U32(0).U32(1).U16(1).Str("file").Msg(kTlopen).U32(1).U32(0).Msg(kTread).U32(1).U64(0).U32(100);
  read.Msg(kTwalk).U32(0).U32(2).U16(1).Str("dir").Msg(kTlopen).U32(2).U32(0).Msg(kTreaddir).U32(2).U64(0).U32(4096);
  read.Msg(kTwalk).U32(0).U32(3).U16(2).Str("escape").Str("secret").Msg(kTgetattr).U32(3).U64(0x3fff);
  read.Msg(kTwalk).U32(0).U32(4).U16(2).Str("dir").Str("passwd").Msg(kTreadlink).U32(4).Msg(kTclunk).U32(1);
  seeds.push_back(read.Done(false));
  Session write;
  Attach(write).Msg(kTwalk).U32(0).U32(1).U16(0).Msg(kTlcreate).U32(1).Str("new").U32(0102).U32(0644).U32(0);
  write.Msg(kTwrite).U32(1).U64(0).U32(6).U32(0x6c6c6568).U16(0x6f).Msg(kTwalk).U32(0).U32(2).U16(1).Str("..");
  seeds.push_back(write.Done(true));
  return seeds;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  g_top = stencil::fuzz::ScratchDirRemovedAtExit("stencil-p9-fuzz");
  g_share = g_top + "/share";
  MakeTree();
  g_outside = OutsideView();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // Rebuild the share now and then: writable runs may fill it.
  if (++g_inputs % 2000 == 0) MakeTree();
  stencil::p9::ServerOptions options;
  options.read_only = data[0] & 1;
  options.max_fids = 64;
  data++, size--;
  stencil::p9::Server server(stencil::UniqueFd(open(g_share.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)), options);
  std::vector<uint8_t> msg;
  while (size >= 2) {
    size_t len = data[0] | size_t{data[1]} << 8;
    data += 2, size -= 2;
    if (len > size) len = size;
    msg.assign(4, 0);
    uint32_t total = static_cast<uint32_t>(len + 4);
    std::memcpy(msg.data(), &total, 4);
    msg.insert(msg.end(), data, data + len);
    std::vector<uint8_t> reply = server.Handle(msg.data(), msg.size(), 8192);
    if (std::getenv("STENCIL_FUZZ_VERBOSE") && reply.size() >= 7) {
      uint32_t ecode = 0;
      if (reply[4] == 7 && reply.size() >= 11) std::memcpy(&ecode, &reply[7], 4);  // Rlerror
      std::fprintf(stderr, "T%u -> R%u%s\n", msg[4], reply[4], reply[4] == 7 ? (" errno " + std::to_string(ecode)).c_str() : "");
    }
    data += len, size -= len;
  }
  server.Reset();
  if (OutsideView() != g_outside) {
    std::fprintf(stderr, "p9 fuzz: the directory outside the share changed:\n%s\nwas:\n%s\n", OutsideView().c_str(), g_outside.c_str());
    __builtin_trap();
  }
  return 0;
}
