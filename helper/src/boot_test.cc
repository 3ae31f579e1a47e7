#include "boot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

namespace envcrypt {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;

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
  // The KMS deadline (retry.h) each attach ran under.
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

  Status attach(const TabEntry& entry, const fs::path& device) override {
    calls.push_back("attach " + entry.name + " " + device.string());
    attach_deadlines.push_back(DeadlineScope::current());
    const milliseconds started = clock;
    clock += attach_cost;
    if (auto down = kms_down_until.find(device);
        down != kms_down_until.end() && started < down->second) {
      if (const auto deadline = DeadlineScope::current();
          before_kms > milliseconds(0) && deadline &&
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

constexpr const char* kUuidA = "aaaaaaaa-0000-4000-8000-000000000001";
constexpr const char* kUuidB = "bbbbbbbb-0000-4000-8000-000000000002";
constexpr const char* kUuidC = "cccccccc-0000-4000-8000-000000000003";
constexpr const char* kUuidD = "dddddddd-0000-4000-8000-000000000004";

std::vector<TabEntry> table(const std::string& text) {
  auto parsed = parse_envcrypttab(text, "/etc/envcrypttab");
  EXPECT_TRUE(parsed.skipped.empty()) << parsed.skipped.front().message();
  return parsed.entries;
}

const DiskResult& disk(const BootReport& report, const std::string& name) {
  for (const DiskResult& d : report.disks) {
    if (d.name == name) {
      return d;
    }
  }
  ADD_FAILURE() << "no result for " << name;
  static const DiskResult none;
  return none;
}

TEST(AttachAll, AttachesThreeAndReportsTheOneWhoseKeyIsDisabled) {
  FakeActions fake;
  fake.devices = {
      {"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}, {"/dev/vdd", kUuidC}, {"/dev/vde", kUuidD}};
  fake.attach_errors.emplace("/dev/vdd", Error(ErrorCode::kDenied, "CMK key-1 is Disabled"));
  auto tab = table(std::string("one UUID=") + kUuidA +
                   "\ntwo /dev/vdc\nthree /dev/vdd\nfour /dev/vde discard\n");

  auto report = attach_all(tab, {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "one").outcome, DiskOutcome::kAttached);
  EXPECT_EQ(disk(*report, "one").device, "/dev/vdb");
  EXPECT_EQ(disk(*report, "two").outcome, DiskOutcome::kAttached);
  EXPECT_EQ(disk(*report, "three").outcome, DiskOutcome::kFailed);
  EXPECT_EQ(disk(*report, "three").error->message(), "CMK key-1 is Disabled");
  // The failure does not stop the disk after it.
  EXPECT_EQ(disk(*report, "four").outcome, DiskOutcome::kAttached);
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->name, "three");
  EXPECT_EQ(report->first_failure()->error->code(), ErrorCode::kDenied);
  EXPECT_EQ(report->summary(), "3 attached, 1 failed");
  EXPECT_EQ(fake.mappings.size(), 3U);
}

TEST(AttachAll, MissingNofailDiskDoesNotFailTheRun) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  auto tab =
      table("here /dev/vdb\ngone /dev/vdz nofail\nlost UUID=" + std::string(kUuidB) + " nofail\n");
  auto report = attach_all(tab, {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "gone").outcome, DiskOutcome::kMissing);
  EXPECT_EQ(disk(*report, "lost").outcome, DiskOutcome::kMissing);
  EXPECT_EQ(report->first_failure(), nullptr);
  EXPECT_EQ(report->summary(), "1 attached, 2 missing (2 nofail)");
}

TEST(AttachAll, MissingDiskWithoutNofailFailsTheRun) {
  FakeActions fake;
  auto report = attach_all(table("gone /dev/vdz\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->error->code(), ErrorCode::kNotFound);
}

TEST(AttachAll, LeavesAttachedDisksAlone) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}};
  fake.mappings["one"] = {"/dev/vdb", kUuidA};
  fake.mappings["by-hand"] = {"/dev/vdc", kUuidB};
  auto report = attach_all(table("one /dev/vdb\ntwo /dev/vdc\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "one").outcome, DiskOutcome::kAlreadyAttached);
  EXPECT_EQ(disk(*report, "two").outcome, DiskOutcome::kAlreadyAttached);
  EXPECT_EQ(disk(*report, "two").detail, "/dev/mapper/by-hand");
  EXPECT_TRUE(fake.calls.empty());
  EXPECT_EQ(report->first_failure(), nullptr);
}

TEST(AttachAll, NameTakenByAnotherDiskIsAConflict) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.mappings["one"] = {"/dev/vdx", kUuidB};
  auto report = attach_all(table("one UUID=" + std::string(kUuidA) + "\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "one").outcome, DiskOutcome::kFailed);
  EXPECT_EQ(disk(*report, "one").error->code(), ErrorCode::kConflict);
}

TEST(AttachAll, WaitsForALateDeviceWithinItsTimeout) {
  FakeActions fake;
  fake.late_devices.emplace("/dev/vdb", std::pair{milliseconds(1500), std::string(kUuidA)});
  auto report = attach_all(table("late /dev/vdb x-systemd.device-timeout=3\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "late").outcome, DiskOutcome::kAttached);
  EXPECT_GE(fake.clock, milliseconds(1500));
  EXPECT_LT(fake.clock, milliseconds(3000));
}

TEST(AttachAll, GivesUpOnADeviceAfterItsTimeout) {
  FakeActions fake;
  fake.devices = {{"/dev/vdc", kUuidB}};
  fake.late_devices.emplace("/dev/vdb", std::pair{milliseconds(60000), std::string(kUuidA)});
  auto report =
      attach_all(table("late /dev/vdb x-systemd.device-timeout=2\nnext /dev/vdc\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "late").outcome, DiskOutcome::kMissing);
  EXPECT_GE(disk(*report, "late").elapsed, milliseconds(2000));
  EXPECT_LT(disk(*report, "late").elapsed, milliseconds(2500));
  EXPECT_EQ(disk(*report, "next").outcome, DiskOutcome::kAttached);
}

TEST(AttachAll, DoesNotWaitWithoutATimeout) {
  FakeActions fake;
  auto report = attach_all(table("gone /dev/vdz nofail\n"), {}, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(fake.clock, milliseconds(0));
}

AttachPolicy attach_policy(std::chrono::seconds timeout) {
  AttachPolicy policy;
  policy.timeout = timeout;
  policy.backoff = {milliseconds(500), milliseconds(5000)};
  return policy;
}

std::chrono::steady_clock::time_point at(milliseconds time) {
  return std::chrono::steady_clock::time_point(time);
}

TEST(AttachAll, RetriesAnUnreachableKmsAfterTheOtherDisksUntilItAnswers) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3000));
  auto report = attach_all(table("remote /dev/vdb netdev\nlocal /dev/vdc\n"), {}, fake,
                           attach_policy(seconds(90)));
  ASSERT_TRUE(report.ok());
  // remote fails at 0, local attaches at once; remote again after pauses of
  // 500, 1000 and 2000 ms: at 700, 1800 and 3900, when the KMS is back.
  EXPECT_EQ(fake.calls,
            (std::vector<std::string>{"attach remote /dev/vdb", "attach local /dev/vdc",
                                      "attach remote /dev/vdb", "attach remote /dev/vdb",
                                      "attach remote /dev/vdb"}));
  EXPECT_EQ(disk(*report, "remote").outcome, DiskOutcome::kAttached);
  EXPECT_FALSE(disk(*report, "remote").error.has_value());
  EXPECT_EQ(disk(*report, "remote").attempts, 4U);
  EXPECT_EQ(disk(*report, "remote").elapsed, milliseconds(4000));
  EXPECT_EQ(disk(*report, "local").elapsed, milliseconds(100));
  EXPECT_EQ(fake.clock, milliseconds(4000));
  // Every attempt of remote ran under its deadline, 90 s after its first.
  for (std::size_t i : {0U, 2U, 3U, 4U}) {
    EXPECT_EQ(fake.attach_deadlines.at(i), at(milliseconds(90000))) << "attempt " << i;
  }
  EXPECT_EQ(report->first_failure(), nullptr);
}

TEST(AttachAll, GivesUpOnAnUnreachableKmsExactlyAtTheDeadline) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3600000));
  auto report = attach_all(table("remote /dev/vdb netdev,nofail\nlocal /dev/vdc\n"), {}, fake,
                           attach_policy(seconds(10)));
  ASSERT_TRUE(report.ok());
  const DiskResult& remote = disk(*report, "remote");
  EXPECT_EQ(remote.outcome, DiskOutcome::kFailed);
  EXPECT_EQ(remote.error->code(), ErrorCode::kKmsUnreachable);
  // Attempts at 0, 700, 1800, 3900 and 8000; the last pause is cut to the
  // deadline at 10 s, where it gives up without starting another.
  EXPECT_EQ(remote.attempts, 5U);
  EXPECT_EQ(remote.elapsed, milliseconds(10000));
  EXPECT_EQ(fake.clock, milliseconds(10000));
  EXPECT_EQ(remote.error->message(),
            "kmip://kms.example:5696: connect: Connection refused (gave up at the attach deadline "
            "after 5 attempts in 10.00 s; [boot] attach_timeout_seconds = 10)");
  EXPECT_EQ(disk(*report, "local").outcome, DiskOutcome::kAttached);
  // nofail: the run does not fail.
  EXPECT_EQ(report->first_failure(), nullptr);
  EXPECT_EQ(report->summary(), "1 attached, 1 failed (1 nofail)");
}

// Seen in a guest under load: the last retry began a few milliseconds
// before the deadline, its KMS call found the deadline passed, and the
// disk's error became "not tried before the deadline" instead of the
// server's reason.  No retry starts in the last second now.
TEST(AttachAll, NoRetryStartsInTheLastSecondSoTheReasonIsTheServers) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3600000));
  fake.before_kms = milliseconds(150);
  // Attempts at 0, 600, 1700 and 3800; the next would start at 7900, 100 ms
  // before the deadline, and reach its KMS call 50 ms after it.
  auto report = attach_all(table("remote /dev/vdb netdev\n"), {}, fake, attach_policy(seconds(8)));
  ASSERT_TRUE(report.ok());
  const DiskResult& remote = disk(*report, "remote");
  EXPECT_EQ(remote.attempts, 4U);
  EXPECT_EQ(fake.calls.size(), 4U);
  EXPECT_EQ(remote.elapsed, milliseconds(8000));
  EXPECT_EQ(fake.clock, milliseconds(8000));
  EXPECT_EQ(remote.error->message(),
            "kmip://kms.example:5696: connect: Connection refused (gave up at the attach deadline "
            "after 4 attempts in 8.00 s; [boot] attach_timeout_seconds = 8)");
}

TEST(AttachAll, UnreachableKmsWithoutNofailFailsTheRunWithExitCode7) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3600000));
  auto report = attach_all(table("remote /dev/vdb netdev\n"), {}, fake, attach_policy(seconds(2)));
  ASSERT_TRUE(report.ok());
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->error->exit_code(), 7);
  EXPECT_EQ(fake.clock, milliseconds(2000));
}

