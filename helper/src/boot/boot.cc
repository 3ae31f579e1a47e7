#include "boot/boot.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "device/blockdev.h"
#include "header/header.h"
#include "util/file_io.h"
#include "util/printable.h"
#include "volume/diagnostics.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;

constexpr milliseconds kPollInterval{250};

std::string read_sysfs(const fs::path& path) {
  std::ifstream in(path);
  std::string value;
  std::getline(in, value);
  return value;
}

// A device another device is built on (a loop device under a dm-linear, the
// origin under dm-snapshot) is not the one to map: its holder is.
bool has_holders(const fs::path& sys_block) {
  std::error_code ec;
  return fs::exists(sys_block / "holders", ec) && !fs::is_empty(sys_block / "holders", ec);
}

// /sys/class/block/<kernel name> of a /dev node.
fs::path sys_block_of(const fs::path& device) {
  std::error_code ec;
  return fs::path("/sys/class/block") / fs::canonical(device, ec).filename();
}

bool usable_block_device(const fs::path& sys_block) {
  // Suspended device-mapper devices would block a read; empty loop devices
  // have nothing to read.
  if (read_sysfs(sys_block / "dm" / "suspended") == "1") {
    return false;
  }
  return read_sysfs(sys_block / "size") != "0" && !has_holders(sys_block);
}

class SystemBootActions : public BootActions {
 public:
  explicit SystemBootActions(std::function<Result<KmsRegistry*>()> kms) : kms_(std::move(kms)) {}

  Result<fs::path> resolve(const TabEntry& entry) override {
    std::error_code ec;
    if (entry.uuid.empty()) {
      if (!fs::exists(entry.device_path, ec)) {
        return Error(ErrorCode::kNotFound, entry.device_path.string() + " does not exist");
      }
      // An unbound loop device or an empty drive has a node but no disk yet.
      if (fs::is_block_file(entry.device_path, ec) &&
          read_sysfs(sys_block_of(entry.device_path) / "size") == "0") {
        return Error(ErrorCode::kNotFound, entry.device_path.string() + " has no medium (size 0)");
      }
      return entry.device_path;
    }
    // udev's link, unless it points at a device that others are built on.
    const fs::path link = fs::path(kUuidLinkDir) / entry.uuid;
    if (fs::exists(link, ec) && usable_block_device(sys_block_of(link))) {
      return fs::canonical(link, ec);
    }
    return scan_for_uuid(entry.uuid);
  }

  Result<DeviceIdentity> identify(const fs::path& device) override {
    DeviceIdentity identity;
    std::error_code ec;
    identity.canonical = fs::weakly_canonical(device, ec);
    // udev passes the links it is creating for the device in DEVLINKS.
    if (const char* links = std::getenv("DEVLINKS"); links != nullptr) {
      std::istringstream in(links);
      for (std::string link; in >> link;) {
        identity.links.emplace_back(link);
      }
    }
    auto header = read_volume_header(device, std::nullopt);
    if (header.ok()) {
      identity.uuid = uuid_to_string(header->header.uuid);
      identity.cmk_uri = header->header.wrapped.cmk_uri;
    }
    return identity;
  }

  Result<std::string> mapping_uuid(const std::string& name) override {
    ENVCRYPT_ASSIGN_OR_RETURN(auto mappings, volume_status(name));
    return mappings.front().disk_uuid;
  }

  Result<std::optional<std::string>> mapping_of(const fs::path& device) override {
    std::error_code ec;
    if (!fs::is_block_file(device, ec)) {
      return std::optional<std::string>();  // an image: attach maps a new loop device
    }
    ENVCRYPT_ASSIGN_OR_RETURN(std::string devnum, device_number(device));
    ENVCRYPT_ASSIGN_OR_RETURN(const auto user, mapping_using(devnum));
    return user ? std::optional<std::string>(user->name) : std::optional<std::string>();
  }

