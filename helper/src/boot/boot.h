// Attaching and detaching the disks of envcrypttab (crypttab.h): the logic
// behind `envcryptctl attach-all` / `detach-all`, the udev rules (which ask
// which entry names a device that just appeared) and the systemd generator
// (one envcrypt-attach@<name>.service per line).  What it does to the system
// goes through BootActions, so the decisions are testable without devices.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/crypttab.h"
#include "kms/kms_registry.h"
#include "util/result.h"
#include "util/retry.h"

namespace envcrypt {

// Where our udev rules link each envcrypt disk by its uuid
// (helper/udev/61-envcrypt.rules).
inline constexpr const char* kUuidLinkDir = "/dev/disk/by-envcrypt-uuid";

enum class DiskOutcome {
  kAttached,
  kAlreadyAttached,  // a mapping of that name, or of that device, exists: left alone
  kDetached,
  kNotAttached,  // detach-all: nothing to do
  kMissing,      // the device is not there (after the entry's device timeout)
  kFailed,
};
std::string_view to_string(DiskOutcome outcome);

struct DiskResult {
  std::string name;
  std::string device_spec;       // as written in the table
  std::filesystem::path device;  // what it resolved to, when found
  DiskOutcome outcome = DiskOutcome::kFailed;
  bool nofail = false;
  std::optional<Error> error;  // why, for kMissing and kFailed
  std::string detail;          // e.g. the mapping a device is already attached as
  std::chrono::milliseconds elapsed{0};
  unsigned attempts = 0;  // attach attempts (more than one when the KMS was unreachable)

  // Failed or missing, and not excused by nofail.
  [[nodiscard]] bool counts_as_failure() const;
};

struct BootReport {
  std::vector<DiskResult> disks;

