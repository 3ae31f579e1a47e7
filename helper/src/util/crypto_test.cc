#include "util/crypto.h"

#include <gtest/gtest.h>

#include <string>

namespace envcrypt {
namespace {

Bytes bytes_of(std::string_view text) { return {text.begin(), text.end()}; }

TEST(Crypto, GcmSealOpenRoundTrip) {
  const SecretBytes key = random_secret(kAes256KeySize).value();
  const Bytes plaintext = bytes_of("sixty-four bytes of data key would go here, any length works");
  const Bytes aad = bytes_of("context");
  const GcmSealed sealed = aes256_gcm_seal(key.span(), plaintext, aad).value();
  EXPECT_EQ(sealed.nonce.size(), kGcmNonceSize);
  EXPECT_EQ(sealed.tag.size(), kGcmTagSize);
  EXPECT_EQ(sealed.ciphertext.size(), plaintext.size());
  EXPECT_NE(sealed.ciphertext, plaintext);
  const SecretBytes opened =
      aes256_gcm_open(key.span(), sealed.nonce, sealed.ciphertext, sealed.tag, aad).value();
  EXPECT_TRUE(opened.equals(plaintext));
}

TEST(Crypto, GcmNoncesAreFresh) {
  const SecretBytes key = random_secret(kAes256KeySize).value();
  const Bytes plaintext = bytes_of("same plaintext");
  const GcmSealed first = aes256_gcm_seal(key.span(), plaintext, {}).value();
  const GcmSealed second = aes256_gcm_seal(key.span(), plaintext, {}).value();
  EXPECT_NE(first.nonce, second.nonce);
  EXPECT_NE(first.ciphertext, second.ciphertext);
}

TEST(Crypto, GcmOpenRefusesAnyChange) {
  const SecretBytes key = random_secret(kAes256KeySize).value();
  const SecretBytes other_key = random_secret(kAes256KeySize).value();
  const Bytes aad = bytes_of("aad");
  const GcmSealed sealed = aes256_gcm_seal(key.span(), bytes_of("secret"), aad).value();

  auto expect_refused = [](const Result<SecretBytes>& result) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
    EXPECT_EQ(result.error().message(), "authentication failed");
  };
  expect_refused(
      aes256_gcm_open(other_key.span(), sealed.nonce, sealed.ciphertext, sealed.tag, aad));
  expect_refused(
      aes256_gcm_open(key.span(), sealed.nonce, sealed.ciphertext, sealed.tag, bytes_of("aaD")));
  Bytes tampered = sealed.ciphertext;
  tampered[0] ^= 1;
  expect_refused(aes256_gcm_open(key.span(), sealed.nonce, tampered, sealed.tag, aad));
  Bytes bad_tag = sealed.tag;
  bad_tag[15] ^= 0x80;
  expect_refused(aes256_gcm_open(key.span(), sealed.nonce, sealed.ciphertext, bad_tag, aad));
  expect_refused(aes256_gcm_open(key.span(), sealed.nonce, sealed.ciphertext, Bytes(8), aad));
}

TEST(Crypto, GcmRefusesWrongKeySize) {
  const Bytes short_key(16);
  const Result<GcmSealed> sealed = aes256_gcm_seal(short_key, bytes_of("x"), {});
  ASSERT_FALSE(sealed.ok());
  EXPECT_EQ(sealed.error().code(), ErrorCode::kInternal);
}

TEST(Crypto, Sha256KnownAnswer) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Crypto, HexRoundTripAndRefusals) {
  const Bytes data = {0x00, 0x7f, 0x80, 0xff, 0x0a};
  EXPECT_EQ(to_hex(data), "007f80ff0a");
  EXPECT_EQ(from_hex("007F80ff0a").value(), data);
  EXPECT_FALSE(from_hex("abc").ok());
  EXPECT_FALSE(from_hex("zz").ok());
}

TEST(Crypto, RandomSecretHasRequestedSize) {
  const SecretBytes a = random_secret(64).value();
  const SecretBytes b = random_secret(64).value();
  EXPECT_EQ(a.size(), 64U);
  EXPECT_FALSE(a.equals(b.span()));
}

TEST(Crypto, RsaOaepSha256RoundTripAndWrongKey) {
  const RsaKeyPair pair = generate_rsa2048().value();
  const RsaKeyPair other = generate_rsa2048().value();
  EXPECT_NE(pair.public_key_pem.find("BEGIN PUBLIC KEY"), std::string::npos);
  const SecretBytes material = random_secret(32).value();
  const Bytes wrapped = rsa_oaep_sha256_encrypt(pair.public_key_pem, material.span()).value();
  EXPECT_EQ(wrapped.size(), 256U);
  const SecretBytes unwrapped = rsa_oaep_sha256_decrypt(pair.private_key_pem, wrapped).value();
  EXPECT_TRUE(unwrapped.equals(material.span()));

  const Result<SecretBytes> refused = rsa_oaep_sha256_decrypt(other.private_key_pem, wrapped);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
}

}  // namespace
}  // namespace envcrypt
