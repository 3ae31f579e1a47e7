// Header version 2: the recovery block (uapi/linux/dm-envcrypt.h), decoded
// as hostile input, and version 1 read and written exactly as before.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "header/header.h"
#include "kms/recovery.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

constexpr std::size_t kRecovery = offsetof(envcrypt_header, recovery);

DiskHeader v1_header() {
  DiskHeader h;
  h.uuid = uuid_from_string("4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11").value();
  h.label = "data";
  h.sequence = 3;
  h.wrapped.cmk_uri = "local://local-1/1234abcd-0000-4000-8000-000000000000";
  h.wrapped.cmk_version = 1;
  h.wrapped.nonce = Bytes(12, 0x11);
  h.wrapped.tag = Bytes(16, 0x22);
  h.wrapped.ciphertext = Bytes(kDataKeySize, 0x33);
  h.kcv.fill(0x44);
  return h;
}

DiskHeader v2_header() {
  DiskHeader h = v1_header();
  h.version = ENVCRYPT_HDR_VERSION_RECOVERY;
  RecoveryWrap wrap;
  wrap.key_id.fill(0x55);
  wrap.context_digest.fill(0x66);
  wrap.ephemeral_key.fill(0x77);
  wrap.nonce = Bytes(12, 0x88);
  wrap.tag = Bytes(16, 0x99);
  wrap.ciphertext = Bytes(kDataKeySize, 0xaa);
  h.recovery = wrap;
  return h;
}

HeaderBytes encoded(const DiskHeader& h) { return encode_header(h, kPrimaryOffset).value(); }

