// AES-256-XTS in userspace, byte-identical to the envcrypt target and to
// dm-crypt's aes-xts-plain64: one XTS data unit per sector_size bytes, the
// tweak of a unit the number of its first 512-byte sector counted from the
// start of the data area, little-endian in the first 8 of 16 bytes
// (kmod/dm-envcrypt.c, envcrypt_crypt_unit).  Used by `image encrypt`, which
// must run where the module cannot load.
#pragma once

#include <cstdint>
#include <span>

#include "util/openssl_ptr.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

inline constexpr std::uint64_t kIvSectorSize = 512;  // plain64 counts 512-byte sectors

// One cipher context, for one thread: OpenSSL contexts are not shared.
// OpenSSL keeps the expanded key in the context and wipes it on free.
class XtsCipher {
 public:
  // `data_key` is K1 || K2, 64 bytes, as in the header and the logon key.
  static Result<XtsCipher> create(const SecretBytes& data_key, std::uint32_t sector_size);

  // Encrypts `in` (a whole number of units) into `out` (same size; may be
  // `in`), the first unit starting at 512-byte sector `first_sector` of the
  // data area.
  Status encrypt(std::span<const std::uint8_t> in, std::span<std::uint8_t> out,
                 std::uint64_t first_sector);

  [[nodiscard]] std::uint32_t sector_size() const { return sector_size_; }

 private:
  XtsCipher(ossl::CipherCtx ctx, std::uint32_t sector_size)
      : ctx_(std::move(ctx)), sector_size_(sector_size) {}

  ossl::CipherCtx ctx_;
  std::uint32_t sector_size_;
};

}  // namespace envcrypt
