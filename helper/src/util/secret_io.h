// Reading key material from a file into locked memory (secret.h) without an
// unlocked copy on the way: the local KMS root key, a KMIP client key.
#pragma once

#include <cstddef>
#include <string>

#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

// Exactly `size` bytes from `fd`; a short file or a read error is
// ErrorCode::kIo naming `what` ("read <what>: short read").
Result<SecretBytes> read_secret(int fd, std::size_t size, const std::string& what);

}  // namespace envcrypt
