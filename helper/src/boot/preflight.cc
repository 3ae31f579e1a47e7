#include "boot/preflight.h"

#include <fcntl.h>
#include <sys/utsname.h>

#include <algorithm>
#include <fstream>
#include <memory>

#include "boot/boot.h"
#include "device/blockdev.h"
#include "device/devmapper.h"
#include "header/header.h"
#include "kms/kms.h"
#include "volume/diagnostics.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModuleName = "dm-envcrypt";

// Attached disks: each of our mappings and the device its table names.
Result<std::vector<AttachedDisk>> system_attached() {
  if (!device_mapper_available()) {
    return std::vector<AttachedDisk>{};
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto mappings, volume_status(std::nullopt));
  std::error_code ec;
  std::vector<AttachedDisk> disks;
  for (const MappingStatus& mapping : mappings) {
    const std::string devnum = table_device(mapping.table);
    const fs::path sys = fs::read_symlink("/sys/dev/block/" + devnum, ec);
    disks.push_back({mapping.name, mapping.disk_uuid,
                     ec ? fs::path(devnum) : fs::path("/dev") / sys.filename()});
  }
  return disks;
}

bool module_listed(const fs::path& file) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const std::string path = line.substr(0, line.find(':'));
    if (fs::path(path).filename().string().starts_with(std::string(kModuleName) + ".ko")) {
      return true;
    }
  }
  return false;
}

// Loaded, or known to modprobe (what `modprobe -n dm-envcrypt` looks up).
Status system_module_available() {
  std::error_code ec;
  if (fs::exists("/sys/module/dm_envcrypt", ec)) {
    return OkStatus();
  }
  utsname uts{};
  ::uname(&uts);
  const fs::path dir = fs::path("/lib/modules") / uts.release;
  if (module_listed(dir / "modules.dep") || module_listed(dir / "modules.builtin")) {
    return OkStatus();
  }
  return Error(ErrorCode::kNotFound,
               std::string(kModuleName) + " is not loaded and modprobe cannot find it in " +
                   (dir / "modules.dep").string() + " (install the module: make install, or dkms)");
}

std::string copy_problem(const char* which, const CopyReport& copy) {
  std::string text = std::string(which) + " copy " + std::string(to_string(copy.state));
  return copy.detail.empty() ? text : text + ": " + copy.detail;
}

// Records steps as a DiskCheck proceeds.
class StepLog {
 public:
  explicit StepLog(DiskCheck& check) : check_(check) {}
  void pass(std::string step, std::string detail) {
    check_.steps.push_back({std::move(step), true, std::move(detail), ErrorCode::kInternal});
  }
  void fail(std::string step, const Error& error) {
    check_.steps.push_back({std::move(step), false, error.message(), error.code()});
  }

 private:
  DiskCheck& check_;
};

// kms.h's authorize() for a decrypt by this client's principal, on a client
// that keeps grants (the local KMS).  Nothing is said when this principal
// may not read the key's owner and grants: the unwrap then decides.
std::optional<Status> decrypt_grant(KmsClient& client, KeyGrants& grants, const std::string& cmk,
                                    const KeyInfo& info) {
  KeyAccess access{cmk, "", info.service_key, {}};
  if (!access.service_key) {  // the service key's rule needs neither owner nor
                              // grants
    KeyAdministration* admin = client.administration();
    if (admin == nullptr) {
      return std::nullopt;
    }
    auto details = admin->describe_key_details(cmk);
    auto granted = grants.list_grants(cmk);
    if (!details.ok() || !granted.ok()) {
      return std::nullopt;
    }
    access.owner = details->owner;
    access.grants = std::move(granted).value();
  }
  if (Status decided = authorize(access, grants.principal(), GrantOperation::kDecrypt);
      !decided.ok()) {
    // Preflight's own wording, older than the shared decision (operations.rst).
    return Error(ErrorCode::kDenied,
                 "principal " + grants.principal() + " holds no decrypt grant on " + cmk);
  }
  return OkStatus();
}

std::string grant_detail(const KeyInfo& info) {
  return info.service_key ? "the service key serves every principal of its region"
                          : "this principal may decrypt";
}

