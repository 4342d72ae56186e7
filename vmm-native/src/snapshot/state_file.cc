#include "state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "../error.h"
#include "../fd.h"
#include "sha256.h"

namespace stencil {

namespace {
constexpr char kMagic[16] = "STNCSTATE";  // zero-padded to 16 bytes
constexpr size_t kDigestSize = 32;
}  // namespace

void StateFile::Add(std::string name, uint32_t version, std::vector<uint8_t> payload) {
  if (Has(name)) throw VmmError(ErrorCode::kSnapshot, "state section '" + name + "' added twice");
  sections_.push_back({std::move(name), version, std::move(payload)});
}

bool StateFile::Has(const std::string& name) const {
  for (const auto& s : sections_)
    if (s.name == name) return true;
  return false;
}

const StateSection& StateFile::Get(const std::string& name, uint32_t expected_version) const {
  for (const auto& s : sections_) {
    if (s.name != name) continue;
    if (s.version != expected_version)
      throw VmmError(ErrorCode::kSnapshot, "state section '" + name + "' has version " + std::to_string(s.version) +
                                               ", this VMM reads version " + std::to_string(expected_version));
    return s;
  }
  throw VmmError(ErrorCode::kSnapshot, "state has no section '" + name + "'");
}

ByteReader StateFile::Reader(const std::string& name, uint32_t expected_version) const {
  const StateSection& s = Get(name, expected_version);
  return ByteReader(s.payload, "state section " + name);
}

std::vector<uint8_t> StateFile::Encode() const {
  ByteWriter w;
  w.Raw(kMagic, sizeof kMagic);
  w.U32(kStateFormatVersion);
  w.U32(static_cast<uint32_t>(sections_.size()));
  for (const auto& s : sections_) {
    w.String(s.name);
    w.U32(s.version);
    w.Blob(s.payload);
  }
  Sha256Digest digest = Sha256(w.data().data(), w.data().size());
  w.Raw(digest.data(), digest.size());
  return w.Take();
}

StateFile StateFile::Decode(const std::vector<uint8_t>& bytes, const std::string& origin) {
  auto fail = [&](const std::string& why) { throw VmmError(ErrorCode::kSnapshot, "state file " + origin + ": " + why); };
  if (bytes.size() < sizeof kMagic + 8 + kDigestSize)
    fail("truncated (" + std::to_string(bytes.size()) + " bytes, shorter than any valid state)");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) fail("not a Stencil state file (bad magic)");
  uint32_t version;
  std::memcpy(&version, bytes.data() + sizeof kMagic, 4);
  if (version != kStateFormatVersion)
    fail("format version " + std::to_string(version) + ", this VMM reads version " + std::to_string(kStateFormatVersion));
  size_t body = bytes.size() - kDigestSize;
  Sha256Digest digest = Sha256(bytes.data(), body);
  if (std::memcmp(digest.data(), bytes.data() + body, kDigestSize) != 0)
    fail("checksum mismatch (the file is corrupt or truncated)");

  ByteReader r(bytes.data() + sizeof kMagic + 4, body - sizeof kMagic - 4, "state file " + origin);
  StateFile file;
  uint32_t count = r.U32();
  for (uint32_t i = 0; i < count; i++) {
    std::string name = r.String();
    uint32_t section_version = r.U32();
    file.Add(std::move(name), section_version, r.Blob());
  }
  r.ExpectEnd();
  return file;
}

void WriteFileAtomically(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) throw VmmError(ErrorCode::kSnapshot, WithErrno("creating " + tmp));
  auto fail = [&](const std::string& what) {
    int err = errno;
    unlink(tmp.c_str());
    throw VmmError(ErrorCode::kSnapshot, WithErrno(what, err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing " + tmp);
    done += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0) fail("fsync " + tmp);
  fd.reset();
  if (rename(tmp.c_str(), path.c_str()) != 0) fail("renaming " + tmp + " to " + path);
}

std::vector<uint8_t> ReadWholeFile(const std::string& path, const char* what) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw VmmError(ErrorCode::kSnapshot, WithErrno(std::string("opening ") + what + " " + path));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) throw VmmError(ErrorCode::kSnapshot, WithErrno(std::string("fstat ") + path));
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw VmmError(ErrorCode::kSnapshot, WithErrno(std::string("reading ") + what + " " + path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

}  // namespace stencil
