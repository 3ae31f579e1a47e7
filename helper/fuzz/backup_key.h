// The X25519 recovery key pair of the keystore-backup fuzzer and its seeds
// (fuzz_keystore_backup.cc, make_seeds.cc): a test key, published here on
// purpose, so a seed file decrypts and every run is reproducible.
#pragma once

#include <cstdint>
#include <string_view>

#include "kms/recovery.h"
#include "util/secret.h"

namespace envcrypt::fuzz {

inline constexpr std::string_view kBackupPrivateKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEICD4lr9ERdOzbXuwCtW+IUO1S5Chp1eSdeLOFs6c9/dm\n"
    "-----END PRIVATE KEY-----\n";
inline constexpr std::string_view kBackupPublicKeyPem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VuAyEAD7Uv6qiNGo2AIjULFYWSXWS3n4DxJK8i+fgY9rQ5fmk=\n"
    "-----END PUBLIC KEY-----\n";

inline Result<RecoveryPrivateKey> backup_private_key() {
  return parse_recovery_private_key(
      SecretBytes(reinterpret_cast<const std::uint8_t*>(kBackupPrivateKeyPem.data()),
                  kBackupPrivateKeyPem.size()));
}

}  // namespace envcrypt::fuzz
