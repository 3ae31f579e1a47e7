#include "util/secret_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace envcrypt {

Result<SecretBytes> read_secret(int fd, std::size_t size, const std::string& what) {
  SecretBytes secret(size);
  std::size_t done = 0;
  while (done < secret.size()) {
    const ssize_t got = ::read(fd, secret.data() + done, secret.size() - done);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      return error_from_errno(ErrorCode::kIo, "read " + what, errno);
    }
    if (got == 0) {
      return Error(ErrorCode::kIo, "read " + what + ": short read");
    }
    done += static_cast<std::size_t>(got);
  }
  return secret;
}

}  // namespace envcrypt
