#include "kms/recovery.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace envcrypt {
namespace {

struct KeyPair {
  RecoveryPrivateKey private_key;
  RecoveryPublicKey public_key;
};

KeyPair new_key_pair() {
  RecoveryKeyPair pair = generate_recovery_key_pair().value();
  RecoveryPublicKey public_key = parse_recovery_public_key(pair.public_pem).value();
  return {parse_recovery_private_key(std::move(pair.private_pem)).value(), public_key};
}

EncryptionContext disk_context(const std::string& uuid) {
  return {{"disk_uuid", uuid},    {"cipher", "aes-xts-plain64"}, {"sector_size", "4096"},
          {"key_size", "64"},     {"data_offset", "16777216"},   {"data_size", "0"},
          {"header_version", "2"}};
}

const EncryptionContext kContext = disk_context("3f2a6c1e-8b4d-4e0a-9c7f-1a2b3c4d5e6f");

SecretBytes sample_data_key() { return random_secret(64).value(); }

void expect_refused(const Result<SecretBytes>& result, ErrorCode code, const std::string& says) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), code);
  EXPECT_NE(result.error().message().find(says), std::string::npos) << result.error().message();
}

TEST(Recovery, RoundTrip) {
  const KeyPair keys = new_key_pair();
  const SecretBytes data_key = sample_data_key();
  const RecoveryWrap wrap = wrap_for_recovery(keys.public_key, data_key, kContext).value();
  EXPECT_EQ(wrap.key_id, keys.public_key.id);
  EXPECT_EQ(wrap.nonce.size(), kGcmNonceSize);
  EXPECT_EQ(wrap.tag.size(), kGcmTagSize);
  EXPECT_EQ(wrap.ciphertext.size(), data_key.size());
  EXPECT_FALSE(data_key.equals(wrap.ciphertext));
  const SecretBytes opened = unwrap_recovery(keys.private_key, wrap, kContext).value();
  EXPECT_TRUE(opened.equals(data_key.span()));
}

TEST(Recovery, PrivateKeyKnowsItsPublicKeyId) {
  const KeyPair keys = new_key_pair();
  EXPECT_EQ(keys.private_key.public_key.id, keys.public_key.id);
  EXPECT_EQ(keys.private_key.public_key.raw, keys.public_key.raw);
  EXPECT_EQ(short_key_id(keys.public_key.id).size(), 16U);
}

TEST(Recovery, EveryWrapHasItsOwnEphemeralKey) {
  const KeyPair keys = new_key_pair();
  const SecretBytes data_key = sample_data_key();
  const RecoveryWrap first = wrap_for_recovery(keys.public_key, data_key, kContext).value();
  const RecoveryWrap second = wrap_for_recovery(keys.public_key, data_key, kContext).value();
  EXPECT_NE(first.ephemeral_key, second.ephemeral_key);
  EXPECT_NE(first.ciphertext, second.ciphertext);
}

TEST(Recovery, WrongKeyIsRefused) {
  const KeyPair keys = new_key_pair();
  const KeyPair other = new_key_pair();
  const RecoveryWrap wrap = wrap_for_recovery(keys.public_key, sample_data_key(), kContext).value();
  expect_refused(
      unwrap_recovery(other.private_key, wrap, kContext), ErrorCode::kDenied,
      "wrong recovery key: the recovery wrap is for key " + short_key_id(keys.public_key.id));
}

TEST(Recovery, TamperedCiphertextTagNonceOrEphemeralKeyIsRefused) {
  const KeyPair keys = new_key_pair();
  const RecoveryWrap wrap = wrap_for_recovery(keys.public_key, sample_data_key(), kContext).value();
  const std::string says = "the recovery wrap failed authentication";
  RecoveryWrap tampered = wrap;
  tampered.ciphertext[10] ^= 0x01;
  expect_refused(unwrap_recovery(keys.private_key, tampered, kContext), ErrorCode::kCorrupt, says);
  tampered = wrap;
  tampered.tag[0] ^= 0x80;
  expect_refused(unwrap_recovery(keys.private_key, tampered, kContext), ErrorCode::kCorrupt, says);
  tampered = wrap;
  tampered.nonce[11] ^= 0x04;
  expect_refused(unwrap_recovery(keys.private_key, tampered, kContext), ErrorCode::kCorrupt, says);
  tampered = wrap;
  tampered.ephemeral_key[5] ^= 0x20;
  expect_refused(unwrap_recovery(keys.private_key, tampered, kContext), ErrorCode::kCorrupt, says);
}

TEST(Recovery, SmallOrderEphemeralKeyIsRefused) {
  const KeyPair keys = new_key_pair();
  RecoveryWrap wrap = wrap_for_recovery(keys.public_key, sample_data_key(), kContext).value();
  wrap.ephemeral_key.fill(0);  // the point of order 1: X25519 gives all zeros
  expect_refused(unwrap_recovery(keys.private_key, wrap, kContext), ErrorCode::kCorrupt,
                 "the recovery wrap is damaged: its ephemeral key is not a usable X25519 key");
}

