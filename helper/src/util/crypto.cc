#include "util/crypto.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <climits>
#include <memory>

#include "util/openssl_ptr.h"

namespace envcrypt {
namespace {

using ossl::Bio;
using ossl::CipherCtx;
using ossl::Pkey;
using ossl::PkeyCtx;

// The OpenSSL error queue's newest entry, then the queue cleared so a later
// failure does not report a stale reason.
Error openssl_error(std::string_view what) {
  const unsigned long code = ERR_peek_last_error();
  std::string message(what);
  if (code != 0) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    message += ": ";
    message += text.data();
  }
  ERR_clear_error();
  return {ErrorCode::kInternal, message};
}

// EVP takes int lengths; every buffer here is far below INT_MAX, but a
// caller handing in a huge one gets an error instead of a truncation.
Result<int> evp_length(std::size_t size) {
  if (size > static_cast<std::size_t>(INT_MAX)) {
    return Error(ErrorCode::kInternal, "buffer too large for EVP");
  }
  return static_cast<int>(size);
}

Status check_gcm_sizes(ByteView key, ByteView nonce) {
  if (key.size() != kAes256KeySize) {
    return Error(ErrorCode::kInternal, "AES-256-GCM key must be 32 bytes");
  }
  if (nonce.size() != kGcmNonceSize) {
    return Error(ErrorCode::kInternal, "AES-256-GCM nonce must be 12 bytes");
  }
  return OkStatus();
}

}  // namespace

Result<Bytes> random_bytes(std::size_t size) {
  Bytes out(size);
  ENVCRYPT_ASSIGN_OR_RETURN(const int length, evp_length(size));
  if (size != 0 && RAND_bytes(out.data(), length) != 1) {
    return openssl_error("RAND_bytes");
  }
  return out;
}

Result<SecretBytes> random_secret(std::size_t size) {
  SecretBytes out(size);
  ENVCRYPT_ASSIGN_OR_RETURN(const int length, evp_length(size));
  if (size != 0 && RAND_priv_bytes(out.data(), length) != 1) {
    return openssl_error("RAND_priv_bytes");
  }
  return out;
}

Result<GcmSealed> aes256_gcm_seal(ByteView key, ByteView plaintext, ByteView aad) {
  GcmSealed sealed;
  ENVCRYPT_ASSIGN_OR_RETURN(sealed.nonce, random_bytes(kGcmNonceSize));
  ENVCRYPT_TRY(check_gcm_sizes(key, sealed.nonce));
  ENVCRYPT_ASSIGN_OR_RETURN(const int plaintext_length, evp_length(plaintext.size()));
  ENVCRYPT_ASSIGN_OR_RETURN(const int aad_length, evp_length(aad.size()));

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_EncryptInit_ex2(ctx.get(), EVP_aes_256_gcm(), key.data(), sealed.nonce.data(),
                                  nullptr) != 1) {
    return openssl_error("AES-256-GCM init");
  }
  int written = 0;
  if (!aad.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &written, aad.data(), aad_length) != 1) {
    return openssl_error("AES-256-GCM aad");
  }
  sealed.ciphertext.resize(plaintext.size());
  if (!plaintext.empty() && EVP_EncryptUpdate(ctx.get(), sealed.ciphertext.data(), &written,
                                              plaintext.data(), plaintext_length) != 1) {
    return openssl_error("AES-256-GCM encrypt");
  }
  int final_length = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), sealed.ciphertext.data() + written, &final_length) != 1) {
    return openssl_error("AES-256-GCM final");
  }
  sealed.tag.resize(kGcmTagSize);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagSize),
                          sealed.tag.data()) != 1) {
    return openssl_error("AES-256-GCM tag");
  }
  return sealed;
}

Result<SecretBytes> aes256_gcm_open(ByteView key, ByteView nonce, ByteView ciphertext, ByteView tag,
                                    ByteView aad) {
  ENVCRYPT_TRY(check_gcm_sizes(key, nonce));
  if (tag.size() != kGcmTagSize) {
    return Error(ErrorCode::kCorrupt, "authentication failed");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const int ciphertext_length, evp_length(ciphertext.size()));
  ENVCRYPT_ASSIGN_OR_RETURN(const int aad_length, evp_length(aad.size()));

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx ||
      EVP_DecryptInit_ex2(ctx.get(), EVP_aes_256_gcm(), key.data(), nonce.data(), nullptr) != 1) {
    return openssl_error("AES-256-GCM init");
  }
  int written = 0;
  if (!aad.empty() &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &written, aad.data(), aad_length) != 1) {
    return openssl_error("AES-256-GCM aad");
  }
  SecretBytes plaintext(ciphertext.size());
  if (!ciphertext.empty() && EVP_DecryptUpdate(ctx.get(), plaintext.data(), &written,
                                               ciphertext.data(), ciphertext_length) != 1) {
    return openssl_error("AES-256-GCM decrypt");
  }
  // EVP takes a non-const tag pointer but only reads it.
  Bytes expected_tag(tag.begin(), tag.end());
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagSize),
                          expected_tag.data()) != 1) {
    return openssl_error("AES-256-GCM tag");
  }
  int final_length = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + written, &final_length) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kCorrupt, "authentication failed");
  }
  return plaintext;
}

