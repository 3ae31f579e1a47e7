// The recovery wrap: a second wrap of a disk's data key under an offline
// X25519 recovery public key, so a disk whose CMK or keystore is lost can
// still be opened (Documentation/security/key-hierarchy.rst, "Recovery").
//
//   ephemeral      a fresh X25519 key pair per wrap
//   shared         X25519(ephemeral private, recovery public)
//   wrapping key   HKDF-SHA256(ikm = shared,
//                              salt = ephemeral public || recovery public,
//                              info = "envcrypt-recovery-v1 X25519-HKDF-SHA256-AES-256-GCM")
//   wrap           AES-256-GCM(wrapping key, random nonce, DK, aad)
//   aad            "envcrypt-recovery-v1" || 0x00 || key id || ephemeral public
//                  || canonical_context(the disk's recovery context)
//
// The key id is SHA-256 of the recovery public key's SubjectPublicKeyInfo
// (DER), what `openssl pkey -pubin -outform DER | sha256sum` prints.  The
// context digest is SHA-256 of canonical_context(context) alone: it is not a
// security boundary (the AAD is), it only lets unwrap tell a wrap moved from
// another disk apart from a damaged one.  Nothing here does disk I/O or logs.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "kms/kms.h"
#include "util/crypto.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

inline constexpr std::size_t kX25519KeySize = 32;
// A PEM key file is a few hundred bytes; anything larger is not one.
inline constexpr std::size_t kMaxRecoveryKeyFileSize = 16 * 1024;

using RecoveryKeyId = Sha256Digest;
using X25519PublicKey = std::array<std::uint8_t, kX25519KeySize>;

struct RecoveryWrap {
  RecoveryKeyId key_id{};           // SHA-256 of the recovery public key (SPKI DER)
  Sha256Digest context_digest{};    // SHA-256 of canonical_context(context)
  X25519PublicKey ephemeral_key{};  // the wrap's ephemeral public key
  Bytes nonce;                      // kGcmNonceSize
  Bytes tag;                        // kGcmTagSize
  Bytes ciphertext;                 // as long as the DK

  bool operator==(const RecoveryWrap&) const = default;
};

struct RecoveryPublicKey {
  X25519PublicKey raw{};
  RecoveryKeyId id{};
};

// The private key stays PEM in locked memory; it is parsed for each use.
struct RecoveryPrivateKey {
  SecretBytes pem;
  RecoveryPublicKey public_key;
};

// An X25519 public key in PEM (SubjectPublicKeyInfo).  Anything else (an RSA
// key, a private key, garbage) is ErrorCode::kUsage naming the reason.
Result<RecoveryPublicKey> parse_recovery_public_key(std::string_view pem);
// An X25519 private key in PEM (PKCS#8, unencrypted).
Result<RecoveryPrivateKey> parse_recovery_private_key(SecretBytes pem);

// The key files: a regular file of at most kMaxRecoveryKeyFileSize bytes.
// Errors name the file.
Result<RecoveryPublicKey> read_recovery_public_key(const std::filesystem::path& path);
Result<RecoveryPrivateKey> read_recovery_private_key(const std::filesystem::path& path);

// A new key pair (for the tests; operators make theirs offline with openssl).
struct RecoveryKeyPair {
  SecretBytes private_pem;
  std::string public_pem;
};
Result<RecoveryKeyPair> generate_recovery_key_pair();

// The first 16 hex digits of a key id: what messages and `recovery show` print.
std::string short_key_id(const RecoveryKeyId& id);

// Wraps `data_key` to `key`, bound to `context`.
Result<RecoveryWrap> wrap_for_recovery(const RecoveryPublicKey& key, const SecretBytes& data_key,
                                       const EncryptionContext& context);

// Opens a recovery wrap.  Each refusal has its own message:
//   ErrorCode::kDenied         the key is not the one the wrap was made for
//   ErrorCode::kCorrupt  the wrap was made for another disk's context;
//                              its ephemeral key is unusable; or it fails
//                              authentication (ciphertext, tag, nonce or
//                              ephemeral key altered)
Result<SecretBytes> unwrap_recovery(const RecoveryPrivateKey& key, const RecoveryWrap& wrap,
                                    const EncryptionContext& context);

}  // namespace envcrypt
