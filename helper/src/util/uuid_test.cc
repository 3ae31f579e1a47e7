#include "util/uuid.h"

#include <gtest/gtest.h>

namespace envcrypt {
namespace {

constexpr std::string_view kText = "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11";
constexpr Uuid kBytes = {0x4f, 0x0c, 0x6d, 0x8e, 0x0d, 0x1a, 0x4c, 0x55,
                         0x9d, 0x0e, 0x2b, 0x8f, 0x1a, 0x6c, 0x3e, 0x11};

TEST(UuidText, FormatsCanonicalLowerCase) {
  EXPECT_EQ(uuid_to_string(kBytes), kText);
  EXPECT_EQ(uuid_to_hex(kBytes), "4f0c6d8e0d1a4c559d0e2b8f1a6c3e11");
  EXPECT_EQ(uuid_to_string(Uuid{}), "00000000-0000-0000-0000-000000000000");
  Uuid ones;
  ones.fill(0xff);
  EXPECT_EQ(uuid_to_string(ones), "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

TEST(UuidText, ParsesEitherCaseToTheSameBytes) {
  EXPECT_EQ(parse_uuid(kText), kBytes);
  EXPECT_EQ(parse_uuid("4F0C6D8E-0D1A-4C55-9D0E-2B8F1A6C3E11"), kBytes);
  EXPECT_EQ(uuid_from_string(kText).value(), kBytes);
  EXPECT_EQ(uuid_from_hex("4f0c6d8e0d1a4c559d0e2b8f1a6c3e11"), kBytes);
  EXPECT_EQ(uuid_from_hex("4F0C6D8E0D1A4C559D0E2B8F1A6C3E11"), kBytes);
}

TEST(UuidText, RejectsAnythingButEightFourFourFourTwelve) {
  for (const std::string_view bad : {
           "", "not-a-uuid",
           "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1",     // one digit short
           "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e111",   // one digit long
           "4f0c6d8e0-d1a-4c55-9d0e-2b8f1a6c3e11",    // dash moved
           "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e-1",    // dash for a digit
           "4f0c6d8e00d1a04c5509d0e02b8f1a6c3e11",    // no dashes, 36 long
           "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1g",    // not hex
           "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1 ",    // trailing space
           " 4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1",    // leading space
           "{4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11}",  // braces
       }) {
    EXPECT_FALSE(parse_uuid(bad)) << bad;
    EXPECT_FALSE(is_canonical_uuid(bad)) << bad;
  }
  EXPECT_FALSE(parse_uuid(std::string_view("4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1\0", 36)));
}

TEST(UuidText, ErrorNamesTheText) {
  const auto parsed = uuid_from_string("4f0c6d8e");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(parsed.error().message(), "'4f0c6d8e' is not a uuid");
}

TEST(UuidText, HexIsExactlyThirtyTwoDigits) {
  EXPECT_FALSE(uuid_from_hex("4f0c6d8e0d1a4c559d0e2b8f1a6c3e1"));
  EXPECT_FALSE(uuid_from_hex("4f0c6d8e0d1a4c559d0e2b8f1a6c3e111"));
  EXPECT_FALSE(uuid_from_hex("4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11"));
  EXPECT_FALSE(uuid_from_hex("4f0c6d8e0d1a4c559d0e2b8f1a6c3e1x"));
}

TEST(UuidText, CanonicalMeansLowerCase) {
  EXPECT_TRUE(is_canonical_uuid(kText));
  EXPECT_FALSE(is_canonical_uuid("4F0C6D8E-0D1A-4C55-9D0E-2B8F1A6C3E11"));
  EXPECT_FALSE(is_canonical_uuid("4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3E11"));
}

TEST(UuidText, RandomIsVersionFourRfc4122) {
  const Uuid uuid = random_uuid().value();
  const std::string text = uuid_to_string(uuid);
  EXPECT_TRUE(is_canonical_uuid(text));
  EXPECT_EQ(text[14], '4');
  EXPECT_NE(std::string_view("89ab").find(text[19]), std::string_view::npos);
  EXPECT_EQ(parse_uuid(text), uuid);
  EXPECT_NE(random_uuid().value(), uuid);
}

}  // namespace
}  // namespace envcrypt