TEST(Recovery, WrapMovedToAnotherDiskIsRefused) {
  const KeyPair keys = new_key_pair();
  const RecoveryWrap wrap = wrap_for_recovery(keys.public_key, sample_data_key(), kContext).value();
  const EncryptionContext other_disk = disk_context("0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f");
  expect_refused(unwrap_recovery(keys.private_key, wrap, other_disk), ErrorCode::kCorrupt,
                 "the recovery wrap was made for another disk");
  // Also when its digest was edited to match: the AAD still binds the disk.
  RecoveryWrap forged = wrap;
  forged.context_digest = sha256(canonical_context(other_disk));
  expect_refused(unwrap_recovery(keys.private_key, forged, other_disk), ErrorCode::kCorrupt,
                 "the recovery wrap failed authentication");
}

TEST(Recovery, ChangedGeometryOrVersionIsRefused) {
  const KeyPair keys = new_key_pair();
  const RecoveryWrap wrap = wrap_for_recovery(keys.public_key, sample_data_key(), kContext).value();
  for (const char* field : {"data_offset", "header_version", "sector_size"}) {
    EncryptionContext changed = kContext;
    changed[field] = "1";
    expect_refused(unwrap_recovery(keys.private_key, wrap, changed), ErrorCode::kCorrupt,
                   "the recovery wrap was made for another disk");
  }
}

TEST(Recovery, PublicKeyParserRefusesWhatIsNotAnX25519PublicKey) {
  auto refused = [](std::string_view pem, const std::string& says) {
    auto key = parse_recovery_public_key(pem);
    ASSERT_FALSE(key.ok());
    EXPECT_EQ(key.error().code(), ErrorCode::kUsage);
    EXPECT_EQ(key.error().message(), says);
  };
  refused("", "not a recovery public key: no PEM public key in it");
  refused("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
          "not a recovery public key: no PEM public key in it");
  const RsaKeyPair rsa = generate_rsa2048().value();
  refused(rsa.public_key_pem, "not a recovery public key: not an X25519 key");
  RecoveryKeyPair pair = generate_recovery_key_pair().value();
  const std::string private_pem(reinterpret_cast<const char*>(pair.private_pem.data()),
                                pair.private_pem.size());
  refused(private_pem, "not a recovery public key: no PEM public key in it");
}

TEST(Recovery, PrivateKeyParserRefusesWhatIsNotAnX25519PrivateKey) {
  RecoveryKeyPair pair = generate_recovery_key_pair().value();
  const std::string& public_pem = pair.public_pem;
  auto from_public = parse_recovery_private_key(
      SecretBytes(reinterpret_cast<const std::uint8_t*>(public_pem.data()), public_pem.size()));
  ASSERT_FALSE(from_public.ok());
  EXPECT_EQ(from_public.error().message(),
            "not a recovery private key: no unencrypted PEM private key in it");
  RsaKeyPair rsa = generate_rsa2048().value();
  auto from_rsa = parse_recovery_private_key(std::move(rsa.private_key_pem));
  ASSERT_FALSE(from_rsa.ok());
  EXPECT_EQ(from_rsa.error().message(), "not a recovery private key: not an X25519 key");
}

// An encrypted private key is refused, never prompted for on the terminal.
TEST(Recovery, EncryptedPrivateKeyIsRefusedWithoutAPrompt) {
  RecoveryKeyPair pair = generate_recovery_key_pair().value();
  BIO* in = BIO_new_mem_buf(pair.private_pem.data(), static_cast<int>(pair.private_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  ASSERT_NE(key, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  char passphrase[] = "correct horse";
  ASSERT_EQ(
      PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_256_cbc(), passphrase,
                                    static_cast<int>(sizeof(passphrase) - 1), nullptr, nullptr),
      1);
  char* data = nullptr;
  const long length = BIO_get_mem_data(out, &data);
  SecretBytes encrypted(reinterpret_cast<const std::uint8_t*>(data),
                        static_cast<std::size_t>(length));
  EVP_PKEY_free(key);
  BIO_free(in);
  BIO_free(out);
  auto refused = parse_recovery_private_key(std::move(encrypted));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "not a recovery private key: no unencrypted PEM private key in it");
}

TEST(Recovery, KeyFilesAreReadAndOversizedOnesRefused) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("recovery-keys-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  RecoveryKeyPair pair = generate_recovery_key_pair().value();
  {
    std::ofstream(dir / "recovery.pub") << pair.public_pem;
    std::ofstream(dir / "recovery.key") << std::string(
        reinterpret_cast<const char*>(pair.private_pem.data()), pair.private_pem.size());
    std::ofstream(dir / "huge.pub") << std::string(kMaxRecoveryKeyFileSize + 1, 'A');
  }
  const RecoveryPublicKey public_key = read_recovery_public_key(dir / "recovery.pub").value();
  const RecoveryPrivateKey private_key = read_recovery_private_key(dir / "recovery.key").value();
  EXPECT_EQ(public_key.id, private_key.public_key.id);
  auto huge = read_recovery_public_key(dir / "huge.pub");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message().find("is not the size of a PEM key file"), std::string::npos);
  auto missing = read_recovery_private_key(dir / "absent.key");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace envcrypt