TEST(AttachAll, AFirstAttemptThatOutlastsTheDeadlineIsTheOnlyOne) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3600000));
  fake.attach_cost = milliseconds(7000);
  auto report = attach_all(table("remote /dev/vdb netdev\n"), {}, fake, attach_policy(seconds(5)));
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(fake.calls.size(), 1U);
  EXPECT_EQ(disk(*report, "remote").error->message(),
            "kmip://kms.example:5696: connect: Connection refused (gave up at the attach deadline "
            "after 1 attempt in 7.00 s; [boot] attach_timeout_seconds = 5)");
}

TEST(AttachAll, ADisabledKeyOrABadHeaderFailsAtOnceWithoutRetrying) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}};
  fake.attach_errors.emplace("/dev/vdb", Error(ErrorCode::kDenied, "CMK key-1 is Disabled"));
  fake.attach_errors.emplace("/dev/vdc", Error(ErrorCode::kCorruptHeader, "no valid header"));
  auto report =
      attach_all(table("off /dev/vdb\nbad /dev/vdc\n"), {}, fake, attach_policy(seconds(90)));
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(fake.calls.size(), 2U);
  EXPECT_EQ(fake.clock, milliseconds(200));
  EXPECT_EQ(disk(*report, "off").attempts, 1U);
  EXPECT_EQ(disk(*report, "off").error->message(), "CMK key-1 is Disabled");
  EXPECT_EQ(disk(*report, "bad").error->code(), ErrorCode::kCorruptHeader);
}

