// `envcryptctl preflight`: would the next boot attach every disk?  For each
// envcrypttab entry and each attached envcrypt disk, without attaching:
// device present, both header copies valid, dm-envcrypt available, CMK
// reachable, Enabled, granted to this host's principal, and the data key
// unwraps and matches its key check value (the unwrapped key is wiped at
// once).  Also the disk list and key-version report behind `status --keys`.
// Documentation/admin-guide/operations.rst lists every failure reason.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/crypttab.h"
#include "kms/kms_registry.h"
#include "util/result.h"
#include "volume/outage_cache.h"

namespace envcrypt {

// An envcrypt mapping as the system shows it.
struct AttachedDisk {
  std::string name;
  std::string disk_uuid;
  std::filesystem::path backing;  // /dev/<kernel name> of the mapped device
};

// What preflight asks of the system, replaceable in tests.
struct PreflightEnvironment {
  // The device an entry names now (ErrorCode::kNotFound while absent).
  std::function<Result<std::filesystem::path>(const TabEntry&)> resolve;
  std::function<Result<std::vector<AttachedDisk>>()> attached;
  // dm-envcrypt is loaded or modprobe can load it.
  std::function<Status()> module_available;
};
PreflightEnvironment system_preflight_environment();

// A disk preflight and status --keys look at.
struct KnownDisk {
  std::string name;
  std::string device_spec;  // as the table writes it, or the backing device
  std::optional<std::filesystem::path> header_file;
  bool nofail = false;
  bool in_table = false;
  std::optional<std::string> attached_as;
  std::filesystem::path device;  // empty while not found
  std::optional<Error> device_error;
};

// The entries of `table`, then attached disks the table does not name.
Result<std::vector<KnownDisk>> known_disks(const std::vector<TabEntry>& table,
                                           PreflightEnvironment& env);

struct CheckStep {
  std::string step;  // device, header, module, kms, state, grant, unwrap
  bool ok = false;
  std::string detail;  // the reason, for a failure; what was found otherwise
  ErrorCode code = ErrorCode::kInternal;
};

struct DiskCheck {
  KnownDisk disk;
  std::string cmk_uri;
  std::string endpoint;
  std::vector<CheckStep> steps;  // in order; later steps are skipped after some failures
  CacheState outage_cache;       // the disk's outage cache entry (outage_cache.h)

  [[nodiscard]] const CheckStep* first_failure() const;
  // Failed and not excused by nofail.
  [[nodiscard]] bool counts_as_failure() const;
};

struct PreflightReport {
  std::vector<DiskCheck> disks;
  // "3 ok, 1 failed (1 nofail)"
  [[nodiscard]] std::string summary() const;
  [[nodiscard]] const DiskCheck* first_counted_failure() const;
};

Result<PreflightReport> run_preflight(const std::vector<TabEntry>& table, KmsRegistry& kms,
                                      PreflightEnvironment& env);

// One line per disk: "<name>: OK ..." or "<name>: FAIL <step>: <reason> ...".
std::string preflight_row(const DiskCheck& check);

// Which CMK version wraps each disk's DK, and the CMK's primary version.
struct KeyVersionRow {
  KnownDisk disk;
  std::string cmk_uri;
  std::optional<std::uint32_t> wrapped_version;
  std::optional<std::uint32_t> primary_version;
  std::string error;  // why a version is unknown
  CacheState outage_cache;

  [[nodiscard]] std::string currency() const;  // current, stale or unknown
};
Result<std::vector<KeyVersionRow>> key_versions(const std::vector<TabEntry>& table,
                                                KmsRegistry& kms, PreflightEnvironment& env);

}  // namespace envcrypt
