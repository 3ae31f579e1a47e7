// The userspace XTS against a published answer (IEEE 1619-2007, XTS-AES-256
// vector 10) and against OpenSSL's EVP driven by hand-built plain64 tweaks,
// for both unit sizes: the tweak of a 4096-byte unit is the number of its
// first 512-byte sector, as in the target (kmod/dm-envcrypt.c).
#include "util/xts_cipher.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <vector>

#include "util/crypto.h"

namespace envcrypt {
namespace {

SecretBytes key_from_hex(const std::string& hex) {
  const Bytes bytes = *from_hex(hex);
  return {bytes.data(), bytes.size()};
}

const char* const kVector10Key =
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592";

TEST(XtsCipherTest, Ieee1619Vector10) {
  const SecretBytes key = key_from_hex(kVector10Key);
  std::vector<std::uint8_t> data(512);
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<std::uint8_t>(i);
  }
  auto cipher = XtsCipher::create(key, 512);
  ASSERT_TRUE(cipher.ok()) << cipher.error().message();
  ASSERT_TRUE(cipher->encrypt(data, data, 0xff).ok());  // data unit sequence number 0xff
  EXPECT_EQ(to_hex(std::span(data).first(32)),
            "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b");
  EXPECT_EQ(to_hex(std::span(data).last(32)),
            "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151");
}

// One XTS message through EVP with the tweak spelled out byte by byte.
Bytes evp_xts(const SecretBytes& key, std::span<const std::uint8_t> in,
              const std::array<std::uint8_t, 16>& tweak) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  Bytes out(in.size());
  int n = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_xts(), nullptr, key.data(), tweak.data()), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), static_cast<int>(in.size())), 1);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

TEST(XtsCipherTest, Unit4096TweaksCount512ByteSectors) {
  const SecretBytes key = key_from_hex(kVector10Key);
  std::vector<std::uint8_t> plain(3 * 4096);
  for (std::size_t i = 0; i < plain.size(); ++i) {
    plain[i] = static_cast<std::uint8_t>(i * 7 + 3);
  }
  std::vector<std::uint8_t> out(plain.size());
  auto cipher = XtsCipher::create(key, 4096);
  ASSERT_TRUE(cipher.ok());
  // Data-area sector 0x0102030405060708: units at +0, +8, +16 sectors.
  ASSERT_TRUE(cipher->encrypt(plain, out, 0x0102030405060708ULL).ok());
  for (std::uint8_t unit = 0; unit < 3; ++unit) {
    const std::array<std::uint8_t, 16> tweak = {
        static_cast<std::uint8_t>(0x08 + 8 * unit), 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    const auto want = evp_xts(key, std::span(plain).subspan(unit * 4096U, 4096), tweak);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), out.begin() + unit * 4096))
        << "unit " << int{unit};
  }
}

TEST(XtsCipherTest, Unit512EachSectorItsOwnTweak) {
  const SecretBytes key = key_from_hex(kVector10Key);
  std::vector<std::uint8_t> zeros(1024, 0);
  std::vector<std::uint8_t> out(1024);
  auto cipher = XtsCipher::create(key, 512);
  ASSERT_TRUE(cipher.ok());
  ASSERT_TRUE(cipher->encrypt(zeros, out, 0).ok());
  // Zeros encrypt to something else, and differently in each sector: a hole
  // in SRC must be written as this ciphertext, not left as zeros.
  EXPECT_NE(std::vector<std::uint8_t>(out.begin(), out.begin() + 512),
            std::vector<std::uint8_t>(512, 0));
  EXPECT_FALSE(std::equal(out.begin(), out.begin() + 512, out.begin() + 512));
  const auto second = evp_xts(key, std::span(zeros).first(512), {1});
  EXPECT_TRUE(std::equal(second.begin(), second.end(), out.begin() + 512));
}

TEST(XtsCipherTest, RefusesBadSizes) {
  const SecretBytes key = key_from_hex(kVector10Key);
  EXPECT_EQ(XtsCipher::create(key, 1024).error().message(),
            "sector size 1024: must be 512 or 4096");
  const SecretBytes short_key(32);
  EXPECT_EQ(XtsCipher::create(short_key, 512).error().message(),
            "AES-256-XTS needs a 64-byte key, not 32");
  auto cipher = XtsCipher::create(key, 4096);
  std::vector<std::uint8_t> partial(512);
  EXPECT_EQ(cipher->encrypt(partial, partial, 0).error().message(),
            "XTS: 512 bytes is not a whole number of units");
}

}  // namespace
}  // namespace envcrypt
