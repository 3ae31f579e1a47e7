#include "util/secret.h"

#include <openssl/crypto.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace envcrypt {
namespace {

// The arena's smallest block: a 32-byte key takes one, bookkeeping stays
// small (two bits per block).
constexpr std::size_t kArenaMinBlock = 32;

std::string arena_description() {
  return "the locked memory for keys (" + std::to_string(kSecretArenaSize >> 10) + " KiB)";
}

// Sets the arena up once per process.  OpenSSL answers 2 when the arena
// works but mlock or madvise(MADV_DONTDUMP) failed: only an unprivileged
// caller under a small RLIMIT_MEMLOCK sees that, and such a caller can read
// no root key and open no disk, so it goes on (dumps are off anyway).
void require_arena() {
  static const int state = CRYPTO_secure_malloc_initialized() != 0
                               ? 1
                               : CRYPTO_secure_malloc_init(kSecretArenaSize, kArenaMinBlock);
  if (state == 0) {
    throw SecretArenaError("cannot set up " + arena_description());
  }
}

}  // namespace

Status protect_process_secrets() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return error_from_errno(ErrorCode::kInternal, "cannot disable core dumps: prctl", errno);
  }
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    return error_from_errno(ErrorCode::kInternal, "cannot disable core dumps: setrlimit", errno);
  }
  try {
    require_arena();
  } catch (const SecretArenaError& e) {
    return Error(ErrorCode::kInternal, e.what());
  }
  return OkStatus();
}

bool in_secret_arena(const void* data) { return CRYPTO_secure_allocated(data) != 0; }

SecretBytes::SecretBytes(std::size_t size) : size_(size) {
  if (size_ == 0) {
    return;
  }
  require_arena();
  data_ = static_cast<std::uint8_t*>(OPENSSL_secure_zalloc(size_));
  if (data_ == nullptr) {
    throw SecretArenaError(arena_description() + " is full: " + std::to_string(size_) +
                           " bytes asked, " + std::to_string(CRYPTO_secure_used()) + " in use");
  }
}

SecretBytes::SecretBytes(const std::uint8_t* data, std::size_t size) : SecretBytes(size) {
  if (size_ != 0) {
    std::memcpy(data_, data, size_);
  }
}

SecretBytes::~SecretBytes() { release(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

bool SecretBytes::equals(std::span<const std::uint8_t> other) const {
  return other.size() == size_ && (size_ == 0 || CRYPTO_memcmp(data_, other.data(), size_) == 0);
}

void SecretBytes::release() {
  if (data_ == nullptr) {
    return;
  }
  // Zeroes, then returns the block to the arena; the arena stays locked.
  OPENSSL_secure_clear_free(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace envcrypt
