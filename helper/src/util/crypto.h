// Cryptographic primitives for the helper, all through OpenSSL 3 EVP: random
// bytes from the DRBG, AES-256-GCM seal/open, SHA-256, and the RSA-OAEP
// pieces BYOK import needs.  Nothing here does I/O or logs.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

inline constexpr std::size_t kAes256KeySize = 32;
inline constexpr std::size_t kGcmNonceSize = 12;
inline constexpr std::size_t kGcmTagSize = 16;
inline constexpr std::size_t kSha256Size = 32;

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;
using Sha256Digest = std::array<std::uint8_t, kSha256Size>;

// Public values (nonces, ids, tokens) from OpenSSL's public DRBG.
Result<Bytes> random_bytes(std::size_t size);
// Key material from OpenSSL's private DRBG, straight into locked memory.
Result<SecretBytes> random_secret(std::size_t size);

// The result of an AES-256-GCM seal: the nonce was drawn at random.
struct GcmSealed {
  Bytes nonce;       // kGcmNonceSize bytes
  Bytes ciphertext;  // as long as the plaintext
  Bytes tag;         // kGcmTagSize bytes
};

// Seals `plaintext` under the 32-byte `key` with a fresh random nonce,
// authenticating `aad` as well.
Result<GcmSealed> aes256_gcm_seal(ByteView key, ByteView plaintext, ByteView aad);
// Opens a sealed box.  An authentication failure (wrong key, AAD, nonce, tag
// or ciphertext) is ErrorCode::kCorrupt with the message
// "authentication failed"; callers add what was being opened.
Result<SecretBytes> aes256_gcm_open(ByteView key, ByteView nonce, ByteView ciphertext, ByteView tag,
                                    ByteView aad);

Sha256Digest sha256(ByteView data);
Sha256Digest sha256(std::string_view data);
std::string sha256_hex(std::string_view data);

// Lower-case hex and back; from_hex refuses odd lengths and non-hex digits.
std::string to_hex(ByteView data);
Result<Bytes> from_hex(std::string_view hex);

// An RSA-2048 key pair for BYOK import: the private key as PKCS#8 PEM (a
// secret), the public key as SubjectPublicKeyInfo PEM.
struct RsaKeyPair {
  SecretBytes private_key_pem;
  std::string public_key_pem;
};
Result<RsaKeyPair> generate_rsa2048();
// RSAES-OAEP with SHA-256 for both the OAEP digest and MGF1, as produced by
// `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256`.
Result<SecretBytes> rsa_oaep_sha256_decrypt(const SecretBytes& private_key_pem,
                                            ByteView ciphertext);
Result<Bytes> rsa_oaep_sha256_encrypt(std::string_view public_key_pem, ByteView plaintext);

}  // namespace envcrypt