  Status attach(const TabEntry& entry, const fs::path& device,
                const CallContext& kms_call) override {
    AttachOptions options;
    options.kms_call = kms_call;
    options.device = device;
    options.name = entry.name;
    options.header_file = entry.header_file;
    options.read_only = entry.read_only;
    options.allow_discards = entry.discard;
    ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, kms_());
    // attach-all's report goes to stdout; the diagnostics line to stderr.
    ENVCRYPT_TRY(attach_with_diagnostics(*kms, options, std::cerr));
    return OkStatus();
  }

  Status detach(const std::string& name) override { return detach_volume(name); }

  std::chrono::steady_clock::time_point now() override { return std::chrono::steady_clock::now(); }

  void sleep(milliseconds duration) override { std::this_thread::sleep_for(duration); }

 private:
  Result<fs::path> scan_for_uuid(const std::string& uuid) {
    std::vector<fs::path> found;
    std::error_code ec;
    for (const auto& sys : fs::directory_iterator("/sys/class/block", ec)) {
      if (!usable_block_device(sys.path())) {
        continue;
      }
      const fs::path node = fs::path("/dev") / sys.path().filename();
      auto header = read_volume_header(node, std::nullopt);
      if (header.ok() && uuid_to_string(header->header.uuid) == uuid) {
        found.push_back(node);
      }
    }
    if (found.empty()) {
      return Error(ErrorCode::kNotFound, "no device carries envcrypt uuid " + uuid);
    }
    if (found.size() > 1) {
      std::string names;
      for (const auto& node : found) {
        names += (names.empty() ? "" : ", ") + node.string();
      }
      return Error(ErrorCode::kConflict, "envcrypt uuid " + uuid + " is on " + names +
                                             " (a snapshot or copy?): name the device by path");
    }
    return found.front();
  }

  std::function<Result<KmsRegistry*>()> kms_;
};

Result<std::vector<const TabEntry*>> select_entries(const std::vector<TabEntry>& table,
                                                    const BootSelection& selection,
                                                    BootActions& actions) {
  std::vector<const TabEntry*> chosen;
  for (const std::string& name : selection.names) {
    auto it = std::find_if(table.begin(), table.end(),
                           [&](const TabEntry& entry) { return entry.name == name; });
    if (it == table.end()) {
      return Error(ErrorCode::kNotFound, "no entry named '" + name + "' in the table");
    }
    chosen.push_back(&*it);
  }
  if (selection.names.empty()) {
    for (const TabEntry& entry : table) {
      if (!entry.noauto) {
        chosen.push_back(&entry);
      }
    }
  }
  if (selection.device) {
    ENVCRYPT_ASSIGN_OR_RETURN(DeviceIdentity identity, actions.identify(*selection.device));
    std::erase_if(chosen, [&](const TabEntry* entry) {
      return !entry_names_device(*entry, *selection.device, identity);
    });
  }
  return chosen;
}

// `excusable`: whether nofail may excuse the disk.  A run that names its
// disks (--name: the attach unit, an operator) was asked for exactly those,
// so their failure is a failure, as a systemd-cryptsetup@ unit of a nofail
// line fails visibly; only a run over the whole table passes over them.
DiskResult start_result(const TabEntry& entry, bool excusable) {
  DiskResult result;
  result.name = entry.name;
  result.device_spec = entry.device_spec();
  result.nofail = entry.nofail && excusable;
  return result;
}

// Waits for the entry's device at most its device timeout.
Result<fs::path> wait_for_device(const TabEntry& entry, BootActions& actions) {
  const auto deadline = actions.now() + entry.device_timeout;
  while (true) {
    auto device = actions.resolve(entry);
    if (device.ok() || device.error().code() != ErrorCode::kNotFound || actions.now() >= deadline) {
      return device;
    }
    actions.sleep(kPollInterval);
  }
}

// BootActions' clock, for retry.h.
class ActionsClock final : public RetryClock {
 public:
  explicit ActionsClock(BootActions& actions) : actions_(actions) {}
  SteadyTime now() override { return actions_.now(); }
  void sleep_for(milliseconds duration) override { actions_.sleep(duration); }

 private:
  BootActions& actions_;
};

