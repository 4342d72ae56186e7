// Binding a Unix socket that only its owner may connect to.
#pragma once
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

namespace stencil {

// Binds `fd` to `addr` and makes the socket file 0600. Call it before listen(): until then a
// connect is refused, so nobody gets in between bind and chmod (a umask would be process-wide,
// racing every other thread that creates files). Returns 0, or the failing call's errno.
inline int BindOwnerOnly(int fd, const sockaddr_un& addr) {
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) return errno;
  if (chmod(addr.sun_path, 0600) < 0) {
    int err = errno;
    unlink(addr.sun_path);
    return err;
  }
  return 0;
}

}  // namespace stencil