Sha256Digest sha256(ByteView data) {
  Sha256Digest digest{};
  unsigned int length = 0;
  // EVP_Digest with SHA-256 fails only on allocation failure.
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw std::bad_alloc();
  }
  return digest;
}

Sha256Digest sha256(std::string_view data) {
  return sha256(ByteView(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}

std::string sha256_hex(std::string_view data) { return to_hex(sha256(data)); }

std::string to_hex(ByteView data) {
  static constexpr std::string_view kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (const std::uint8_t byte : data) {
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0x0f]);
  }
  return out;
}

Result<Bytes> from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  };
  if (hex.size() % 2 != 0) {
    return Error(ErrorCode::kUsage, "hex string has an odd length");
  }
  Bytes out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int high = nibble(hex[i]);
    const int low = nibble(hex[i + 1]);
    if (high < 0 || low < 0) {
      return Error(ErrorCode::kUsage, "not a hex string");
    }
    out.push_back(static_cast<std::uint8_t>((high << 4) | low));
  }
  return out;
}

Result<RsaKeyPair> generate_rsa2048() {
  Pkey key(EVP_RSA_gen(2048));
  if (!key) {
    return openssl_error("RSA-2048 key generation");
  }
  Bio private_bio(BIO_new(BIO_s_secmem()));
  Bio public_bio(BIO_new(BIO_s_mem()));
  if (!private_bio || !public_bio ||
      PEM_write_bio_PrivateKey(private_bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                               nullptr) != 1 ||
      PEM_write_bio_PUBKEY(public_bio.get(), key.get()) != 1) {
    return openssl_error("RSA-2048 PEM encoding");
  }
  char* data = nullptr;
  const long private_length = BIO_get_mem_data(private_bio.get(), &data);
  RsaKeyPair pair;
  pair.private_key_pem = SecretBytes(reinterpret_cast<const std::uint8_t*>(data),
                                     static_cast<std::size_t>(private_length));
  const long public_length = BIO_get_mem_data(public_bio.get(), &data);
  pair.public_key_pem.assign(data, static_cast<std::size_t>(public_length));
  return pair;
}

namespace {

// Sets RSAES-OAEP with SHA-256 for OAEP and MGF1 on an initialised context.
Status set_oaep_sha256(EVP_PKEY_CTX* ctx) {
  if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1) {
    return openssl_error("RSA-OAEP parameters");
  }
  return OkStatus();
}

}  // namespace

Result<SecretBytes> rsa_oaep_sha256_decrypt(const SecretBytes& private_key_pem,
                                            ByteView ciphertext) {
  ENVCRYPT_ASSIGN_OR_RETURN(const int pem_length, evp_length(private_key_pem.size()));
  Bio bio(BIO_new_mem_buf(private_key_pem.data(), pem_length));
  Pkey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return openssl_error("RSA private key");
  }
  PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1) {
    return openssl_error("RSA-OAEP init");
  }
  ENVCRYPT_TRY(set_oaep_sha256(ctx.get()));
  std::size_t length = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &length, ciphertext.data(), ciphertext.size()) != 1) {
    return openssl_error("RSA-OAEP size");
  }
  SecretBytes plaintext(length);
  if (EVP_PKEY_decrypt(ctx.get(), plaintext.data(), &length, ciphertext.data(),
                       ciphertext.size()) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kUsage,
                 "RSAES_OAEP_SHA_256 decryption failed: not wrapped with this public key");
  }
  SecretBytes exact(plaintext.data(), length);
  return exact;
}

Result<Bytes> rsa_oaep_sha256_encrypt(std::string_view public_key_pem, ByteView plaintext) {
  ENVCRYPT_ASSIGN_OR_RETURN(const int pem_length, evp_length(public_key_pem.size()));
  Bio bio(BIO_new_mem_buf(public_key_pem.data(), pem_length));
  Pkey key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return openssl_error("RSA public key");
  }
  PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1) {
    return openssl_error("RSA-OAEP init");
  }
  ENVCRYPT_TRY(set_oaep_sha256(ctx.get()));
  std::size_t length = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &length, plaintext.data(), plaintext.size()) != 1) {
    return openssl_error("RSA-OAEP size");
  }
  Bytes ciphertext(length);
  if (EVP_PKEY_encrypt(ctx.get(), ciphertext.data(), &length, plaintext.data(), plaintext.size()) !=
      1) {
    return openssl_error("RSA-OAEP encrypt");
  }
  ciphertext.resize(length);
  return ciphertext;
}

}  // namespace envcrypt