// CMK reachable, state, grant, unwrap: each step only when the ones before passed.
void check_key(const DiskHeader& header, KmsRegistry& kms, StepLog& log) {
  const std::string& cmk = header.wrapped.cmk_uri;
  auto backend = kms.for_key(cmk);
  if (!backend.ok()) {
    log.fail("kms", backend.error());
    return;
  }
  KeyAdministration* admin = (*backend)->administration();
  if (admin == nullptr) {
    log.fail("kms", (*backend)->unsupported("describe-key"));
    return;
  }
  auto info = admin->describe_key(cmk);
  if (!info.ok() && info.error().code() != ErrorCode::kDenied) {
    log.fail("kms", info.error());  // unreachable, or the CMK is unknown there
    return;
  }
  KeyGrants* grants = (*backend)->grants();  // only a client that keeps grants decides them here
  if (info.ok()) {
    log.pass("kms", "reachable");
    if (info->state != KeyState::kEnabled) {
      log.fail("state", Error(ErrorCode::kDenied,
                              "CMK " + cmk + " is " + std::string(to_string(info->state))));
      return;
    }
    log.pass("state", "Enabled");
    if (grants != nullptr) {
      if (auto granted = decrypt_grant(**backend, *grants, cmk, *info); granted && !granted->ok()) {
        log.fail("grant", granted->error());
        return;
      } else if (granted) {
        log.pass("grant", grant_detail(*info));
      }
    }
  } else {
    log.pass("kms",
             "reachable (" + info.error().message() + ": the unwrap checks state and grant)");
  }
  auto data_key = unlock(kms, header);  // zeroed when it goes out of scope
  if (!data_key.ok()) {
    const Error& error = data_key.error();
    std::string step = "unwrap";
    if (error.code() == ErrorCode::kDenied && grants != nullptr) {
      step = error.message().find("grant") != std::string::npos ? "grant" : "state";
    }
    log.fail(step, error);
    return;
  }
  log.pass("unwrap", "the data key unwraps and matches the key check value");
}

DiskCheck check_disk(const KnownDisk& disk, KmsRegistry& kms, const Status& module) {
  DiskCheck check{disk, "", "", {}, {}};
  StepLog log(check);
  auto record_module = [&] {
    if (module.ok()) {
      log.pass("module", "dm-envcrypt available");
    } else {
      log.fail("module", module.error());
    }
  };
  if (disk.device.empty()) {
    log.fail("device", disk.device_error.value_or(Error(ErrorCode::kNotFound, "not found")));
    record_module();
    return check;
  }
  log.pass("device", disk.device.string());
  auto selection = read_volume_header(disk.device, disk.header_file);
  if (!selection.ok()) {
    log.fail("header", selection.error());
    record_module();
    return check;
  }
  check.cmk_uri = selection->header.wrapped.cmk_uri;
  check.endpoint = kms_endpoint(kms.config(), check.cmk_uri);
  check.outage_cache =
      system_outage_cache(kms.config()).state(disk.name, uuid_to_string(selection->header.uuid));
  if (selection->degraded()) {
    std::string problem;
    for (const auto& [which, copy] :
         {std::pair{"primary", &selection->primary}, {"secondary", &selection->secondary}}) {
      if (copy->state != CopyState::kValid) {
        problem += (problem.empty() ? "" : "; ") + copy_problem(which, *copy);
      }
    }
    log.fail("header", Error(ErrorCode::kCorrupt,
                             problem + " (attach still works from the other copy; rewrite it "
                                       "with header-restore from a backup)"));
  } else {
    log.pass("header", "both copies valid, sequence " + std::to_string(selection->header.sequence));
  }
  record_module();
  check_key(selection->header, kms, log);
  return check;
}

}  // namespace

PreflightEnvironment system_preflight_environment() {
  std::shared_ptr<BootActions> actions = system_boot_actions(
      []() -> Result<KmsRegistry*> { return Error(ErrorCode::kInternal, "no KMS for resolving"); });
  PreflightEnvironment env;
  env.resolve = [actions](const TabEntry& entry) { return actions->resolve(entry); };
  env.attached = system_attached;
  env.module_available = system_module_available;
  return env;
}

Result<std::vector<KnownDisk>> known_disks(const std::vector<TabEntry>& table,
                                           PreflightEnvironment& env) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto attached, env.attached());
  std::vector<KnownDisk> disks;
  for (const TabEntry& entry : table) {
    KnownDisk disk;
    disk.name = entry.name;
    disk.device_spec = entry.device_spec();
    disk.header_file = entry.header_file;
    disk.nofail = entry.nofail;
    disk.in_table = true;
    auto mapped = std::find_if(attached.begin(), attached.end(),
                               [&](const AttachedDisk& a) { return a.name == entry.name; });
    if (auto device = env.resolve(entry); device.ok()) {
      disk.device = *device;
    } else if (mapped != attached.end()) {
      disk.device = mapped->backing;  // a UUID= scan skips devices a mapping holds
    } else {
      disk.device_error = device.error();
    }
    disks.push_back(std::move(disk));
  }
  for (const AttachedDisk& mapping : attached) {
    std::error_code ec;
    const fs::path backing = fs::weakly_canonical(mapping.backing, ec);
    auto same = std::find_if(disks.begin(), disks.end(), [&](const KnownDisk& disk) {
      std::error_code ignored;
      return disk.name == mapping.name ||
             (!disk.device.empty() && fs::weakly_canonical(disk.device, ignored) == backing);
    });
    if (same != disks.end()) {
      same->attached_as = mapping.name;
      continue;
    }
    KnownDisk disk;
    disk.name = mapping.name;
    disk.device_spec = mapping.backing.string();
    disk.attached_as = mapping.name;
    disk.device = mapping.backing;
    disks.push_back(std::move(disk));
  }
  return disks;
}