TEST(AttachAll, ZeroAttachTimeoutMeansOneAttemptWithoutADeadline) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.kms_down_until.emplace("/dev/vdb", milliseconds(3600000));
  auto report = attach_all(table("remote /dev/vdb\n"), {}, fake, attach_policy(seconds(0)));
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(disk(*report, "remote").attempts, 1U);
  EXPECT_EQ(disk(*report, "remote").error->message(),
            "kmip://kms.example:5696: connect: Connection refused");
  EXPECT_EQ(fake.attach_deadlines,
            (std::vector<std::optional<std::chrono::steady_clock::time_point>>{std::nullopt}));
}

TEST(AttachAll, NoautoOnlyWhenNamed) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}, {"/dev/vdc", kUuidB}};
  auto tab = table("auto /dev/vdb\nmanual /dev/vdc noauto\n");
  auto all = attach_all(tab, {}, fake);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->disks.size(), 1U);
  EXPECT_EQ(all->disks[0].name, "auto");

  BootSelection named;
  named.names = {"manual"};
  auto one = attach_all(tab, named, fake);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->disks.size(), 1U);
  EXPECT_EQ(one->disks[0].outcome, DiskOutcome::kAttached);

  named.names = {"nonesuch"};
  auto bad = attach_all(tab, named, fake);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(bad.error().message(), "no entry named 'nonesuch' in the table");
}

