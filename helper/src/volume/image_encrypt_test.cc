// `envcryptctl image encrypt` on image files, in process: the ciphertext is
// checked by decrypting DST's data area with OpenSSL's EVP directly (tweaks
// built here), so a wrong IV, offset or padding shows; holes encrypt as
// ciphertext of zeros; a partition copy leaves every other byte alone; the
// refusals give their exact messages; a kill mid-copy (test hook, in a child
// process) leaves DST without a header.
#include "volume/image_encrypt.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>

#include "cli/cli_test_support.h"
#include "config/config.h"
#include "util/crypto.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;

Bytes read_bytes(const fs::path& path, std::uint64_t offset = 0, std::uint64_t size = UINT64_MAX) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  Bytes out;
  std::istreambuf_iterator<char> it(in);
  for (std::uint64_t i = 0; i < size && it != std::istreambuf_iterator<char>(); ++i, ++it) {
    out.push_back(static_cast<std::uint8_t>(*it));
  }
  return out;
}

void write_bytes(const fs::path& path, std::uint64_t offset, const Bytes& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

Bytes random_bytes_seeded(std::size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  Bytes out(size);
  for (auto& b : out) {
    b = static_cast<std::uint8_t>(gen());
  }
  return out;
}

// AES-256-XTS decryption of a data area, one EVP call per unit, tweak =
// little-endian number of the unit's first 512-byte sector.
Bytes xts_decrypt(const SecretBytes& key, const Bytes& cipher, std::uint32_t unit) {
  Bytes plain(cipher.size());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  for (std::size_t at = 0; at < cipher.size(); at += unit) {
    std::array<std::uint8_t, 16> tweak{};
    const std::uint64_t sector = at / 512;
    for (int i = 0; i < 8; ++i) {
      tweak[i] = static_cast<std::uint8_t>(sector >> (8 * i));
    }
    int n = 0;
    EVP_DecryptInit_ex(ctx, EVP_aes_256_xts(), nullptr, key.data(), tweak.data());
    EVP_DecryptUpdate(ctx, plain.data() + at, &n, cipher.data() + at, static_cast<int>(unit));
  }
  EVP_CIPHER_CTX_free(ctx);
  return plain;
}

class ImageEncryptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-image");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_, cli_testing::local_kms_config(dir_));
    src_ = dir_ / "src.img";
    dst_ = dir_ / "dst.img";
  }
  void TearDown() override { fs::remove_all(dir_); }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_.string(), "image", "encrypt"});
    if (args_json_) {
      args.insert(args.begin(), "--json");
    }
    return cli_testing::run_envcryptctl(std::move(args));
  }

  // SRC of `size` bytes: sparse, with random data at a few places.
  void make_src(std::uint64_t size) {
    cli_testing::make_sparse_image(src_, size);
    write_bytes(src_, 0, random_bytes_seeded(64 << 10, 1));
    write_bytes(src_, 3 << 20, random_bytes_seeded(1 << 20, 2));
    write_bytes(src_, size - 700, random_bytes_seeded(700, 3));
  }

  // The header and DK of the volume in `image` (a file holding only it).
  std::pair<DiskHeader, SecretBytes> open_volume(const fs::path& image) {
    auto config = load_config(config_);
    EXPECT_TRUE(config.ok());
    KmsRegistry registry(std::move(config).value());
    auto selection = read_volume_header(image, std::nullopt);
    EXPECT_TRUE(selection.ok()) << selection.error().message();
    EXPECT_FALSE(selection->degraded());
    auto dk = unlock(registry, selection->header);
    EXPECT_TRUE(dk.ok()) << dk.error().message();
    return {selection->header, std::move(dk).value()};
  }

  fs::path dir_;
  fs::path config_;
  fs::path src_;
  fs::path dst_;
  bool args_json_ = false;
};