  [[nodiscard]] std::size_t count(DiskOutcome outcome) const;
  // The first disk that counts as a failure; its error decides the exit code.
  [[nodiscard]] const DiskResult* first_failure() const;
  // "3 attached, 1 failed, 1 missing (nofail)"
  [[nodiscard]] std::string summary() const;
};

// What a device is, for matching it against table entries.
struct DeviceIdentity {
  std::filesystem::path canonical;           // symlinks resolved
  std::vector<std::filesystem::path> links;  // other names (udev's DEVLINKS)
  std::string uuid;                          // envcrypt header uuid, empty if none
  std::string cmk_uri;                       // the CMK that wraps its data key, if any
};

// Whether `entry` names the device: by UUID=, by its path, or by one of its links.
bool entry_names_device(const TabEntry& entry, const std::filesystem::path& device,
                        const DeviceIdentity& identity);

// Everything attach-all and detach-all do to the system.
class BootActions {
 public:
  virtual ~BootActions() = default;
  // The device the entry names now; ErrorCode::kNotFound while it is absent.
  virtual Result<std::filesystem::path> resolve(const TabEntry& entry) = 0;
  virtual Result<DeviceIdentity> identify(const std::filesystem::path& device) = 0;
  // The disk uuid of our mapping `name`; ErrorCode::kNotFound if there is none.
  virtual Result<std::string> mapping_uuid(const std::string& name) = 0;
  // Our mapping that already maps `device`, if any.
  virtual Result<std::optional<std::string>> mapping_of(const std::filesystem::path& device) = 0;
  // Every KMS call of the attach ends by `kms_call`'s deadline.
  virtual Status attach(const TabEntry& entry, const std::filesystem::path& device,
                        const CallContext& kms_call) = 0;
  virtual Status detach(const std::string& name) = 0;
  virtual std::chrono::steady_clock::time_point now() = 0;
  virtual void sleep(std::chrono::milliseconds duration) = 0;
};

// The real thing: volume.h, /dev, /sys, and the KMS, opened only when a
// disk is to be attached.
std::unique_ptr<BootActions> system_boot_actions(std::function<Result<KmsRegistry*>()> kms);

// Which entries a run acts on.
struct BootSelection {
  // Only these (noauto entries included); empty: every entry without noauto.
  std::vector<std::string> names;
  // Only the entries that name this device, which is then used as it is
  // (udev passes the device that just appeared).
  std::optional<std::filesystem::path> device;
};

// How attach-all waits for a KMS it cannot reach (the network or the key
// server still coming up at boot).
struct AttachPolicy {
  // Each disk's deadline, counted from its first attach attempt ([boot]
  // attach_timeout_seconds); 0: one attempt, no retries.
  std::chrono::seconds timeout = kDefaultAttachTimeout;
  Backoff backoff{std::chrono::milliseconds(500), std::chrono::milliseconds(5000)};
};

// Attaches each selected entry that is present and not attached, one after
// the other; a failing disk never stops the others.  Each entry waits for
// its device at most its device timeout.  A disk whose KMS is unreachable
// is retried, after every other disk has had its first attempt, with
// backoff until its deadline; no attempt outlasts it.  Any other failure
// is final at once.  Errors only for a bad selection.
Result<BootReport> attach_all(const std::vector<TabEntry>& table, const BootSelection& selection,
                              BootActions& actions, const AttachPolicy& policy = {});
// Detaches the selected entries' mappings, last line first.
Result<BootReport> detach_all(const std::vector<TabEntry>& table, const BootSelection& selection,
                              BootActions& actions);

// The first entry that names `device` (udev's tab lookup), or nullptr.
Result<const TabEntry*> entry_for_device(const std::vector<TabEntry>& table,
                                         const std::filesystem::path& device, BootActions& actions);

// systemd-escape: a string, or with `path` a file system path, as a unit name part.
std::string systemd_escape(std::string_view text, bool path);
// A path as one word of a unit file setting that unquotes and expands
// specifiers (RequiresMountsFor=, SourcePath=): '\\', quotes and '%' escaped.
std::string unit_file_word(std::string_view path);
// envcrypt-attach@<escaped name>.service
std::string attach_unit_name(const std::string& name);

// A file the generator writes: contents, or a symlink when `symlink_to` is set.
struct GeneratedFile {
  std::string contents;
  std::optional<std::filesystem::path> symlink_to;
};

// What the generator takes from envcrypt.conf.
struct GeneratorSettings {
  // Files and directories every attach may read: the local keystore, its
  // root key, the KMIP credentials, the outage cache's directory when the
  // cache is on (each becomes RequiresMountsFor=).
  std::vector<std::filesystem::path> kms_paths;
  // [boot] attach_timeout_seconds: part of each attach's time budget.
  std::chrono::seconds attach_timeout = kDefaultAttachTimeout;
};

// envcrypt.conf's part in the units: the KMS files every attach may read
// (local keystore, root key, each KMIP endpoint's CA, certificate and key,
// the [outage_cache] dir when the cache names a disk) and [boot]
// attach_timeout_seconds.
GeneratorSettings generator_settings(const Config& config);

// The longest one attach unit may run: the wait for its device, the retries
// until the attach deadline, and one more KMS call after it (90 s, the
// longest a KMIP call is let run at boot).
std::chrono::milliseconds attach_start_timeout(const TabEntry& entry,
                                               const GeneratorSettings& settings);

// The systemd generator's output for `table` (read from `tab_path`), keyed by
// path relative to the generator's output directory; `unit_dir` holds the
// installed envcrypt-attach@.service.
std::map<std::filesystem::path, GeneratedFile> generate_units(
    const std::vector<TabEntry>& table, const std::filesystem::path& tab_path,
    const std::filesystem::path& unit_dir, const GeneratorSettings& settings = {});

// The boot-time off switch, like systemd-cryptsetup's luks=no: false when
// the kernel command line says envcrypt=no (or 0, false, off, n, f), or,
// inside an initramfs (`in_initrd`), rd.envcrypt=no.  The last setting
// wins; a bare "envcrypt" means yes; a value that is no boolean is warned
// about on `err` and ignored.
bool boot_attach_enabled(std::string_view cmdline, bool in_initrd, std::ostream& err);

// The same for this boot: $ENVCRYPT_CMDLINE (tests) or /proc/cmdline, in an
// initramfs when /etc/initrd-release exists.  An unreadable command line
// leaves attaching on.
bool boot_attach_enabled_now(std::ostream& err);

// Writes them under `out_dir` (which systemd gives the generator).
Status write_generated(const std::map<std::filesystem::path, GeneratedFile>& files,
                       const std::filesystem::path& out_dir);

// A run over the whole table that skipped a bad line did not do all it was
// asked: ErrorCode::kUsage, "N envcrypttab line(s) skipped, first <error>",
// reported once the good lines are attached (a disk's own failure, coming
// first, gives the exit code instead).  OK when no line was skipped.
Status whole_table_status(const Envcrypttab& tab);

}  // namespace envcrypt