TEST(AttachAll, DeviceSelectionUsesTheDeviceUdevGave) {
  FakeActions fake;
  fake.devices = {{"/dev/loop3", kUuidA}, {"/dev/dm-7", kUuidA}};
  fake.links = {"/dev/disk/by-id/wwn-1"};
  auto tab = table("byuuid UUID=" + std::string(kUuidA) +
                   "\nbylink /dev/disk/by-id/wwn-1\nother /dev/vdq\n");
  BootSelection selection;
  selection.device = "/dev/dm-7";
  auto report = attach_all(tab, selection, fake);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->disks.size(), 2U);
  EXPECT_EQ(fake.calls, std::vector<std::string>{"attach byuuid /dev/dm-7"});
  // The second entry names the same device, which is mapped by now.
  EXPECT_EQ(disk(*report, "bylink").outcome, DiskOutcome::kAlreadyAttached);
  EXPECT_EQ(disk(*report, "bylink").detail, "/dev/mapper/byuuid");
}

TEST(EntryNamesDevice, ByUuidPathOrLink) {
  auto tab = table("u UUID=" + std::string(kUuidA) + "\np /dev/vdb\nl /dev/disk/by-id/x\n");
  DeviceIdentity identity{"/dev/vdb", {"/dev/disk/by-id/x"}, kUuidA, ""};
  EXPECT_TRUE(entry_names_device(tab[0], "/dev/vdb", identity));
  EXPECT_TRUE(entry_names_device(tab[1], "/dev/vdb", identity));
  EXPECT_TRUE(entry_names_device(tab[2], "/dev/vdb", identity));
  DeviceIdentity other{"/dev/vdc", {}, kUuidB, ""};
  for (const TabEntry& entry : tab) {
    EXPECT_FALSE(entry_names_device(entry, "/dev/vdc", other)) << entry.name;
  }
}

TEST(DetachAll, ReversesOrderAndReportsBusyDisks) {
  FakeActions fake;
  fake.mappings = {
      {"a", {"/dev/vdb", kUuidA}}, {"b", {"/dev/vdc", kUuidB}}, {"c", {"/dev/vdd", kUuidC}}};
  fake.busy = {"b"};
  BootSelection all;
  all.names = {"a", "b", "c", "d"};
  auto report = detach_all(table("a /dev/vdb\nb /dev/vdc\nc /dev/vdd\nd /dev/vde\n"), all, fake);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(fake.calls, (std::vector<std::string>{"detach c", "detach b", "detach a"}));
  EXPECT_EQ(disk(*report, "d").outcome, DiskOutcome::kNotAttached);
  EXPECT_EQ(disk(*report, "b").outcome, DiskOutcome::kFailed);
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->error->code(), ErrorCode::kConflict);
  EXPECT_EQ(report->summary(), "2 detached, 1 not attached, 1 failed");
}

TEST(EntryForDevice, FirstMatchOrNone) {
  FakeActions fake;
  fake.devices = {{"/dev/loop0", kUuidA}};
  auto tab = table("x /dev/vdb\ny UUID=" + std::string(kUuidA) + "\n");
  auto found = entry_for_device(tab, "/dev/loop0", fake);
  ASSERT_TRUE(found.ok());
  ASSERT_NE(*found, nullptr);
  EXPECT_EQ((*found)->name, "y");
  auto none = entry_for_device(tab, "/dev/loop9", fake);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
}

