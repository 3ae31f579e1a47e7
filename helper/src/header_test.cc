#include "header.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "crypto.h"

namespace envcrypt {
namespace {

// Wraps like a KMS does: AES-256-GCM with the canonical context as AAD.
struct TestWrapper {
  SecretBytes cmk = std::move(random_secret(32)).value();

  WrappedKey wrap(const SecretBytes& dk, const EncryptionContext& context) {
    auto sealed = aes256_gcm_seal(cmk.span(), dk.span(), canonical_context(context));
    EXPECT_TRUE(sealed.ok());
    WrappedKey w;
    w.cmk_uri = "local://local-1/1234abcd-0000-4000-8000-000000000000";
    w.cmk_version = 1;
    w.nonce = sealed->nonce;
    w.tag = sealed->tag;
    w.ciphertext = sealed->ciphertext;
    return w;
  }

  Result<SecretBytes> unwrap(const WrappedKey& w, const EncryptionContext& context) {
    return aes256_gcm_open(cmk.span(), w.nonce, w.ciphertext, w.tag, canonical_context(context));
  }
};

DiskHeader make_header(TestWrapper& wrapper, SecretBytes& dk) {
  DiskHeader h;
  h.uuid = random_uuid().value();
  h.label = "data";
  h.sequence = 7;
  h.geometry.data_size = 64ull << 20;
  dk = std::move(random_secret(kDataKeySize)).value();
  h.wrapped = wrapper.wrap(dk, encryption_context(h));
  h.kcv = key_check_value(dk, h.uuid).value();
  return h;
}

struct Device {
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kHeaderAreaSize, 0);
  std::span<const std::uint8_t> primary() const { return {bytes.data(), kHeaderSize}; }
  std::span<const std::uint8_t> secondary() const {
    return {bytes.data() + kSecondaryOffset, kHeaderSize};
  }
  void put(const DiskHeader& h, std::uint64_t offset) {
    auto copy = encode_header(h, offset);
    ASSERT_TRUE(copy.ok()) << copy.error().message();
    std::memcpy(bytes.data() + offset, copy->data(), copy->size());
  }
};

class HeaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    header = make_header(wrapper, dk);
    device.put(header, kPrimaryOffset);
    device.put(header, kSecondaryOffset);
  }
  TestWrapper wrapper;
  SecretBytes dk;
  DiskHeader header;
  Device device;
};

TEST_F(HeaderTest, RoundTrip) {
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_FALSE(s->degraded());
  const DiskHeader& h = s->header;
  EXPECT_EQ(h.uuid, header.uuid);
  EXPECT_EQ(h.label, "data");
  EXPECT_EQ(h.sequence, 7u);
  EXPECT_EQ(h.geometry.cipher, "aes-xts-plain64");
  EXPECT_EQ(h.geometry.sector_size, 4096u);
  EXPECT_EQ(h.geometry.data_offset, 16ull << 20);
  EXPECT_EQ(h.geometry.data_size, 64ull << 20);
  EXPECT_EQ(h.wrapped.cmk_uri, header.wrapped.cmk_uri);
  EXPECT_EQ(h.wrapped.ciphertext, header.wrapped.ciphertext);
  EXPECT_EQ(h.wrapped.nonce, header.wrapped.nonce);
  EXPECT_EQ(h.wrapped.tag, header.wrapped.tag);
  EXPECT_EQ(h.kcv, header.kcv);
  auto unwrapped = wrapper.unwrap(h.wrapped, encryption_context(h));
  ASSERT_TRUE(unwrapped.ok());
  EXPECT_TRUE(check_data_key(h, *unwrapped).ok());
}

TEST_F(HeaderTest, FieldsSitWhereTheUapiSays) {
  EXPECT_EQ(std::memcmp(device.bytes.data(), "ENVCRYPT", 8), 0);
  EXPECT_EQ(device.bytes[8], 1);  // version, little-endian
  EXPECT_EQ(device.bytes[offsetof(envcrypt_header, sequence)], 7);
  EXPECT_EQ(device.bytes[kSecondaryOffset + offsetof(envcrypt_header, copy_offset) + 2], 0x08);
  EXPECT_EQ(
      std::memcmp(device.bytes.data() + offsetof(envcrypt_header, uuid), header.uuid.data(), 16),
      0);
}

TEST_F(HeaderTest, DataKeyNeverInTheHeader) {
  const auto it = std::search(device.bytes.begin(), device.bytes.end(), dk.data(), dk.data() + 16);
  EXPECT_EQ(it, device.bytes.end());
}

TEST_F(HeaderTest, BadMagicInOneCopyIsRecoveredAndReported) {
  device.bytes[0] ^= 0xff;
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_TRUE(s->degraded());
  EXPECT_EQ(s->primary.state, CopyState::kAbsent);
  EXPECT_EQ(s->secondary.state, CopyState::kValid);
  EXPECT_EQ(s->header.uuid, header.uuid);
}

