// The disk operations behind the CLI: format, unlock (unwrap + key check),
// attach, detach and status.  Each either completes or leaves the system as
// it found it: no mapping, no key in any keyring, no half-written header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "device/blockdev.h"
#include "header/header.h"
#include "kms/kms_registry.h"
#include "kms/recovery.h"
#include "util/result.h"
#include "util/secret.h"
#include "volume/outage_cache.h"

namespace envcrypt {

// Device-mapper uuids of our mappings start with this; status and detach
// act only on such mappings.
inline constexpr std::string_view kDmUuidPrefix = "ENVCRYPT-";

// Called while data is written: bytes done and total.
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct FormatOptions {
  std::filesystem::path device;
  std::optional<std::filesystem::path> header_file;  // detached header
  std::string cmk;                                   // key reference
  std::string label;
  std::uint32_t sector_size = 4096;
  bool force = false;
  bool wipe = false;
  // With a recovery key the header is version 2 and carries a recovery wrap.
  std::optional<RecoveryPublicKey> recovery_key;
};

// Formats the device (or image): a new uuid, a fresh DK generated under the
// CMK with the disk's encryption context, both header copies written.  With
// `wipe`, the data area is then filled with ciphertext of zeros through a
// temporary mapping.
Result<DiskHeader> format_volume(KmsRegistry& kms, const FormatOptions& options,
                                 const ProgressFn& progress);

// What format refuses without --force (also `image encrypt`'s DST): an
// envcrypt header (valid, or magic that does not read), or any signature
// libblkid finds.  ErrorCode::kConflict.
Status refuse_existing_data(const Device& device);

// An image file that backs a loop device is in use (ErrorCode::kConflict).
Status require_no_loop_over(const Device& image);

// The header of DEVICE, or of the detached header file when given.
Result<HeaderSelection> read_volume_header(const std::filesystem::path& device,
                                           const std::optional<std::filesystem::path>& header_file);

// Unwraps the DK through the header's KMS, by `call`'s deadline, and
// checks it against the KCV.
Result<SecretBytes> unlock(KmsRegistry& kms, const DiskHeader& header,
                           const CallContext& call = {});

// A data key for attach.
struct UnlockedKey {
  SecretBytes data_key;
  std::optional<CacheUse> from_cache;  // set when the outage cache served it
  std::vector<std::string> notes;      // for the operator: cache not refreshed, ...
};

// unlock(), with the outage cache (outage_cache.h) around it.  When the KMS
// answers, the disk's entry is refreshed (or removed when the disk is no
// longer enabled) and earlier cache uses go to the audit trail.  When it
// refused the key (disabled, pending deletion, deleted, no grant), the
// entry is destroyed.  When it could not be reached, the entry serves if
// it may; otherwise the error stays ErrorCode::kKmsUnreachable and says
// why the cache did not serve.
Result<UnlockedKey> unlock_for_attach(KmsRegistry& kms, const DiskHeader& header,
                                      const std::string& name, OutageCache& cache,
                                      const CallContext& call = {});

// How far an attach got, so a failure can name its step (diagnostics.h):
// header (reading it), device (opening and sizing it, name and device not
// in use), unwrap (KMS Decrypt and key check value), map (loading the table).
struct AttachTrace {
  std::string step = "header";
  std::string name;  // the mapping, once the header is read
  std::string cmk_uri;
};

struct AttachOptions {
  std::filesystem::path device;
  std::optional<std::string> name;  // default: envcrypt-<first 8 hex of the uuid>
  std::optional<std::filesystem::path> header_file;
  bool read_only = false;
  bool allow_discards = false;
  AttachTrace* trace = nullptr;  // when set, kept up to date
  CallContext kms_call;          // bounds the KMS calls (attach-all: the attach deadline)
};

struct Attached {
  std::string name;
  std::filesystem::path mapper_path;  // /dev/mapper/<name>
  std::filesystem::path backing;      // the block device mapped (a loop device for images)
  DiskHeader header;
  std::optional<CacheUse> from_cache;  // the key came from the outage cache
  std::vector<std::string> notes;      // warnings that did not fail the attach
};

Result<Attached> attach_volume(KmsRegistry& kms, const AttachOptions& options);
// Removes the mapping; an open (udev probing it after a write) is waited
// for up to 5 s, then refused with ErrorCode::kConflict (mounted, in use).
Status detach_volume(const std::string& name);

// One of our mappings, with the target's STATUSTYPE_INFO parsed.
struct MappingStatus {
  std::string name;
  std::string disk_uuid;
  std::string table;  // STATUSTYPE_TABLE: device, offset, key reference, options
  bool read_only = false;
  bool suspended = false;
  std::int32_t open_count = 0;
  std::uint64_t size_bytes = 0;
  // INFO: <driver> <sector_size> <valid|wiped> <reads> <writes> <read_bytes> <write_bytes> <errors>
  std::string info;
  std::string driver;
  std::uint32_t sector_size = 0;
  std::string key_state;
  std::uint64_t reads = 0, writes = 0, read_bytes = 0, write_bytes = 0, errors = 0;
};

// All our mappings, or the one named.
Result<std::vector<MappingStatus>> volume_status(const std::optional<std::string>& name);

// The device ("MAJOR:MINOR") a table of ours maps: its first field.
std::string table_device(std::string_view table);

// The device node under our mapping `name` (the inverse query): its
// table's device, named by /sys's DEVNAME.  ErrorCode::kNotFound when there
// is no such mapping or /sys does not know its device.
Result<std::filesystem::path> mapping_device(const std::string& name);

// The one "which mapping uses this device" query: the first of our mappings
// whose table's device satisfies `uses`, std::nullopt when none does.
Result<std::optional<MappingStatus>> mapping_using(
    const std::function<bool(const std::string& devnum)>& uses);
// ... whose table names `devnum` itself.
Result<std::optional<MappingStatus>> mapping_using(const std::string& devnum);

std::string default_mapping_name(const DiskHeader& header);

}  // namespace envcrypt