TEST(AttachAll, ANamedNofailDiskThatIsMissingFailsTheRun) {
  // The attach unit runs "attach-all --name <name>": a nofail disk's unit
  // must fail visibly (systemctl --failed), the boot need not wait for it.
  FakeActions fake;
  BootSelection named;
  named.names = {"gone"};
  auto report = attach_all(table("gone /dev/vdz nofail\n"), named, fake);
  ASSERT_TRUE(report.ok());
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->error->code(), ErrorCode::kNotFound);
  EXPECT_FALSE(report->disks[0].nofail);
  EXPECT_EQ(report->summary(), "1 missing");
}

TEST(AttachAll, ANamedNofailDiskThatFailsFailsTheRun) {
  FakeActions fake;
  fake.devices = {{"/dev/vdb", kUuidA}};
  fake.attach_errors.emplace("/dev/vdb", Error(ErrorCode::kDenied, "CMK is Disabled"));
  BootSelection named;
  named.names = {"off"};
  auto report = attach_all(table("off /dev/vdb nofail\n"), named, fake);
  ASSERT_TRUE(report.ok());
  ASSERT_NE(report->first_failure(), nullptr);
  EXPECT_EQ(report->first_failure()->error->code(), ErrorCode::kDenied);
}

TEST(SystemdEscape, MatchesSystemdEscape) {
  // Expected values from systemd-escape(1).
  EXPECT_EQ(systemd_escape("a-b+c.d", false), "a\\x2db\\x2bc.d");
  EXPECT_EQ(systemd_escape(".hidden", false), "\\x2ehidden");
  EXPECT_EQ(systemd_escape("/dev/mapper/data-1", true), "dev-mapper-data\\x2d1");
  EXPECT_EQ(systemd_escape("/dev//vdb/", true), "dev-vdb");
  EXPECT_EQ(systemd_escape("/", true), "-");
  EXPECT_EQ(attach_unit_name("data-1"), "envcrypt-attach@data\\x2d1.service");
}

// What the real systemd-escape prints for `args`, or nullopt without it.
std::optional<std::string> run_systemd_escape(const std::vector<std::string>& args) {
  constexpr const char* kBinary = "/usr/bin/systemd-escape";
  if (::access(kBinary, X_OK) != 0) {
    return std::nullopt;
  }
  std::string command = kBinary;
  for (const std::string& arg : args) {
    std::string quoted = "'";
    for (const char c : arg) {
      quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    command += " " + quoted + "'";
  }
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) {
    return std::nullopt;
  }
  std::string out;
  std::array<char, 256> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe.get()) != nullptr) {
    out += buffer.data();
  }
  if (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  return out;
}

// Every kind of name envcrypttab allows (letters, digits, . _ + -, a
// leading '.') and, for the escaping itself, bytes it refuses (blanks, '\',
// '/', UTF-8), checked against systemd-escape(1), so the unit udev's
// SYSTEMD_WANTS names is the unit the generator configured.
TEST(SystemdEscape, AgreesWithTheRealSystemdEscape) {
  const std::vector<std::string> names = {"data",
                                          "data-one",
                                          "a.b",
                                          ".hidden",
                                          "..x",
                                          "x.",
                                          "_under",
                                          "a+b",
                                          "A9_z.+-",
                                          "a--b",
                                          "envcrypt-4f0c6d8e-0d1a-4c55",
                                          "with space",
                                          "back\\slash",
                                          "caf\xc3\xa9",
                                          "tab\there",
                                          "colon:ok",
                                          "at@sign",
                                          std::string(86, 'n')};
  if (!run_systemd_escape({"probe"})) {
    GTEST_SKIP() << "/usr/bin/systemd-escape is not installed";
  }
  for (const std::string& name : names) {
    EXPECT_EQ(attach_unit_name(name),
              run_systemd_escape({"--template=envcrypt-attach@.service", name}).value())
        << name;
    EXPECT_EQ(systemd_escape("/dev/mapper/" + name, true),
              run_systemd_escape({"--path", "/dev/mapper/" + name}).value())
        << name;
  }
}

constexpr const char* kHeaderComment = "# Generated by envcrypt-generator from /etc/envcrypttab:";

GeneratorSettings settings_with_keystore() {
  GeneratorSettings settings;
  settings.kms_paths = {"/var/lib/envcrypt/kms", "/etc/envcrypt/root.key"};
  settings.attach_timeout = seconds(90);
  return settings;
}