TEST_F(ImageEncryptTest, WholeDiskDecryptsToSourceForBothUnitSizes) {
  const std::uint64_t size = (8 << 20) + 1000;  // ends mid-unit: padded with zeros
  make_src(size);
  const Bytes plain = read_bytes(src_);
  for (const std::uint32_t unit : {512U, 4096U}) {
    SCOPED_TRACE(unit);
    fs::remove(dst_);
    CliRun done = run({src_.string(), dst_.string(), "--sector-size", std::to_string(unit),
                       "--label", "golden", "--threads", "3"});
    ASSERT_EQ(done.code, 0) << done.err;
    EXPECT_EQ(done.err, "");  // no progress line: stderr is not a terminal
    EXPECT_NE(done.out.find("encrypted " + src_.string() + " to " + dst_.string() + ": uuid "),
              std::string::npos)
        << done.out;
    EXPECT_NE(done.out.find(", sector size " + std::to_string(unit) +
                            ", 8389608 bytes of plaintext at data offset 16777216 ("),
              std::string::npos)
        << done.out;
    const std::uint64_t area = (size + unit - 1) / unit * unit;
    EXPECT_EQ(fs::file_size(dst_), (16U << 20) + area);
    EXPECT_EQ(fs::status(dst_).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    auto [header, dk] = open_volume(dst_);
    EXPECT_EQ(header.label, "golden");
    EXPECT_EQ(header.geometry.sector_size, unit);
    EXPECT_EQ(header.geometry.data_size, area);
    const Bytes cipher = read_bytes(dst_, 16 << 20);
    Bytes want = plain;
    want.resize(area, 0);
    EXPECT_TRUE(xts_decrypt(dk, cipher, unit) == want);
    // A hole (SRC bytes 1-2 MiB) is ciphertext of zeros, not zeros.
    EXPECT_NE(Bytes(cipher.begin() + (1 << 20), cipher.begin() + (1 << 20) + 4096), Bytes(4096, 0));
  }
}

TEST_F(ImageEncryptTest, JsonReport) {
  make_src(12 << 20);  // three 4 MiB chunks: room for both threads
  args_json_ = true;
  CliRun done = run({src_.string(), dst_.string(), "--sector-size", "512", "--threads", "2"});
  ASSERT_EQ(done.code, 0) << done.err;
  for (const std::string& field :
       {"\"src\": \"" + src_.string() + "\"", "\"dst\": \"" + dst_.string() + "\"",
        std::string("\"partition\": null"), std::string("\"sector_size\": 512"),
        std::string("\"volume_offset\": 0"), std::string("\"data_offset\": 16777216"),
        std::string("\"plaintext_bytes\": 12582912"), std::string("\"threads\": 2")}) {
    EXPECT_NE(done.out.find(field), std::string::npos) << field << " in " << done.out;
  }
}

TEST_F(ImageEncryptTest, RefusesSameFile) {
  make_src(1 << 20);
  const Bytes before = read_bytes(src_);
  CliRun refused = run({src_.string(), src_.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kUsage));
  EXPECT_EQ(refused.err.rfind("envcryptctl: image encrypt " + src_.string() +
                                  ": refusing to encrypt in place: SRC " + src_.string() +
                                  " and DST " + src_.string() + " are both file inode ",
                              0),
            0U)
      << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1);
  EXPECT_TRUE(read_bytes(src_) == before);
}