void put_le32(HeaderBytes& bytes, std::size_t offset, std::uint32_t value) {
  for (std::size_t i = 0; i < 4; ++i) {
    bytes[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

void fix_checksum(HeaderBytes& bytes) {
  constexpr std::size_t kChecksum = offsetof(envcrypt_header, checksum);
  const Sha256Digest sum = sha256(ByteView(bytes.data(), kChecksum));
  std::memcpy(bytes.data() + kChecksum, sum.data(), sum.size());
}

// Decodes `bytes` (checksum recomputed, as an attacker can) and expects
// the copy to be invalid for `reason`.
void expect_invalid(HeaderBytes bytes, const std::string& reason) {
  fix_checksum(bytes);
  CopyReport report;
  auto decoded = decode_header(bytes, kPrimaryOffset, &report);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(report.state, CopyState::kInvalid);
  EXPECT_NE(decoded.error().message().find(reason), std::string::npos) << decoded.error().message();
}

TEST(HeaderV2, RecoveryLayoutIsWhereTheFormatDocumentSaysItIs) {
  EXPECT_EQ(kRecovery, 912U);
  EXPECT_EQ(sizeof(envcrypt_recovery), 264U);
  EXPECT_EQ(offsetof(envcrypt_header, reserved), 1176U);
  EXPECT_EQ(offsetof(envcrypt_recovery, wrapped_key), 136U);
}

TEST(HeaderV2, RoundTripsWithARecoveryWrap) {
  const DiskHeader h = v2_header();
  const HeaderBytes bytes = encoded(h);
  EXPECT_EQ(bytes[offsetof(envcrypt_header, version)], 2);
  EXPECT_EQ(bytes[kRecovery + offsetof(envcrypt_recovery, alg)], 1);
  EXPECT_EQ(bytes[kRecovery + offsetof(envcrypt_recovery, wrapped_key_len)], 64);
  const DiskHeader decoded = decode_header(bytes, kPrimaryOffset).value();
  EXPECT_EQ(decoded.version, 2U);
  ASSERT_TRUE(decoded.recovery.has_value());
  EXPECT_EQ(*decoded.recovery, *h.recovery);
  EXPECT_EQ(encoded(decoded), bytes);
}

TEST(HeaderV2, RoundTripsWithoutARecoveryWrap) {
  DiskHeader h = v2_header();
  h.recovery.reset();
  const HeaderBytes bytes = encoded(h);
  const auto block = ByteView(bytes).subspan(kRecovery, sizeof(envcrypt_recovery));
  EXPECT_TRUE(std::all_of(block.begin(), block.end(), [](auto b) { return b == 0; }));
  const DiskHeader decoded = decode_header(bytes, kPrimaryOffset).value();
  EXPECT_EQ(decoded.version, 2U);
  EXPECT_FALSE(decoded.recovery.has_value());
}

TEST(HeaderV2, Version1IsWrittenAsBefore) {
  const HeaderBytes bytes = encoded(v1_header());
  EXPECT_EQ(bytes[offsetof(envcrypt_header, version)], 1);
  // Everything after the envelope up to the checksum is zero, as version 1
  // always wrote its reserved field.
  const auto tail =
      ByteView(bytes).subspan(kRecovery, offsetof(envcrypt_header, checksum) - kRecovery);
  EXPECT_TRUE(std::all_of(tail.begin(), tail.end(), [](auto b) { return b == 0; }));
  const DiskHeader decoded = decode_header(bytes, kPrimaryOffset).value();
  EXPECT_EQ(decoded.version, 1U);
  EXPECT_FALSE(decoded.recovery.has_value());
}

TEST(HeaderV2, Version1CannotCarryARecoveryWrap) {
  DiskHeader h = v2_header();
  h.version = ENVCRYPT_HDR_VERSION;
  auto refused = encode_header(h, kPrimaryOffset);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(), "a version 1 header cannot carry a recovery wrap");
  // On disk: a version 1 copy with anything in the old reserved space.
  HeaderBytes bytes = encoded(v2_header());
  put_le32(bytes, offsetof(envcrypt_header, version), 1);
  expect_invalid(bytes, "recovery block has a non-zero unused byte at offset 912");
}

TEST(HeaderV2, UnknownRecoveryAlgorithmIsInvalid) {
  HeaderBytes bytes = encoded(v2_header());
  put_le32(bytes, kRecovery + offsetof(envcrypt_recovery, alg), 7);
  expect_invalid(bytes, "unknown recovery wrap algorithm 7");
}

TEST(HeaderV2, RecoveryLengthsAreChecked) {
  HeaderBytes bytes = encoded(v2_header());
  put_le32(bytes, kRecovery + offsetof(envcrypt_recovery, wrapped_key_len), 129);
  expect_invalid(bytes, "recovery wrapped key length 129");
  put_le32(bytes, kRecovery + offsetof(envcrypt_recovery, wrapped_key_len), 0xffffffffU);
  expect_invalid(bytes, "recovery wrapped key length 4294967295");
  // Shorter than the DK: the rest of the field is then non-zero.
  put_le32(bytes, kRecovery + offsetof(envcrypt_recovery, wrapped_key_len), 32);
  expect_invalid(bytes, "recovery wrapped key field has a non-zero unused byte");
  // Shorter, with the rest zeroed: the wrap is not a DK's length.
  const std::size_t tail = kRecovery + offsetof(envcrypt_recovery, wrapped_key) + 32;
  std::fill(bytes.begin() + tail, bytes.begin() + tail + 32, 0);
  expect_invalid(bytes, "recovery wrapped key is 32 bytes, not 64");
}

TEST(HeaderV2, UnusedRecoveryBytesMustBeZero) {
  HeaderBytes bytes = encoded(v2_header());
  bytes[kRecovery + offsetof(envcrypt_recovery, pad) + 2] = 1;
  expect_invalid(bytes, "recovery pad has a non-zero unused byte");

  bytes = encoded(v2_header());
  bytes[kRecovery + offsetof(envcrypt_recovery, wrapped_key) + 100] = 1;
  expect_invalid(bytes, "recovery wrapped key field has a non-zero unused byte");

  // alg 0 (no wrap) with leftovers of one.
  DiskHeader without = v2_header();
  without.recovery.reset();
  bytes = encoded(without);
  bytes[kRecovery + offsetof(envcrypt_recovery, key_id)] = 1;
  expect_invalid(bytes, "recovery block has a non-zero unused byte");

  bytes = encoded(v2_header());
  bytes[offsetof(envcrypt_header, reserved) + 5] = 1;
  expect_invalid(bytes, "reserved has a non-zero unused byte");
}

TEST(HeaderV2, VersionsAboveTwoAreUnsupported) {
  HeaderBytes bytes = encoded(v2_header());
  put_le32(bytes, offsetof(envcrypt_header, version), 3);
  fix_checksum(bytes);
  CopyReport report;
  auto decoded = decode_header(bytes, kPrimaryOffset, &report);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(report.state, CopyState::kUnsupportedVersion);
  EXPECT_EQ(decoded.error().message(), "header version 3 (this envcryptctl reads versions 1 to 2)");
}

TEST(HeaderV2, RecoveryContextDiffersOnlyInTheHeaderVersion) {
  const DiskHeader h = v2_header();
  EncryptionContext cmk_context = encryption_context(h);
  EncryptionContext recovery = recovery_context(h);
  EXPECT_EQ(cmk_context.at("header_version"), "1");
  EXPECT_EQ(recovery.at("header_version"), "2");
  recovery["header_version"] = "1";
  EXPECT_EQ(recovery, cmk_context);
}

}  // namespace
}  // namespace envcrypt
