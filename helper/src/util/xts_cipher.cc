#include "util/xts_cipher.h"

#include <openssl/evp.h>

#include <array>
#include <string>

namespace envcrypt {
namespace {

constexpr std::size_t kTweakSize = 16;

// plain64: the sector number, little-endian, in the first 8 of 16 bytes.
std::array<std::uint8_t, kTweakSize> plain64(std::uint64_t sector) {
  std::array<std::uint8_t, kTweakSize> iv{};
  for (std::size_t i = 0; i < 8; ++i) {
    iv[i] = static_cast<std::uint8_t>(sector >> (8 * i));
  }
  return iv;
}

}  // namespace

Result<XtsCipher> XtsCipher::create(const SecretBytes& data_key, std::uint32_t sector_size) {
  if (data_key.size() != 64) {
    return Error(ErrorCode::kInternal,
                 "AES-256-XTS needs a 64-byte key, not " + std::to_string(data_key.size()));
  }
  if (sector_size != 512 && sector_size != 4096) {
    return Error(ErrorCode::kUsage,
                 "sector size " + std::to_string(sector_size) + ": must be 512 or 4096");
  }
  ossl::CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx ||
      EVP_EncryptInit_ex2(ctx.get(), EVP_aes_256_xts(), data_key.data(), nullptr, nullptr) != 1) {
    return Error(ErrorCode::kInternal, "AES-256-XTS: OpenSSL refused the key");
  }
  return XtsCipher(std::move(ctx), sector_size);
}

Status XtsCipher::encrypt(std::span<const std::uint8_t> in, std::span<std::uint8_t> out,
                          std::uint64_t first_sector) {
  if (in.size() != out.size() || in.size() % sector_size_ != 0) {
    return Error(ErrorCode::kInternal,
                 "XTS: " + std::to_string(in.size()) + " bytes is not a whole number of units");
  }
  for (std::size_t at = 0; at < in.size(); at += sector_size_) {
    // Each unit is its own XTS message: a new tweak, the same key.
    const auto iv = plain64(first_sector + at / kIvSectorSize);
    int written = 0;
    if (EVP_EncryptInit_ex2(ctx_.get(), nullptr, nullptr, iv.data(), nullptr) != 1 ||
        EVP_EncryptUpdate(ctx_.get(), out.data() + at, &written, in.data() + at,
                          static_cast<int>(sector_size_)) != 1 ||
        written != static_cast<int>(sector_size_)) {
      return Error(ErrorCode::kInternal, "XTS: OpenSSL failed at sector " +
                                             std::to_string(first_sector + at / kIvSectorSize));
    }
  }
  return OkStatus();
}

}  // namespace envcrypt