// One attach attempt; KMS calls inside it end by `deadline`.
Status attach_by(const TabEntry& entry, const fs::path& device, BootActions& actions,
                 std::optional<SteadyTime> deadline) {
  return actions.attach(entry, device, CallContext{deadline});
}

// A disk whose KMS could not be reached, to be tried again.
struct PendingAttach {
  std::size_t disk;  // in BootReport::disks
  const TabEntry* entry;
  SteadyTime started;   // of the disk's whole run, for its elapsed time
  SteadyTime deadline;  // first attempt + the attach timeout
};

// Attaches, reporting on the way; returns the attach deadline when the
// attach itself was attempted.
std::optional<SteadyTime> attach_one(const TabEntry& entry, const BootSelection& selection,
                                     BootActions& actions, const AttachPolicy& policy,
                                     DiskResult& result) {
  auto fail = [&](DiskOutcome outcome, const Error& error) {
    result.outcome = outcome;
    result.error = error;
  };
  if (auto existing = actions.mapping_uuid(entry.name); existing.ok()) {
    if (!entry.uuid.empty() && *existing != entry.uuid) {
      fail(DiskOutcome::kFailed,
           Error(ErrorCode::kConflict, "a mapping named " + entry.name +
                                           " exists for another disk (uuid " + *existing + ")"));
      return std::nullopt;
    }
    result.outcome = DiskOutcome::kAlreadyAttached;
    result.detail = "/dev/mapper/" + entry.name;
    return std::nullopt;
  } else if (existing.error().code() != ErrorCode::kNotFound) {
    fail(DiskOutcome::kFailed, existing.error());
    return std::nullopt;
  }

  auto device =
      selection.device ? Result<fs::path>(*selection.device) : wait_for_device(entry, actions);
  if (!device.ok()) {
    fail(device.error().code() == ErrorCode::kNotFound ? DiskOutcome::kMissing
                                                       : DiskOutcome::kFailed,
         device.error());
    return std::nullopt;
  }
  result.device = *device;
  auto mapped_as = actions.mapping_of(*device);
  if (!mapped_as.ok()) {
    fail(DiskOutcome::kFailed, mapped_as.error());
    return std::nullopt;
  }
  if (*mapped_as) {
    result.outcome = DiskOutcome::kAlreadyAttached;
    result.detail = "/dev/mapper/" + **mapped_as;
    return std::nullopt;
  }
  const std::optional<SteadyTime> deadline =
      policy.timeout.count() > 0 ? std::optional(actions.now() + policy.timeout) : std::nullopt;
  result.attempts = 1;
  if (Status attached = attach_by(entry, *device, actions, deadline); !attached.ok()) {
    fail(DiskOutcome::kFailed, attached.error());
    return deadline;
  }
  result.outcome = DiskOutcome::kAttached;
  result.detail = "/dev/mapper/" + entry.name;
  return deadline;
}

// An attempt started this close to its deadline would most likely reach
// no server: its KMS call finds the deadline passed once the device is
// opened and the header read.  Not starting it gives up at the deadline
// instead of after it.
constexpr milliseconds kLastAttemptFloor{1000};

// Tries a pending disk once more if its deadline allows; true when the
// disk is settled: attached, failed for another reason, or out of time.
bool retry_attach(const PendingAttach& pending, BootActions& actions, const AttachPolicy& policy,
                  DiskResult& result) {
  if (const auto left = pending.deadline - actions.now();
      left > milliseconds(0) && left < kLastAttemptFloor) {
    // Given up at the deadline, not before it, with the last real reason.
    actions.sleep(std::chrono::duration_cast<milliseconds>(left));
  }
  if (actions.now() < pending.deadline) {
    ++result.attempts;
    const Status attached = attach_by(*pending.entry, result.device, actions, pending.deadline);
    result.elapsed = std::chrono::duration_cast<milliseconds>(actions.now() - pending.started);
    if (attached.ok()) {
      result.outcome = DiskOutcome::kAttached;
      result.error.reset();
      result.detail = "/dev/mapper/" + pending.entry->name;
      return true;
    }
    if (attached.error().code() != ErrorCode::kKmsUnreachable) {
      result.error = attached.error();
      return true;
    }
    if (actions.now() < pending.deadline) {
      result.error = attached.error();
      return false;
    }
    // The deadline cut this attempt short: it says only "out of time" or
    // "not tried before the deadline" (a guest stalled for a second before
    // its KMS call, say).  The earlier, whole attempt's reason is the
    // server's own and the one worth reporting.
  }
  result.elapsed = std::chrono::duration_cast<milliseconds>(actions.now() - pending.started);
  result.error = Error(ErrorCode::kKmsUnreachable,
                       result.error->message() + " (gave up at the attach deadline after " +
                           std::to_string(result.attempts) +
                           (result.attempts == 1 ? " attempt in " : " attempts in ") +
                           duration_text(result.elapsed) + "; [boot] attach_timeout_seconds = " +
                           std::to_string(policy.timeout.count()) + ")");
  return true;
}