TEST_F(ImageEncryptTest, RefusesDstWithDataAsFormatDoes) {
  make_src(1 << 20);
  cli_testing::make_sparse_image(dst_, 32 << 20);
  ASSERT_EQ(
      cli_testing::run_envcryptctl({"--config", config_.string(), "format", dst_.string()}).code,
      0);
  const Bytes before = read_bytes(dst_);
  CliRun refused = run({src_.string(), dst_.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_NE(refused.err.find(dst_.string() + ": already an envcrypt disk (uuid "),
            std::string::npos)
      << refused.err;
  EXPECT_TRUE(read_bytes(dst_) == before);
}

// No more threads than chunks: a 4 MiB image is one chunk.
TEST_F(ImageEncryptTest, ThreadsNeverExceedChunks) {
  make_src(1 << 20);
  CliRun done = run({src_.string(), dst_.string(), "--threads", "8"});
  ASSERT_EQ(done.code, 0) << done.err;
  EXPECT_NE(done.out.find(", 1 thread)\n"), std::string::npos) << done.out;
}

TEST_F(ImageEncryptTest, EmptyExistingFileIsGrown) {
  make_src(1 << 20);
  std::ofstream(dst_).close();
  CliRun done = run({src_.string(), dst_.string()});
  ASSERT_EQ(done.code, 0) << done.err;
  EXPECT_EQ(fs::file_size(src_), 4U << 20);  // the data at 3 MiB ends it
  EXPECT_EQ(fs::file_size(dst_), (20U << 20));
}

// SIGKILL halfway through the copy (ENVCRYPT_FAULT, obeyed by the unit
// tests' build) in a child: DST is there but holds no header copy.
TEST_F(ImageEncryptTest, KillMidCopyLeavesNoHeader) {
  make_src(64 << 20);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("ENVCRYPT_FAULT", "image-encrypt:half", 1);
    CliRun r = run({src_.string(), dst_.string(), "--threads", "2"});
    ::_exit(r.code == 0 ? 0 : 100 + r.code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  ASSERT_TRUE(fs::exists(dst_));
  auto header = read_volume_header(dst_, std::nullopt);
  ASSERT_FALSE(header.ok());
  EXPECT_EQ(header.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(read_bytes(dst_, 0, 1 << 20), Bytes(1 << 20, 0));
}

// A GPT image of 64 MiB: partition 1 (8 MiB) random, partition 2 (40 MiB)
// random in its first 20 MiB and empty after, some random bytes after it.
class PartitionImageTest : public ImageEncryptTest {
 protected:
  void SetUp() override {
    ImageEncryptTest::SetUp();
    if (std::system("command -v sfdisk >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "sfdisk not installed";
    }
    cli_testing::make_sparse_image(src_, 64 << 20);
    const std::string cmd = "printf 'label: gpt\\nsize=8MiB, type=U\\nsize=40MiB\\n' | sfdisk -q " +
                            src_.string() + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    write_bytes(src_, kP1, random_bytes_seeded(8 << 20, 4));
    write_bytes(src_, kP2, random_bytes_seeded(20 << 20, 5));
    write_bytes(src_, kP2 + (40 << 20), random_bytes_seeded(1 << 20, 6));
  }

  static constexpr std::uint64_t kP1 = 1 << 20;
  static constexpr std::uint64_t kP2 = 9 << 20;
  static constexpr std::uint64_t kP2Size = 40 << 20;
};

TEST_F(PartitionImageTest, OnlyThePartitionChanges) {
  const Bytes plain = read_bytes(src_);
  CliRun done = run({src_.string(), dst_.string(), "--partition", "2"});
  ASSERT_EQ(done.code, 0) << done.err;
  EXPECT_NE(done.out.find(" partition 2: uuid "), std::string::npos) << done.out;
  const Bytes out = read_bytes(dst_);
  ASSERT_EQ(out.size(), plain.size());
  EXPECT_TRUE(std::equal(plain.begin(), plain.begin() + kP2, out.begin()));
  EXPECT_TRUE(std::equal(plain.begin() + kP2 + kP2Size, plain.end(), out.begin() + kP2 + kP2Size));
  const fs::path volume = dir_ / "p2.img";
  cli_testing::write_text(volume, std::string(out.begin() + kP2, out.begin() + kP2 + kP2Size));
  auto [header, dk] = open_volume(volume);
  EXPECT_EQ(header.geometry.data_size, 0U);
  const std::uint64_t data = kP2Size - (16 << 20);
  const Bytes cipher(out.begin() + kP2 + (16 << 20), out.begin() + kP2 + kP2Size);
  EXPECT_TRUE(xts_decrypt(dk, cipher, 4096) ==
              Bytes(plain.begin() + kP2, plain.begin() + kP2 + data));
}

// Killed after the copy, before the header and the table: DST has neither.
TEST_F(PartitionImageTest, KillBeforeTheHeaderLeavesNoTable) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("ENVCRYPT_FAULT", "image-encrypt:copied", 1);
    CliRun r = run({src_.string(), dst_.string(), "--partition", "2"});
    ::_exit(r.code == 0 ? 0 : 100 + r.code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  const Bytes out = read_bytes(dst_);
  ASSERT_EQ(out.size(), 64U << 20);
  // No MBR, no GPT header or entries, no backup GPT, no envcrypt header.
  EXPECT_EQ(Bytes(out.begin(), out.begin() + 17408), Bytes(17408, 0));
  EXPECT_EQ(Bytes(out.end() - 33 * 512, out.end()), Bytes(33 * 512, 0));
  EXPECT_EQ(Bytes(out.begin() + kP2, out.begin() + kP2 + (16 << 20)), Bytes(16 << 20, 0));
  EXPECT_EQ(parse_partition_table(out, out.size()).error().code(), ErrorCode::kNotFound);
  // Partition 1 was copied already: only the metadata is missing.
  EXPECT_TRUE(read_bytes(src_, kP1, 8 << 20) ==
              Bytes(out.begin() + kP1, out.begin() + kP1 + (8 << 20)));
}

TEST_F(PartitionImageTest, RefusesDataInThePartitionTail) {
  write_bytes(src_, kP2 + kP2Size - 5000, {0x42});
  CliRun refused = run({src_.string(), dst_.string(), "--partition", "2"});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kUsage));
  EXPECT_EQ(refused.err, "envcryptctl: image encrypt " + src_.string() +
                             ": partition 2: its last 16777216 bytes hold data (byte 41938040 "
                             "of the partition is not zero); shrink its file system to at most "
                             "25165824 bytes first\n");
  EXPECT_FALSE(fs::exists(dst_));  // created by this run, removed on failure
}

TEST_F(PartitionImageTest, RefusesAMissingPartition) {
  CliRun refused = run({src_.string(), dst_.string(), "--partition", "3"});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kNotFound));
  EXPECT_EQ(refused.err, "envcryptctl: image encrypt " + src_.string() +
                             ": no partition 3 in the GPT (partitions: 1, 2)\n");
  EXPECT_FALSE(fs::exists(dst_));
}

}  // namespace
}  // namespace envcrypt
