#include "secret.h"

#include <openssl/crypto.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace envcrypt {

SecretBytes::SecretBytes(std::size_t size) : size_(size) {
  if (size_ == 0) {
    return;
  }
  data_ = static_cast<std::uint8_t*>(std::calloc(1, size_));
  if (data_ == nullptr) {
    throw std::bad_alloc();
  }
  // Best effort: an unprivileged caller may hit RLIMIT_MEMLOCK; root (the
  // only user that can attach disks) does not.
  (void)mlock(data_, size_);
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
  OPENSSL_cleanse(data_, size_);
  (void)munlock(data_, size_);
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace envcrypt
