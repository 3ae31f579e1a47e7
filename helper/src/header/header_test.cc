#include "header/header.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "util/crypto.h"

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
  EXPECT_EQ(s.error().code(), ErrorCode::kCorrupt);
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
    device.bytes[offset + offsetof(envcrypt_header, version)] = 3;
  }
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.error().message().find("header version 3"), std::string::npos) << s.error().message();
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
    EXPECT_EQ(unwrapped.error().code(), ErrorCode::kCorrupt);
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
  EXPECT_EQ(status.error().code(), ErrorCode::kCorrupt);
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

// Hostile headers: a copy whose checksum is right but whose fields were
// written by an attacker, not by envcryptctl.
void put_field(Device& device, std::uint64_t copy, std::size_t field, std::string_view text,
               std::size_t width) {
  std::memset(device.bytes.data() + copy + field, 0, width);
  std::memcpy(device.bytes.data() + copy + field, text.data(), text.size());
}

void put_le64(Device& device, std::uint64_t copy, std::size_t field, std::uint64_t value) {
  for (std::size_t i = 0; i < 8; ++i) {
    device.bytes[copy + field + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

void reseal(Device& device, std::uint64_t copy) {
  const auto sum = sha256(std::span<const std::uint8_t>(device.bytes.data() + copy,
                                                        offsetof(envcrypt_header, checksum)));
  std::memcpy(device.bytes.data() + copy + offsetof(envcrypt_header, checksum), sum.data(),
              sum.size());
}

constexpr std::size_t kUriField =
    offsetof(envcrypt_header, envelope) + offsetof(envcrypt_envelope, cmk_uri);
constexpr std::size_t kOffsetField =
    offsetof(envcrypt_header, geometry) + offsetof(envcrypt_geometry, data_offset);
constexpr std::size_t kSizeField =
    offsetof(envcrypt_header, geometry) + offsetof(envcrypt_geometry, data_size);

TEST_F(HeaderTest, CmkUriWithANewlineIsRefusedWhereItIsDecoded) {
  for (const std::uint64_t copy : {kPrimaryOffset, kSecondaryOffset}) {
    put_field(device, copy, kUriField, "local://r/k\nENVCRYPT_UNIT=debug-shell.service",
              ENVCRYPT_CMK_URI_LEN);
    reseal(device, copy);
  }
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(s.error().message(),
            "no valid header copy (primary: CMK URI holds byte 0x0a at offset 11 (not a URI "
            "character); secondary: CMK URI holds byte 0x0a at offset 11 (not a URI character))");
}

TEST_F(HeaderTest, CmkUriWithBlanksOrQuotesOrNoSchemeIsRefused) {
  for (const std::string uri : {"local://r/k e", "local://r/\"k\"", "local://r/k\\", "r/k"}) {
    put_field(device, kPrimaryOffset, kUriField, uri, ENVCRYPT_CMK_URI_LEN);
    reseal(device, kPrimaryOffset);
    CopyReport report;
    EXPECT_FALSE(decode_header(device.primary(), kPrimaryOffset, &report).ok()) << uri;
    EXPECT_EQ(report.state, CopyState::kInvalid) << uri;
    EXPECT_TRUE(report.detail.starts_with("CMK URI ")) << report.detail;
  }
}

TEST_F(HeaderTest, LabelWithControlBytesIsRefused) {
  put_field(device, kPrimaryOffset, offsetof(envcrypt_header, label), "db\x1b[2J",
            ENVCRYPT_LABEL_LEN);
  reseal(device, kPrimaryOffset);
  CopyReport report;
  EXPECT_FALSE(decode_header(device.primary(), kPrimaryOffset, &report).ok());
  EXPECT_EQ(report.detail, "label holds byte 0x1b at offset 2 (printable ASCII only)");
}

TEST_F(HeaderTest, CopiesOfTwoDisksAreRefusedWhateverTheirSequence) {
  TestWrapper other_wrapper;
  SecretBytes other_dk;
  DiskHeader other = make_header(other_wrapper, other_dk);
  other.sequence = header.sequence + 1;
  device.put(other, kSecondaryOffset);
  auto s = select_header(device.primary(), device.secondary());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "the two header copies belong to different disks (uuid " +
                                     uuid_to_string(header.uuid) + " vs " +
                                     uuid_to_string(other.uuid) + ")");
}

TEST_F(HeaderTest, SequenceOutOfRangeIsRefused) {
  for (const std::uint64_t sequence : {std::uint64_t{0}, kMaxSequence + 1, ~std::uint64_t{0}}) {
    put_le64(device, kPrimaryOffset, offsetof(envcrypt_header, sequence), sequence);
    reseal(device, kPrimaryOffset);
    CopyReport report;
    EXPECT_FALSE(decode_header(device.primary(), kPrimaryOffset, &report).ok());
    EXPECT_EQ(report.detail, "sequence number " + std::to_string(sequence) +
                                 " is out of range (1 to 9223372036854775807)");
  }
}

TEST_F(HeaderTest, GeometryThatOverflowsIsRefused) {
  put_le64(device, kPrimaryOffset, kOffsetField, 1ull << 20);
  put_le64(device, kPrimaryOffset, kSizeField, ~std::uint64_t{0} - 4095);
  reseal(device, kPrimaryOffset);
  CopyReport report;
  EXPECT_FALSE(decode_header(device.primary(), kPrimaryOffset, &report).ok());
  EXPECT_EQ(report.detail,
            "data offset 1048576 plus data size 18446744073709547520 overflows 64 bits");
}

TEST_F(HeaderTest, OnDeviceDataOffsetInsideTheHeaderAreaIsRefused) {
  DiskHeader detached = header;
  detached.geometry.data_offset = 0;
  EXPECT_TRUE(validate(detached).ok());
  auto placed = check_on_device_geometry(detached);
  ASSERT_FALSE(placed.ok());
  EXPECT_EQ(placed.error().message(),
            "data offset 0 lies inside the header area (528384 bytes) of a header kept on the "
            "device");
  EXPECT_TRUE(check_on_device_geometry(header).ok());
}

// Found by fuzz_header's round-trip property: bytes the encoder leaves zero
// were ignored by the decoder, so one header had many encodings.
TEST_F(HeaderTest, NonZeroUnusedBytesAreRefused) {
  const std::size_t label_tail = offsetof(envcrypt_header, label) + 10;
  const std::size_t reserved = offsetof(envcrypt_header, reserved) + 100;
  const std::size_t pad = offsetof(envcrypt_header, envelope) + offsetof(envcrypt_envelope, pad);
  for (const std::size_t at : {label_tail, reserved, pad}) {
    Device copy = device;
    copy.bytes[at] = 0x41;
    reseal(copy, kPrimaryOffset);
    CopyReport report;
    EXPECT_FALSE(decode_header(copy.primary(), kPrimaryOffset, &report).ok()) << at;
    EXPECT_EQ(report.state, CopyState::kInvalid);
    EXPECT_TRUE(
        report.detail.ends_with("has a non-zero unused byte at offset " + std::to_string(at)))
        << report.detail;
  }
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
