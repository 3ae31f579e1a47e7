#include "kms/kmip/ttlv.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace envcrypt::kmip {
namespace {

using Bytes = std::vector<std::uint8_t>;

// Tag 0x420020 is the one the specification's own encoding examples use
// (KMIP 1.4 section 9.1.2); the vectors below are those examples, recomputed
// by hand.
constexpr std::uint32_t kExampleTag = 0x420020;

TEST(TtlvTest, EncodesEachPrimitiveTypeAsTheSpecificationShows) {
  struct Case {
    Ttlv item;
    Bytes expected;
  };
  const std::vector<Case> cases = {
      {Ttlv::integer(kExampleTag, 8),
       {0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0}},
      {Ttlv::long_integer(kExampleTag, 123456789000000000),
       {0x42, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x08, 0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92,
        0x00}},
      {Ttlv::big_integer(kExampleTag, Bytes{0x00, 0x00, 0x00, 0x00, 0x03, 0xFD, 0x35, 0xEB, 0x6B,
                                            0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00}),
       {0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
        0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00}},
      {Ttlv::enumeration(kExampleTag, 255),
       {0x42, 0x00, 0x20, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF, 0, 0, 0, 0}},
      {Ttlv::boolean(kExampleTag, true),
       {0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x01}},
      {Ttlv::text(kExampleTag, "Hello World"),
       {0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x0B, 'H', 'e', 'l', 'l',
        'o',  ' ',  'W',  'o',  'r',  'l',  'd',  0,    0,   0,   0,   0}},
      {Ttlv::bytes(kExampleTag, Bytes{0x01, 0x02, 0x03}),
       {0x42, 0x00, 0x20, 0x08, 0x00, 0x00, 0x00, 0x03, 0x01, 0x02, 0x03, 0, 0, 0, 0, 0}},
      // Friday, March 14, 2008, 11:56:40 GMT.
      {Ttlv::date_time(kExampleTag, 0x47DA67F8),
       {0x42, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0x47, 0xDA, 0x67, 0xF8}},
      // Ten days.
      {Ttlv::interval(kExampleTag, 864000),
       {0x42, 0x00, 0x20, 0x0A, 0x00, 0x00, 0x00, 0x04, 0x00, 0x0D, 0x2F, 0x00, 0, 0, 0, 0}},
      {Ttlv::structure(kExampleTag,
                       {Ttlv::enumeration(0x420004, 254), Ttlv::integer(0x420005, 255)}),
       {0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x04, 0x05, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x05, 0x02,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00}},
  };
  for (const Case& test_case : cases) {
    SCOPED_TRACE(std::string(to_string(test_case.item.type())));
    EXPECT_EQ(encode(test_case.item), test_case.expected);
    auto decoded = decode(test_case.expected);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message();
    EXPECT_EQ(*decoded, test_case.item);
  }
}

// An Activate request for unique identifier "1", protocol version 1.4, one
// batch item, worked out by hand from KMIP 1.4 sections 6, 7 and 9:
//   Request Message 0x420078 (112 bytes)
//     Request Header 0x420077 (56)
//       Protocol Version 0x420069 (32): Major 0x42006A = 1, Minor 0x42006B = 4
//       Batch Count 0x42000D = 1
//     Batch Item 0x42000F (40)
//       Operation 0x42005C = Activate (0x12)
//       Request Payload 0x420079 (16): Unique Identifier 0x420094 = "1"
const Bytes kActivateRequest = {
    0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x70,                                      //
    0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x38,                                      //
    0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20,                                      //
    0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0,  //
    0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0,  //
    0x42, 0x00, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0,  //
    0x42, 0x00, 0x0F, 0x01, 0x00, 0x00, 0x00, 0x28,                                      //
    0x42, 0x00, 0x5C, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x12, 0, 0, 0, 0,  //
    0x42, 0x00, 0x79, 0x01, 0x00, 0x00, 0x00, 0x10,                                      //
    0x42, 0x00, 0x94, 0x07, 0x00, 0x00, 0x00, 0x01, '1',  0,    0,    0,    0, 0, 0, 0,  //
};

Ttlv activate_request_tree() {
  return Ttlv::structure(
      0x420078,
      {Ttlv::structure(0x420077, {Ttlv::structure(0x420069, {Ttlv::integer(0x42006A, 1),
                                                             Ttlv::integer(0x42006B, 4)}),
                                  Ttlv::integer(0x42000D, 1)}),
       Ttlv::structure(0x42000F, {Ttlv::enumeration(0x42005C, 0x12),
                                  Ttlv::structure(0x420079, {Ttlv::text(0x420094, "1")})})});
}

TEST(TtlvTest, ActivateRequestMatchesHandComputedBytes) {
  ASSERT_EQ(kActivateRequest.size(), 120U);
  EXPECT_EQ(encode(activate_request_tree()), kActivateRequest);
  auto decoded = decode(kActivateRequest);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(*decoded, activate_request_tree());
  const Ttlv* batch_item = decoded->find(0x42000F);
  ASSERT_NE(batch_item, nullptr);
  auto payload = batch_item->require(0x420079, ItemType::kStructure, "Request Payload");
  ASSERT_TRUE(payload.ok());
  auto uid = (*payload)->require(0x420094, ItemType::kTextString, "Unique Identifier");
  ASSERT_TRUE(uid.ok());
  EXPECT_EQ((*uid)->text_value(), "1");
  EXPECT_FALSE(batch_item->require(0x420094, ItemType::kTextString, "Unique Identifier").ok());
  EXPECT_FALSE(batch_item->require(0x42005C, ItemType::kInteger, "Operation").ok());
}

TEST(TtlvTest, EncodedLengthReadsTheHeaderAndEnforcesTheLimit) {
  auto length = encoded_length(kActivateRequest);
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(*length, kActivateRequest.size());
  const Bytes huge = {0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8};
  EXPECT_FALSE(encoded_length(huge).ok());
  EXPECT_FALSE(encoded_length(std::span(huge).first(7)).ok());
}

void expect_rejected(const Bytes& bytes, const std::string& reason_fragment,
                     const DecodeLimits& limits = {}) {
  auto decoded = decode(bytes, limits);
  ASSERT_FALSE(decoded.ok()) << "accepted malformed input, expected: " << reason_fragment;
  EXPECT_NE(decoded.error().message().find(reason_fragment), std::string::npos)
      << decoded.error().message();
}

TEST(TtlvTest, RejectsTruncatedInputAtEveryLength) {
  for (std::size_t size = 0; size < kActivateRequest.size(); ++size) {
    EXPECT_FALSE(decode(std::span(kActivateRequest).first(size)).ok()) << size;
  }
}

TEST(TtlvTest, RejectsMalformedItems) {
  expect_rejected({}, "truncated header");
  expect_rejected({0x42, 0x00, 0x20, 0x02, 0x00, 0x00}, "truncated header");
  // Integer with length 8 instead of 4.
  expect_rejected({0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0, 0},
                  "Integer length must be 4");
  // Boolean with length 4.
  expect_rejected({0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0},
                  "Boolean length must be 8");
  expect_rejected({0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 2},
                  "neither 0 nor 1");
  // Unknown type 0x0B, and type 0.
  expect_rejected({0x42, 0x00, 0x20, 0x0B, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0},
                  "unknown item type 0xb");
  expect_rejected({0x42, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00}, "unknown item type 0x0");
  // Not a KMIP tag.
  expect_rejected({0x16, 0x03, 0x01, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0},
                  "is not a KMIP tag");
  // Non-zero padding after an Integer and after a Text String.
  expect_rejected({0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0x01, 0},
                  "non-zero padding");
  expect_rejected({0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x01, 'a', 0, 0, 0, 0, 0, 0, 0x20},
                  "non-zero padding");
  // Text String whose length runs past the end, and one whose padding is missing.
  expect_rejected({0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x09, 'a', 0, 0, 0, 0, 0, 0, 0},
                  "runs past the end");
  expect_rejected({0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x01, 'a'}, "runs past the end");
  // Big Integer of 4 bytes.
  expect_rejected({0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0},
                  "not a positive multiple of 8");
  // Trailing bytes after a complete item.
  Bytes trailing = kActivateRequest;
  trailing.insert(trailing.end(), {0, 0, 0, 0, 0, 0, 0, 0});
  expect_rejected(trailing, "trailing bytes");
}

TEST(TtlvTest, RejectsStructureLengthsThatDisagreeWithTheirChildren) {
  // The outer structure claims 8 bytes fewer than its children need.
  Bytes short_structure = kActivateRequest;
  short_structure[7] = 0x68;
  expect_rejected(short_structure, "");
  // The batch item claims 8 bytes more than the message holds.
  Bytes long_child = kActivateRequest;
  long_child[8 + 64 + 7] = 0x30;
  expect_rejected(long_child, "runs past the end");
  // A structure length that is not a multiple of 8.
  Bytes odd = kActivateRequest;
  odd[7] = 0x6F;
  expect_rejected(odd, "");
}

Bytes nested_structures(int depth) {
  Bytes bytes;
  for (int level = 0; level < depth; ++level) {
    const auto length = static_cast<std::uint32_t>((depth - level - 1) * 8);
    bytes.insert(bytes.end(),
                 {0x42, 0x00, 0x20, 0x01, static_cast<std::uint8_t>(length >> 24),
                  static_cast<std::uint8_t>(length >> 16), static_cast<std::uint8_t>(length >> 8),
                  static_cast<std::uint8_t>(length)});
  }
  return bytes;
}

TEST(TtlvTest, CapsNestingDepth) {
  const DecodeLimits limits;
  EXPECT_TRUE(decode(nested_structures(limits.max_depth)).ok());
  expect_rejected(nested_structures(limits.max_depth + 1), "nested deeper than");
  // A very deep message is refused without exhausting the stack.
  expect_rejected(nested_structures(100000), "");
}

TEST(TtlvTest, RejectsOversizeMessages) {
  DecodeLimits small;
  small.max_message_size = 64;
  expect_rejected(kActivateRequest, "exceeds the limit of 64", small);
  Bytes big = {0x42, 0x00, 0x20, 0x08, 0x00, 0x20, 0x00, 0x00};
  big.resize(8 + 0x200000, 0);
  expect_rejected(big, "exceeds the limit");
}

// Random mutations of a valid message must never crash the decoder, and
// whatever it accepts must re-encode to the very same bytes (strict decoding
// admits one encoding per tree).
TEST(TtlvTest, RandomMutationsNeverCrashAndAcceptedInputRoundTrips) {
  std::mt19937 random(20261128);
  const Ttlv rich = Ttlv::structure(
      0x42007B, {activate_request_tree(), Ttlv::long_integer(0x420092, -5),
                 Ttlv::boolean(0x420007, false), Ttlv::bytes(0x4200C2, Bytes(13, 0xAB)),
                 Ttlv::date_time(0x420039, 1700000000), Ttlv::interval(0x42000A, 7)});
  const Bytes seed = encode(rich);
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    Bytes mutated = seed;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int edit = 0; edit < edits; ++edit) {
      const std::size_t position = random() % mutated.size();
      switch (random() % 4) {
        case 0:
          mutated[position] = static_cast<std::uint8_t>(random());
          break;
        case 1:
          mutated[position] ^= static_cast<std::uint8_t>(1U << (random() % 8));
          break;
        case 2:
          mutated.resize(position);
          break;
        default:
          mutated.insert(mutated.begin() + static_cast<std::ptrdiff_t>(position),
                         static_cast<std::uint8_t>(random()));
          break;
      }
      if (mutated.empty()) {
        break;
      }
    }
    auto decoded = decode(mutated);
    if (decoded.ok()) {
      ++accepted;
      EXPECT_EQ(encode(*decoded), mutated);
    }
  }
  // Flipped bits inside values keep the message valid, so some are accepted.
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace envcrypt::kmip
