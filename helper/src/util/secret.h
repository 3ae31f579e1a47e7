// Key material lives only in SecretBytes: in OpenSSL's secure heap (one
// arena, locked in memory so never swapped, and excluded from core dumps),
// zeroed on destruction, never copied implicitly and never printable.
//
// The arena, rather than mlock per secret: munlock of one secret would
// unlock every other secret sharing its pages, and malloc'ed pages are
// dumped.  The arena is set up on first use, or by protect_process_secrets()
// at the top of main.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "util/result.h"

namespace envcrypt {

// The secure heap's size: every key the helper holds at once (root key, a
// few CMK versions, DKs, KMIP client keys, OpenSSL's own private-key
// numbers) fits many times over.  A power of two, as OpenSSL requires.
inline constexpr std::size_t kSecretArenaSize = std::size_t{1} << 20;

// Thrown when the arena cannot be set up or is full: one clear line through
// the CLI's exception handler (exit 1).
class SecretArenaError : public std::runtime_error {
 public:
  explicit SecretArenaError(const std::string& what) : std::runtime_error(what) {}
};

// For main, before anything is read: no core file (prctl(PR_SET_DUMPABLE, 0),
// which also covers a core_pattern pipe, and RLIMIT_CORE 0), then the arena.
// An error means the process must not go on.
Status protect_process_secrets();

// Whether `data` lies in the arena (for the tests).
bool in_secret_arena(const void* data);

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::size_t size);
  SecretBytes(const std::uint8_t* data, std::size_t size);
  ~SecretBytes();

  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;

  // An explicit copy, so every duplicate of a key is visible in the code.
  [[nodiscard]] SecretBytes clone() const { return {data_, size_}; }

  [[nodiscard]] std::uint8_t* data() { return data_; }
  [[nodiscard]] const std::uint8_t* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] bool empty() const { return size_ == 0; }
  [[nodiscard]] std::span<const std::uint8_t> span() const { return {data_, size_}; }
  [[nodiscard]] std::span<std::uint8_t> mutable_span() { return {data_, size_}; }

  // Constant-time comparison.
  [[nodiscard]] bool equals(std::span<const std::uint8_t> other) const;

 private:
  void release();

  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace envcrypt