TEST(GenerateUnits, ALocalDiskIsRequiredBoundAndOrderedBeforeItsBlockdevTarget) {
  auto files = generate_units(table("data-1 /dev/vdb\n"), "/etc/envcrypttab", "/lib/systemd/system",
                              settings_with_keystore());
  EXPECT_EQ(files.at("envcrypt-attach@data\\x2d1.service.d/50-envcrypttab.conf").contents,
            std::string(kHeaderComment) +
                "1\n"
                "[Unit]\n"
                "SourcePath=/etc/envcrypttab\n"
                "Before=blockdev@dev-mapper-data\\x2d1.target\n"
                "Wants=blockdev@dev-mapper-data\\x2d1.target\n"
                "Before=envcrypt.target\n"
                "BindsTo=dev-vdb.device\n"
                "After=dev-vdb.device\n"
                "RequiresMountsFor=/var/lib/envcrypt/kms\n"
                "RequiresMountsFor=/etc/envcrypt/root.key\n"
                "\n"
                "[Service]\n"
                "TimeoutStartSec=180\n");
  // 90 s for the device, 180 s for the attach, 30 s for udev.
  EXPECT_EQ(files.at("dev-mapper-data\\x2d1.device.d/50-envcrypt-mapping-timeout.conf").contents,
            std::string(kHeaderComment) + "1\n[Unit]\nJobTimeoutSec=300\n");
  EXPECT_FALSE(files.contains("dev-vdb.device.d/50-envcrypt-timeout.conf"));
  const fs::path template_unit = "/lib/systemd/system/envcrypt-attach@.service";
  EXPECT_EQ(files.at("envcrypt.target.requires/envcrypt-attach@data\\x2d1.service").symlink_to,
            template_unit);
  EXPECT_EQ(files.at("dev-mapper-data\\x2d1.device.requires/envcrypt-attach@data\\x2d1.service")
                .symlink_to,
            template_unit);
  EXPECT_EQ(files.at("sysinit.target.wants/envcrypt.target").symlink_to,
            fs::path("/lib/systemd/system/envcrypt.target"));
  EXPECT_EQ(files.size(), 5U);
}

TEST(GenerateUnits, ANofailDiskIsOnlyWantedAndDoesNotHoldUpTheBoot) {
  auto files = generate_units(table("spare UUID=" + std::string(kUuidA) + " nofail\n"),
                              "/etc/envcrypttab", "/lib/systemd/system", {});
  EXPECT_EQ(files.at("envcrypt-attach@spare.service.d/50-envcrypttab.conf").contents,
            std::string(kHeaderComment) +
                "1\n"
                "[Unit]\n"
                "SourcePath=/etc/envcrypttab\n"
                "Before=blockdev@dev-mapper-spare.target\n"
                "Wants=blockdev@dev-mapper-spare.target\n"
                "Wants=dev-disk-by\\x2denvcrypt\\x2duuid-aaaaaaaa\\x2d0000\\x2d4000\\x2d8000\\x2d"
                "000000000001.device\n"
                "After=dev-disk-by\\x2denvcrypt\\x2duuid-aaaaaaaa\\x2d0000\\x2d4000\\x2d8000\\x2d"
                "000000000001.device\n"
                "\n"
                "[Service]\n"
                "TimeoutStartSec=180\n");
  EXPECT_TRUE(files.contains("envcrypt.target.wants/envcrypt-attach@spare.service"));
  EXPECT_FALSE(files.contains("envcrypt.target.requires/envcrypt-attach@spare.service"));
}

// Issue 18: ordered after its device unit, an absent nofail disk's unit
// waited for the device job (JobRunningTimeoutSec=, the device timeout) and
// then attach-all waited the same time again.  Now only attach-all waits.
TEST(GenerateUnits, ANofailDiskWithADeviceTimeoutWaitsForItsDeviceInAttachAllOnly) {
  const auto entries =
      table("spare UUID=" + std::string(kUuidA) + " nofail,x-systemd.device-timeout=60s\n");
  auto files = generate_units(entries, "/etc/envcrypttab", "/lib/systemd/system", {});
  EXPECT_EQ(files.at("envcrypt-attach@spare.service.d/50-envcrypttab.conf").contents,
            std::string(kHeaderComment) +
                "1\n"
                "[Unit]\n"
                "SourcePath=/etc/envcrypttab\n"
                "Before=blockdev@dev-mapper-spare.target\n"
                "Wants=blockdev@dev-mapper-spare.target\n"
                "\n"
                "[Service]\n"
                "TimeoutStartSec=240\n");
  EXPECT_TRUE(files.contains("envcrypt.target.wants/envcrypt-attach@spare.service"));
  // The unit's attach-all: the whole device timeout, once, then "missing".
  FakeActions fake;
  BootSelection named;
  named.names = {"spare"};
  auto report = attach_all(entries, named, fake);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->disks.size(), 1U);
  EXPECT_EQ(report->disks[0].outcome, DiskOutcome::kMissing);
  EXPECT_EQ(fake.clock, seconds(60));
}