TEST_F(HeaderTest, BadChecksumInEitherCopyIsRecoveredAndReported) {
  for (std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
    Device d = device;
    d.bytes[offset + offsetof(envcrypt_header, label)] ^= 0x01;
    auto s = select_header(d.primary(), d.secondary());
    ASSERT_TRUE(s.ok()) << s.error().message();
    const CopyReport& bad = offset == kPrimaryOffset ? s->primary : s->secondary;
    const CopyReport& good = offset == kPrimaryOffset ? s->secondary : s->primary;
    EXPECT_EQ(bad.state, CopyState::kBadChecksum);
    EXPECT_EQ(good.state, CopyState::kValid);
    EXPECT_EQ(s->header.label, "data");
  }
}

TEST_F(HeaderTest, BothCopiesBadIsCorruptHeader) {
  device.bytes[100] ^= 0x01;
  device.bytes[kSecondaryOffset + 100] ^= 0x01;
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruptHeader);
  EXPECT_NE(s.error().message().find("primary: checksum mismatch"), std::string::npos);
  EXPECT_NE(s.error().message().find("secondary: checksum mismatch"), std::string::npos);
}

TEST_F(HeaderTest, NoMagicAnywhereIsNotFound) {
  Device blank;
  auto s = select_header(blank.primary(), blank.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
}

TEST_F(HeaderTest, TruncatedCopyIsRejected) {
  auto s = select_header(device.primary().first(100), {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
}

TEST_F(HeaderTest, UnknownVersionIsNamed) {
  for (std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
    device.bytes[offset + offsetof(envcrypt_header, version)] = 2;
  }
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruptHeader);
  EXPECT_NE(s.error().message().find("header version 2"), std::string::npos) << s.error().message();
}

TEST_F(HeaderTest, HigherSequenceWinsAndOlderIsStale) {
  DiskHeader newer = header;
  newer.sequence = 8;
  newer.label = "renamed";
  device.put(newer, kSecondaryOffset);
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->header.label, "renamed");
  EXPECT_EQ(s->primary.state, CopyState::kStale);
  EXPECT_EQ(s->secondary.state, CopyState::kValid);
}

TEST_F(HeaderTest, CopyAtTheWrongOffsetIsInvalid) {
  std::memcpy(device.bytes.data() + kSecondaryOffset, device.bytes.data(), kHeaderSize);
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->secondary.state, CopyState::kInvalid);
}

TEST_F(HeaderTest, GeometryChangedFailsToUnwrap) {
  // An attacker who edits geometry and recomputes the checksums still cannot
  // make the KMS unwrap: the context no longer matches the wrap's AAD.
  auto edits = std::vector<std::function<void(DiskHeader&)>>{
      [](DiskHeader& h) { h.geometry.data_offset += kDataAlign; },
      [](DiskHeader& h) { h.geometry.data_size = 0; },
      [](DiskHeader& h) { h.geometry.sector_size = 512; },
      [](DiskHeader& h) { h.uuid[0] ^= 1; },
  };
  for (const auto& edit : edits) {
    DiskHeader edited = header;
    edit(edited);
    Device d;
    d.put(edited, kPrimaryOffset);
    d.put(edited, kSecondaryOffset);
    auto s = select_header(d.primary(), d.secondary());
    ASSERT_TRUE(s.ok());
    auto unwrapped = wrapper.unwrap(s->header.wrapped, encryption_context(s->header));
    ASSERT_FALSE(unwrapped.ok());
    EXPECT_EQ(unwrapped.error().code(), ErrorCode::kCorruptHeader);
  }
}

TEST_F(HeaderTest, LabelIsNotBoundSoItMayChange) {
  DiskHeader relabelled = header;
  relabelled.label = "other";
  EXPECT_TRUE(wrapper.unwrap(header.wrapped, encryption_context(relabelled)).ok());
}

TEST_F(HeaderTest, KeyCheckValueRejectsAnotherKey) {
  SecretBytes other = std::move(random_secret(kDataKeySize)).value();
  auto status = check_data_key(header, other);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kCorruptHeader);
  EXPECT_FALSE(check_data_key(header, SecretBytes(32)).ok());
  EXPECT_TRUE(check_data_key(header, dk).ok());
}

TEST_F(HeaderTest, KeyCheckValueDependsOnTheUuid) {
  Uuid other = header.uuid;
  other[15] ^= 1;
  EXPECT_NE(key_check_value(dk, other).value(), header.kcv);
}

TEST_F(HeaderTest, EncoderRefusesBadFields) {
  DiskHeader h = header;
  h.geometry.data_offset = 3;
  EXPECT_FALSE(encode_header(h, 0).ok());
  h = header;
  h.label = std::string(65, 'x');
  EXPECT_EQ(encode_header(h, 0).error().code(), ErrorCode::kUsage);
  h = header;
  h.geometry.sector_size = 1024;
  EXPECT_FALSE(encode_header(h, 0).ok());
  h = header;
  h.wrapped.cmk_uri = std::string(513, 'u');
  EXPECT_FALSE(encode_header(h, 0).ok());
}

TEST(Uuid, StringRoundTrip) {
  Uuid u = random_uuid().value();
  const std::string text = uuid_to_string(u);
  ASSERT_EQ(text.size(), 36u);
  EXPECT_EQ(text[14], '4');
  EXPECT_EQ(uuid_from_string(text).value(), u);
  EXPECT_FALSE(uuid_from_string("not-a-uuid").ok());
}

}  // namespace
}  // namespace envcrypt
