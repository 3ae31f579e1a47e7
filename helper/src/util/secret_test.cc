// SecretBytes lives in OpenSSL's secure heap: locked and excluded from core
// dumps as one arena, so releasing one secret leaves its neighbours locked;
// a full arena is one clear error, and freeing makes room again.
#include "util/secret.h"

#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace envcrypt {
namespace {

// The VmFlags line of the mapping in /proc/self/smaps that holds `address`.
std::string vm_flags_at(const void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t start = 0;
    std::uintptr_t end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= at && at < end;
    } else if (inside && line.starts_with("VmFlags:")) {
      return line;
    }
  }
  return "";
}

bool has_flag(const std::string& vm_flags, const std::string& flag) {
  std::istringstream words(vm_flags);
  std::string word;
  while (words >> word) {
    if (word == flag) {
      return true;
    }
  }
  return false;
}

TEST(SecretBytes, LivesInTheArenaAndClonesToo) {
  const SecretBytes key(32);
  const SecretBytes copy = key.clone();
  EXPECT_TRUE(in_secret_arena(key.data()));
  EXPECT_TRUE(in_secret_arena(copy.data()));
  EXPECT_EQ(copy.size(), 32U);
}

// Per-secret munlock unlocked every secret sharing the page; malloc'ed pages
// went into core dumps.
TEST(SecretBytes, NeighbourStaysLockedAndUndumpableAfterARelease) {
  std::optional<SecretBytes> first(std::in_place, 32);
  const SecretBytes second(32);
  first.reset();
  const std::string flags = vm_flags_at(second.data());
  EXPECT_TRUE(has_flag(flags, "lo")) << "not locked: " << flags;
  EXPECT_TRUE(has_flag(flags, "dd")) << "dumped: " << flags;
}

TEST(SecretBytes, TooLargeForTheArenaIsOneClearError) {
  const SecretBytes held(32);
  // (CRYPTO_secure_used crashes when there is no arena.)
  ASSERT_TRUE(in_secret_arena(held.data()));
  const std::string in_use = std::to_string(CRYPTO_secure_used());
  try {
    const SecretBytes huge(2 * kSecretArenaSize);
    FAIL() << "allocated " << huge.size() << " bytes";
  } catch (const SecretArenaError& e) {
    EXPECT_EQ(std::string(e.what()),
              "the locked memory for keys (1024 KiB) is full: 2097152 bytes asked, " + in_use +
                  " in use");
  }
}

TEST(SecretBytes, FullArenaRefusesThenFreeingMakesRoom) {
  constexpr std::size_t kBlock = 64 << 10;
  std::vector<SecretBytes> held;
  bool refused = false;
  while (!refused && held.size() <= kSecretArenaSize / kBlock) {
    try {
      held.emplace_back(kBlock);
    } catch (const SecretArenaError& e) {
      refused = true;
      EXPECT_TRUE(std::string(e.what()).starts_with(
          "the locked memory for keys (1024 KiB) is full: 65536 bytes asked, "))
          << e.what();
    }
  }
  ASSERT_TRUE(refused) << held.size() << " blocks of 64 KiB in a 1 MiB arena";
  held.pop_back();
  EXPECT_NO_THROW(held.emplace_back(kBlock));
}

}  // namespace
}  // namespace envcrypt