TEST(GenerateUnits, NetdevIsTheDevicesRemoteKmsTheKeyServers) {
  auto files = generate_units(table("nbd /dev/nbd0 _netdev,x-systemd.device-timeout=1500ms\n"
                                    "kmip /dev/vdc remote-kms,x-systemd.device-timeout=2min\n"),
                              "/etc/envcrypttab", "/lib/systemd/system", {});
  EXPECT_EQ(files.at("envcrypt-attach@nbd.service.d/50-envcrypttab.conf").contents,
            std::string(kHeaderComment) +
                "1\n"
                "[Unit]\n"
                "SourcePath=/etc/envcrypttab\n"
                "Before=blockdev@dev-mapper-nbd.target\n"
                "Wants=blockdev@dev-mapper-nbd.target\n"
                "Before=envcrypt-remote.target\n"
                "BindsTo=dev-nbd0.device\n"
                "After=dev-nbd0.device\n"
                "After=network-online.target\n"
                "Wants=network-online.target\n"
                "After=remote-fs-pre.target\n"
                "Wants=remote-fs-pre.target\n"
                "\n"
                "[Service]\n"
                "TimeoutStartSec=181500ms\n");
  EXPECT_EQ(files.at("dev-nbd0.device.d/50-envcrypt-timeout.conf").contents,
            std::string(kHeaderComment) + "1\n[Unit]\nJobRunningTimeoutSec=1500ms\n");
  const auto& kmip = files.at("envcrypt-attach@kmip.service.d/50-envcrypttab.conf").contents;
  EXPECT_NE(kmip.find("\nAfter=network-online.target\nWants=network-online.target\n"
                      "Before=remote-fs-pre.target\n"),
            std::string::npos)
      << kmip;
  // Only a device on the network pulls remote-fs-pre.target in.
  EXPECT_EQ(kmip.find("Wants=remote-fs-pre.target"), std::string::npos) << kmip;
  EXPECT_NE(kmip.find("\nTimeoutStartSec=300\n"), std::string::npos) << kmip;
  // 2 min for the device, 300 s for the attach, 30 s for udev.
  EXPECT_EQ(files.at("dev-mapper-kmip.device.d/50-envcrypt-mapping-timeout.conf").contents,
            std::string(kHeaderComment) + "2\n[Unit]\nJobTimeoutSec=450\n");
  EXPECT_TRUE(files.contains("envcrypt-remote.target.requires/envcrypt-attach@nbd.service"));
  EXPECT_TRUE(files.contains("envcrypt-remote.target.requires/envcrypt-attach@kmip.service"));
  EXPECT_TRUE(files.contains("remote-fs.target.wants/envcrypt-remote.target"));
  EXPECT_FALSE(files.contains("sysinit.target.wants/envcrypt.target"));
}

TEST(GenerateUnits, AnImageFileAndADetachedHeaderNeedTheirMounts) {
  GeneratorSettings settings = settings_with_keystore();
  settings.attach_timeout = seconds(30);
  auto files =
      generate_units(table("img /srv/disks/100%\\x20.img noauto,header=/srv/hdr/it's.hdr\n"),
                     "/etc/envcrypttab", "/lib/systemd/system", settings);
  EXPECT_EQ(files.at("envcrypt-attach@img.service.d/50-envcrypttab.conf").contents,
            std::string(kHeaderComment) +
                "1\n"
                "[Unit]\n"
                "SourcePath=/etc/envcrypttab\n"
                "Before=blockdev@dev-mapper-img.target\n"
                "Wants=blockdev@dev-mapper-img.target\n"
                "Before=envcrypt.target\n"
                "Wants=modprobe@loop.service\n"
                "After=modprobe@loop.service\n"
                "RequiresMountsFor=/srv/disks/100%%\\\\x20.img\n"
                "RequiresMountsFor=/srv/hdr/it\\'s.hdr\n"
                "RequiresMountsFor=/var/lib/envcrypt/kms\n"
                "RequiresMountsFor=/etc/envcrypt/root.key\n"
                "\n"
                "[Service]\n"
                "TimeoutStartSec=120\n");
  // No device to wait for: 120 s for the attach, 30 s for udev.
  EXPECT_EQ(files.at("dev-mapper-img.device.d/50-envcrypt-mapping-timeout.conf").contents,
            std::string(kHeaderComment) + "1\n[Unit]\nJobTimeoutSec=150\n");
  // noauto: only a use of /dev/mapper/img pulls it in.
  EXPECT_TRUE(files.contains("dev-mapper-img.device.requires/envcrypt-attach@img.service"));
  EXPECT_FALSE(files.contains("envcrypt.target.requires/envcrypt-attach@img.service"));
  EXPECT_FALSE(files.contains("sysinit.target.wants/envcrypt.target"));
}