const CheckStep* DiskCheck::first_failure() const {
  auto it = std::find_if(steps.begin(), steps.end(), [](const CheckStep& s) { return !s.ok; });
  return it == steps.end() ? nullptr : &*it;
}

bool DiskCheck::counts_as_failure() const { return first_failure() != nullptr && !disk.nofail; }

std::string PreflightReport::summary() const {
  std::size_t ok = 0;
  std::size_t failed = 0;
  std::size_t excused = 0;
  for (const DiskCheck& check : disks) {
    if (check.first_failure() == nullptr) {
      ++ok;
    } else {
      ++failed;
      excused += check.disk.nofail ? 1 : 0;
    }
  }
  if (disks.empty()) {
    return "no disks";
  }
  std::string text = std::to_string(ok) + " ok, " + std::to_string(failed) + " failed";
  return excused == 0 ? text : text + " (" + std::to_string(excused) + " nofail)";
}

const DiskCheck* PreflightReport::first_counted_failure() const {
  auto it = std::find_if(disks.begin(), disks.end(),
                         [](const DiskCheck& check) { return check.counts_as_failure(); });
  return it == disks.end() ? nullptr : &*it;
}

Result<PreflightReport> run_preflight(const std::vector<TabEntry>& table, KmsRegistry& kms,
                                      PreflightEnvironment& env) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto disks, known_disks(table, env));
  const Status module = env.module_available();
  PreflightReport report;
  for (const KnownDisk& disk : disks) {
    report.disks.push_back(check_disk(disk, kms, module));
  }
  return report;
}

std::string preflight_row(const DiskCheck& check) {
  const CheckStep* failure = check.first_failure();
  std::string row = check.disk.name + ": " + (failure == nullptr ? "OK" : "FAIL");
  if (failure != nullptr) {
    row += " at " + failure->step + ": " + failure->detail;
  }
  row += " (device " +
         (check.disk.device.empty() ? check.disk.device_spec : check.disk.device.string());
  if (check.disk.attached_as) {
    row += ", attached as " + *check.disk.attached_as;
  }
  if (!check.cmk_uri.empty()) {
    row += ", CMK " + check.cmk_uri + ", endpoint " + check.endpoint;
  }
  row += ")";
  if (check.outage_cache.worth_showing()) {
    row += "; outage cache: " + check.outage_cache.describe(system_clock_seconds());
  }
  if (failure != nullptr && check.disk.nofail) {
    row += " (nofail: not counted)";
  }
  return row;
}

std::string KeyVersionRow::currency() const {
  if (!wrapped_version || !primary_version) {
    return "unknown";
  }
  return *wrapped_version == *primary_version ? "current" : "stale";
}

Result<std::vector<KeyVersionRow>> key_versions(const std::vector<TabEntry>& table,
                                                KmsRegistry& kms, PreflightEnvironment& env) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto disks, known_disks(table, env));
  std::vector<KeyVersionRow> rows;
  for (KnownDisk& disk : disks) {
    KeyVersionRow row;
    row.disk = std::move(disk);
    auto selection = row.disk.device.empty()
                         ? Result<HeaderSelection>(row.disk.device_error.value_or(
                               Error(ErrorCode::kNotFound, "not found")))
                         : read_volume_header(row.disk.device, row.disk.header_file);
    if (!selection.ok()) {
      row.error = selection.error().message();
      rows.push_back(std::move(row));
      continue;
    }
    row.cmk_uri = selection->header.wrapped.cmk_uri;
    row.wrapped_version = selection->header.wrapped.cmk_version;
    row.outage_cache = system_outage_cache(kms.config())
                           .state(row.disk.name, uuid_to_string(selection->header.uuid));
    auto backend = kms.for_key(row.cmk_uri);
    auto admin = backend.ok() ? offered(**backend, (*backend)->administration(), "describe-key")
                              : Result<KeyAdministration*>(backend.error());
    auto info = admin.ok() ? (*admin)->describe_key(row.cmk_uri) : Result<KeyInfo>(admin.error());
    if (info.ok()) {
      row.primary_version = info->primary_version;
    } else {
      row.error = info.error().message();
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace envcrypt