// Retries the disks whose KMS was unreachable, all in one round after
// another with backoff between rounds, each until its own deadline.
void retry_unreachable(std::vector<PendingAttach> pending, BootActions& actions,
                       const AttachPolicy& policy, BootReport& report) {
  ActionsClock clock(actions);
  for (unsigned round = 1; !pending.empty(); ++round) {
    const auto earliest = std::min_element(
        pending.begin(), pending.end(),
        [](const PendingAttach& a, const PendingAttach& b) { return a.deadline < b.deadline; });
    pause_before_next_round(clock, earliest->deadline, policy.backoff.after_round(round));
    std::erase_if(pending, [&](const PendingAttach& disk) {
      return retry_attach(disk, actions, policy, report.disks[disk.disk]);
    });
  }
}

}  // namespace

std::string_view to_string(DiskOutcome outcome) {
  switch (outcome) {
    case DiskOutcome::kAttached:
      return "attached";
    case DiskOutcome::kAlreadyAttached:
      return "already attached";
    case DiskOutcome::kDetached:
      return "detached";
    case DiskOutcome::kNotAttached:
      return "not attached";
    case DiskOutcome::kMissing:
      return "missing";
    case DiskOutcome::kFailed:
      return "failed";
  }
  return "unknown";
}

bool DiskResult::counts_as_failure() const {
  return (outcome == DiskOutcome::kFailed || outcome == DiskOutcome::kMissing) && !nofail;
}

std::size_t BootReport::count(DiskOutcome outcome) const {
  return static_cast<std::size_t>(std::count_if(
      disks.begin(), disks.end(), [&](const DiskResult& disk) { return disk.outcome == outcome; }));
}

const DiskResult* BootReport::first_failure() const {
  auto it = std::find_if(disks.begin(), disks.end(),
                         [](const DiskResult& disk) { return disk.counts_as_failure(); });
  return it == disks.end() ? nullptr : &*it;
}

std::string BootReport::summary() const {
  std::string text;
  for (DiskOutcome outcome :
       {DiskOutcome::kAttached, DiskOutcome::kAlreadyAttached, DiskOutcome::kDetached,
        DiskOutcome::kNotAttached, DiskOutcome::kMissing, DiskOutcome::kFailed}) {
    const std::size_t total = count(outcome);
    if (total == 0) {
      continue;
    }
    const auto excused =
        static_cast<std::size_t>(std::count_if(disks.begin(), disks.end(), [&](const auto& disk) {
          return disk.outcome == outcome && disk.nofail;
        }));
    text +=
        (text.empty() ? "" : ", ") + std::to_string(total) + " " + std::string(to_string(outcome));
    if ((outcome == DiskOutcome::kMissing || outcome == DiskOutcome::kFailed) && excused != 0) {
      text += " (" + std::to_string(excused) + " nofail)";
    }
  }
  return text.empty() ? "no disks" : text;
}

