// A spare daemon's handoff socket: a launcher's descriptors and strings arrive whole and are
// acknowledged; a cut-off, oversized or unterminated handoff is an error naming what was wrong,
// and the descriptors that came with it are closed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "../src/error.h"
#include "../src/host/handoff.h"

using namespace stencil;

namespace {

class HandoffSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stencil-handoff-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/spare.sock";
    listener_ = ListenForHandoff(path_);
  }
  void TearDown() override {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  // A launcher's connection.
  UniqueFd Connect() {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path_.c_str());
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << strerror(errno);
    return fd;
  }

  // Sends bytes with `fds` attached.
  static void Send(int conn, const std::string& bytes, const std::vector<int>& fds) {
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    if (!fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(sendmsg(conn, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size())) << strerror(errno);
  }

  static std::string Framed(const std::string& body) {
    uint32_t n = static_cast<uint32_t>(body.size());
    std::string out{static_cast<char>(n), static_cast<char>(n >> 8), static_cast<char>(n >> 16), static_cast<char>(n >> 24)};
    return out + body;
  }

  std::string dir_, path_;
  UniqueFd listener_;
};

TEST_F(HandoffSocket, TimesOutWithNoLauncher) { EXPECT_FALSE(AcceptHandoff(listener_.get(), 10).has_value()); }

TEST_F(HandoffSocket, DeliversDescriptorsAndStringsAndAcknowledges) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  UniqueFd conn = Connect();
  Send(conn.get(), Framed(std::string("stencil-handoff-1\0/bundle\0\0-id\0", 31)), {pipe_fds[1]});
  close(pipe_fds[1]);
  std::optional<Handoff> h = AcceptHandoff(listener_.get(), 1000);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->strings, (std::vector<std::string>{"stencil-handoff-1", "/bundle", "", "-id"}));
  EXPECT_EQ(h->peer_pid, getpid());
  ASSERT_EQ(h->fds.size(), 1u);
  EXPECT_EQ(write(h->fds[0].get(), "x", 1), 1);  // the pipe's write end, now the spare's
  EXPECT_EQ(fcntl(h->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  char got = 0;
  EXPECT_EQ(read(pipe_fds[0], &got, 1), 1);
  EXPECT_EQ(got, 'x');
  char ack = 0;
  EXPECT_EQ(read(conn.get(), &ack, 1), 1);
  EXPECT_EQ(ack, 'k');
  close(pipe_fds[0]);
}

TEST_F(HandoffSocket, RefusesMalformedHandoffsAndClosesTheirDescriptors) {
  struct Case {
    std::string bytes;
    const char* message;
  };
  const Case cases[] = {
      {Framed(""), "a body of 0 bytes"},
      {std::string("\xff\xff\xff\x7f", 4), "a body of 2147483647 bytes"},
      {Framed(std::string("no terminator")), "not NUL-terminated"},
      {Framed(std::string("cut\0", 4)).substr(0, 6), "closed the connection after 2 of 4 bytes"},
  };
  for (const Case& c : cases) {
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    UniqueFd conn = Connect();
    Send(conn.get(), c.bytes, {pipe_fds[0]});
    close(pipe_fds[0]);
    shutdown(conn.get(), SHUT_WR);
    try {
      AcceptHandoff(listener_.get(), 1000);
      ADD_FAILURE() << "accepted: " << c.message;
    } catch (const VmmError& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
    // The read end went with the refused handoff: writing finds no reader.
    signal(SIGPIPE, SIG_IGN);
    EXPECT_EQ(write(pipe_fds[1], "x", 1), -1);
    EXPECT_EQ(errno, EPIPE);
    char ack;
    EXPECT_EQ(read(conn.get(), &ack, 1), 0) << "no acknowledgement";
    close(pipe_fds[1]);
  }
}

TEST_F(HandoffSocket, ListeningReplacesAStaleSocketFile) {
  listener_.reset();  // the socket file stays, as a killed spare's does
  listener_ = ListenForHandoff(path_);
  UniqueFd conn = Connect();
  EXPECT_TRUE(conn.valid());
}

}  // namespace
