#include "boot/auto_attach.h"

#include <gtest/gtest.h>

namespace envcrypt {
namespace {

constexpr const char* kUuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

TEST(AutoAttach, NameRoundTrip) {
  EXPECT_EQ(auto_entry_name(kUuid), std::string("envcrypt-") + kUuid);
  EXPECT_EQ(uuid_of_auto_name(auto_entry_name(kUuid)), std::optional<std::string>(kUuid));
}

TEST(AutoAttach, OnlyCanonicalUuidNamesAreAutoNames) {
  EXPECT_FALSE(uuid_of_auto_name("data"));
  EXPECT_FALSE(uuid_of_auto_name("envcrypt-"));
  EXPECT_FALSE(uuid_of_auto_name("envcrypt-0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"));
  EXPECT_FALSE(uuid_of_auto_name("envcrypt-0f1e2d3c4b5a697887-96a5b4c3d2e1f0xx"));
  EXPECT_FALSE(uuid_of_auto_name(std::string("envcrypt-") + kUuid + "0"));
  EXPECT_FALSE(uuid_of_auto_name(std::string("xenvcrypt-") + kUuid));
}

TEST(AutoAttach, EntryFindsTheDiskByUuidAndNeedsTheNetworkForKmip) {
  const TabEntry local = auto_entry(kUuid, "local://local-1/1234");
  EXPECT_EQ(local.name, std::string("envcrypt-") + kUuid);
  EXPECT_EQ(local.uuid, kUuid);
  EXPECT_TRUE(local.device_path.empty());
  EXPECT_EQ(local.device_spec(), std::string("UUID=") + kUuid);
  EXPECT_FALSE(local.needs_network());
  EXPECT_FALSE(local.nofail);
  EXPECT_FALSE(local.noauto);
  EXPECT_TRUE(auto_entry(kUuid, "kmip://kms.example:5696/42").remote_kms);
}

TEST(AutoAttach, AddsOnlyUnlistedAutoNames) {
  std::vector<TabEntry> table(1);
  table[0].name = "data";
  table[0].device_path = "/dev/vdb";
  const std::string listed_auto = std::string("envcrypt-") + kUuid;
  const std::string unlisted_auto = "envcrypt-00000000-0000-0000-0000-000000000001";
  std::vector<TabEntry> with_listed = table;
  with_listed.push_back(auto_entry(kUuid, ""));

  add_auto_entries(with_listed, {"data", "other", listed_auto, unlisted_auto});
  ASSERT_EQ(with_listed.size(), 3u);
  EXPECT_EQ(with_listed[2].name, unlisted_auto);
  EXPECT_EQ(with_listed[2].uuid, "00000000-0000-0000-0000-000000000001");
}

}  // namespace
}  // namespace envcrypt