bool entry_names_device(const TabEntry& entry, const fs::path& device,
                        const DeviceIdentity& identity) {
  if (!entry.uuid.empty()) {
    return entry.uuid == identity.uuid;
  }
  if (entry.device_path == device || entry.device_path == identity.canonical) {
    return true;
  }
  if (std::find(identity.links.begin(), identity.links.end(), entry.device_path) !=
      identity.links.end()) {
    return true;
  }
  std::error_code ec;
  const fs::path resolved = fs::canonical(entry.device_path, ec);
  return !ec && resolved == identity.canonical;
}

std::unique_ptr<BootActions> system_boot_actions(std::function<Result<KmsRegistry*>()> kms) {
  return std::make_unique<SystemBootActions>(std::move(kms));
}

Result<BootReport> attach_all(const std::vector<TabEntry>& table, const BootSelection& selection,
                              BootActions& actions, const AttachPolicy& policy) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto entries, select_entries(table, selection, actions));
  BootReport report;
  std::vector<PendingAttach> pending;
  for (const TabEntry* entry : entries) {
    DiskResult result = start_result(*entry, selection.names.empty());
    const auto start = actions.now();
    const auto deadline = attach_one(*entry, selection, actions, policy, result);
    result.elapsed = std::chrono::duration_cast<milliseconds>(actions.now() - start);
    // Only an unreachable KMS is worth waiting for; a disabled key or a
    // bad header will not change by waiting.
    if (deadline.has_value() && result.outcome == DiskOutcome::kFailed &&
        result.error->code() == ErrorCode::kKmsUnreachable) {
      pending.push_back({report.disks.size(), entry, start, *deadline});
    }
    report.disks.push_back(std::move(result));
  }
  retry_unreachable(std::move(pending), actions, policy, report);
  return report;
}

Result<BootReport> detach_all(const std::vector<TabEntry>& table, const BootSelection& selection,
                              BootActions& actions) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto entries, select_entries(table, selection, actions));
  BootReport report;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    DiskResult result = start_result(**it, true);
    const auto start = actions.now();
    auto existing = actions.mapping_uuid(result.name);
    if (!existing.ok()) {
      result.outcome = existing.error().code() == ErrorCode::kNotFound ? DiskOutcome::kNotAttached
                                                                       : DiskOutcome::kFailed;
      if (result.outcome == DiskOutcome::kFailed) {
        result.error = existing.error();
      }
    } else if (Status detached = actions.detach(result.name); !detached.ok()) {
      result.outcome = DiskOutcome::kFailed;
      result.error = detached.error();
    } else {
      result.outcome = DiskOutcome::kDetached;
    }
    result.elapsed = std::chrono::duration_cast<milliseconds>(actions.now() - start);
    report.disks.push_back(std::move(result));
  }
  return report;
}

Result<const TabEntry*> entry_for_device(const std::vector<TabEntry>& table, const fs::path& device,
                                         BootActions& actions) {
  ENVCRYPT_ASSIGN_OR_RETURN(DeviceIdentity identity, actions.identify(device));
  for (const TabEntry& entry : table) {
    if (entry_names_device(entry, device, identity)) {
      return &entry;
    }
  }
  return static_cast<const TabEntry*>(nullptr);
}

Status whole_table_status(const Envcrypttab& tab) {
  if (tab.skipped.empty()) {
    return OkStatus();
  }
  return Error(ErrorCode::kUsage, std::to_string(tab.skipped.size()) + " envcrypttab " +
                                      (tab.skipped.size() == 1 ? "line" : "lines") +
                                      " skipped, first " + tab.skipped.front().message());
}

GeneratorSettings generator_settings(const Config& config) {
  GeneratorSettings settings;
  settings.attach_timeout = config.boot.attach_timeout;
  settings.kms_paths = {config.local_dir, config.local_root_key};
  for (const auto& [name, endpoint] : config.kmip_endpoints) {
    settings.kms_paths.insert(settings.kms_paths.end(), {endpoint.ca, endpoint.cert, endpoint.key});
  }
  // The outage cache's entries are read and written by the attach of every
  // enabled disk (Documentation/admin-guide/outage-cache.rst).
  if (!config.outage_cache.disks.empty()) {
    settings.kms_paths.push_back(config.outage_cache.dir);
  }
  return settings;
}

}  // namespace envcrypt
