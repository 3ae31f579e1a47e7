// Key material lives only in SecretBytes: locked in memory (never swapped),
// zeroed on destruction, never copied implicitly and never printable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace envcrypt {

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
