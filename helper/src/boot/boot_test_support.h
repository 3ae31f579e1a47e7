// Shared by the boot unit tests (boot_test.cc, units_test.cc): a system
// in memory for attach-all, disk uuids, and envcrypttab text as entries.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "boot/boot.h"
#include "config/crypttab.h"

namespace envcrypt::boot_testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// A system of devices and mappings in memory, with a clock that moves only
// when attach-all sleeps.
class FakeActions : public BootActions {
 public:
  // Devices present now, and the envcrypt uuid each carries.
  std::map<fs::path, std::string> devices;
  // Devices that appear once the clock passes the given time.
  std::map<fs::path, std::pair<milliseconds, std::string>> late_devices;
  // Devices whose attach fails, and how.
  std::map<fs::path, Error> attach_errors;
  // Devices whose KMS is unreachable for attaches started before the given time.
  std::map<fs::path, milliseconds> kms_down_until;
  // The KMS deadline each attach ran under.
  std::vector<std::optional<std::chrono::steady_clock::time_point>> attach_deadlines;
  // name -> (device, uuid)
  std::map<std::string, std::pair<fs::path, std::string>> mappings;
  std::set<std::string> busy;   // mappings that refuse to detach
  std::vector<fs::path> links;  // udev's DEVLINKS of the device identified
  std::vector<std::string> calls;
  milliseconds clock{0};
  milliseconds attach_cost{100};
  // Time an attach spends before its KMS call (device, header): a call
  // that then finds its deadline passed reaches no server, as Failover
  // reports it.
  milliseconds before_kms{0};

  Result<fs::path> resolve(const TabEntry& entry) override {
    for (auto it = late_devices.begin(); it != late_devices.end();) {
      if (clock >= it->second.first) {
        devices[it->first] = it->second.second;
        it = late_devices.erase(it);
      } else {
        ++it;
      }
    }
    if (entry.uuid.empty()) {
      if (devices.contains(entry.device_path)) {
        return entry.device_path;
      }
      return Error(ErrorCode::kNotFound, entry.device_path.string() + " does not exist");
    }
    for (const auto& [device, uuid] : devices) {
      if (uuid == entry.uuid) {
        return device;
      }
    }
    return Error(ErrorCode::kNotFound, "no device carries envcrypt uuid " + entry.uuid);
  }

  Result<DeviceIdentity> identify(const fs::path& device) override {
    DeviceIdentity identity;
    identity.canonical = device;
    if (auto it = devices.find(device); it != devices.end()) {
      identity.uuid = it->second;
    }
    identity.links = links;
    return identity;
  }

  Result<std::string> mapping_uuid(const std::string& name) override {
    auto it = mappings.find(name);
    if (it == mappings.end()) {
      return Error(ErrorCode::kNotFound, name + ": no such mapping");
    }
    return it->second.second;
  }

  Result<std::optional<std::string>> mapping_of(const fs::path& device) override {
    for (const auto& [name, mapping] : mappings) {
      if (mapping.first == device) {
        return std::optional<std::string>(name);
      }
    }
    return std::optional<std::string>();
  }

  Status attach(const TabEntry& entry, const fs::path& device,
                const CallContext& kms_call) override {
    calls.push_back("attach " + entry.name + " " + device.string());
    attach_deadlines.push_back(kms_call.deadline);
    const milliseconds started = clock;
    clock += attach_cost;
    if (auto down = kms_down_until.find(device);
        down != kms_down_until.end() && started < down->second) {
      if (const auto& deadline = kms_call.deadline; before_kms > milliseconds(0) && deadline &&
                                                    now() - attach_cost + before_kms >= *deadline) {
        return Error(ErrorCode::kKmsUnreachable,
                     "kmip://kms.example:5696: not tried before the deadline");
      }
      return Error(ErrorCode::kKmsUnreachable,
                   "kmip://kms.example:5696: connect: Connection refused");
    }
    if (auto it = attach_errors.find(device); it != attach_errors.end()) {
      return it->second;
    }
    mappings[entry.name] = {device, devices[device]};
    return OkStatus();
  }

  Status detach(const std::string& name) override {
    calls.push_back("detach " + name);
    if (busy.contains(name)) {
      return Error(ErrorCode::kConflict, name + " is in use");
    }
    mappings.erase(name);
    return OkStatus();
  }

  std::chrono::steady_clock::time_point now() override {
    return std::chrono::steady_clock::time_point(clock);
  }
  void sleep(milliseconds duration) override { clock += duration; }
};

inline constexpr const char* kUuidA = "aaaaaaaa-0000-4000-8000-000000000001";
inline constexpr const char* kUuidB = "bbbbbbbb-0000-4000-8000-000000000002";
inline constexpr const char* kUuidC = "cccccccc-0000-4000-8000-000000000003";
inline constexpr const char* kUuidD = "dddddddd-0000-4000-8000-000000000004";

// The entries of an envcrypttab text; a line it skips fails the test.
inline std::vector<TabEntry> table(const std::string& text) {
  auto parsed = parse_envcrypttab(text, "/etc/envcrypttab");
  EXPECT_TRUE(parsed.skipped.empty()) << parsed.skipped.front().message();
  return parsed.entries;
}

}  // namespace envcrypt::boot_testing