TEST(UnitFileWord, EscapesWhatSystemdUnquotesOrExpands) {
  EXPECT_EQ(unit_file_word("/plain/path"), "/plain/path");
  EXPECT_EQ(unit_file_word("/a%b"), "/a%%b");
  EXPECT_EQ(unit_file_word("/a\\x2db"), "/a\\\\x2db");
  EXPECT_EQ(unit_file_word("/\"q'"), "/\\\"q\\'");
}

TEST(BootSwitch, EnvcryptNoOnTheKernelCommandLineTurnsAttachingOff) {
  std::ostringstream err;
  EXPECT_TRUE(boot_attach_enabled("BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet", false, err));
  EXPECT_FALSE(boot_attach_enabled("root=/dev/vda1 envcrypt=no quiet", false, err));
  EXPECT_FALSE(boot_attach_enabled("envcrypt=0", false, err));
  EXPECT_FALSE(boot_attach_enabled("envcrypt=OFF", false, err));
  EXPECT_TRUE(boot_attach_enabled("envcrypt=no envcrypt=yes", false, err));
  EXPECT_TRUE(boot_attach_enabled("envcrypt=no envcrypt", false, err));
  EXPECT_TRUE(boot_attach_enabled("xenvcrypt=no envcrypt.x=no", false, err));
  EXPECT_TRUE(boot_attach_enabled("foo=\"envcrypt=no bar\"", false, err));
  EXPECT_EQ(err.str(), "");
  // rd.envcrypt= is the initramfs's; envcrypt= applies in both.
  EXPECT_TRUE(boot_attach_enabled("rd.envcrypt=no", false, err));
  EXPECT_FALSE(boot_attach_enabled("rd.envcrypt=no", true, err));
  EXPECT_FALSE(boot_attach_enabled("envcrypt=no", true, err));
  EXPECT_EQ(err.str(), "");
}

TEST(BootSwitch, AValueThatIsNoBooleanIsWarnedAboutAndIgnored) {
  std::ostringstream err;
  EXPECT_TRUE(boot_attach_enabled("envcrypt=nope\x1b", false, err));
  EXPECT_FALSE(boot_attach_enabled("envcrypt=no envcrypt=maybe", false, err));
  EXPECT_EQ(err.str(),
            "envcryptctl: warning: kernel command line: envcrypt=nope\\x1b is not a boolean "
            "(yes/no), ignored\n"
            "envcryptctl: warning: kernel command line: envcrypt=maybe is not a boolean "
            "(yes/no), ignored\n");
}

TEST(BootSwitch, ReadsTheCommandLineFileTestsName) {
  const fs::path file = fs::path(::testing::TempDir()) / ("cmdline-" + std::to_string(::getpid()));
  std::ofstream(file) << "root=/dev/vda1 envcrypt=no\n";
  ::setenv("ENVCRYPT_CMDLINE", file.c_str(), 1);
  std::ostringstream err;
  EXPECT_FALSE(boot_attach_enabled_now(err));
  std::ofstream(file) << "root=/dev/vda1\n";
  EXPECT_TRUE(boot_attach_enabled_now(err));
  ::unsetenv("ENVCRYPT_CMDLINE");
  fs::remove(file);
}

TEST(GenerateUnits, EmptyTableWritesNothing) {
  EXPECT_TRUE(generate_units({}, "/etc/envcrypttab", "/lib/systemd/system").empty());
}

}  // namespace
}  // namespace envcrypt
