#include "volume/volume.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "audit/audit.h"
#include "device/blockdev.h"
#include "device/devmapper.h"
#include "device/keyring.h"
#include "device/mapping_name.h"
#include "header/header_io.h"
#include "util/retry.h"
#include "util/test_hooks.h"
#include "util/uuid.h"

namespace envcrypt {
namespace {

constexpr std::uint64_t kSector = 512;

std::string dm_uuid_for(const DiskHeader& header, const std::string& name) {
  return std::string(kDmUuidPrefix) + uuid_to_hex(header.uuid) + "-" + name;
}

// Bytes of the data area on a device of `device_size` bytes, rounded down to
// whole encryption units.
Result<std::uint64_t> data_bytes(const DiskHeader& header, std::uint64_t device_size,
                                 const std::filesystem::path& device) {
  const Geometry& g = header.geometry;
  if (device_size <= g.data_offset) {
    return Error(ErrorCode::kUsage, device.string() + ": " + std::to_string(device_size) +
                                        " bytes leaves no room after the data offset " +
                                        std::to_string(g.data_offset));
  }
  std::uint64_t bytes = g.data_size != 0 ? g.data_size : device_size - g.data_offset;
  if (g.data_offset + bytes > device_size) {
    return Error(ErrorCode::kUsage, device.string() + ": device is " + std::to_string(device_size) +
                                        " bytes, the header needs " +
                                        std::to_string(g.data_offset + bytes));
  }
  bytes -= bytes % g.sector_size;
  if (bytes == 0) {
    return Error(ErrorCode::kUsage, device.string() + ": data area smaller than one sector");
  }
  return bytes;
}

// The block device a table can name: the device itself, or a new loop
// device over an image file (released when the mapping goes away).
struct Backing {
  std::filesystem::path path;
  std::string devnum;  // from the open descriptor: what the table names
  std::optional<LoopDevice> loop;
};

Result<Backing> backing_for(const Device& device, bool read_only) {
  if (device.is_block) {
    ENVCRYPT_ASSIGN_OR_RETURN(std::string devnum, device_number(device));
    return Backing{device.path, devnum, std::nullopt};
  }
  ENVCRYPT_ASSIGN_OR_RETURN(LoopDevice loop, attach_loop(device, read_only));
  ENVCRYPT_ASSIGN_OR_RETURN(std::string devnum, device_number(loop));
  std::filesystem::path path = loop.path;
  return Backing{path, devnum, std::move(loop)};
}

// The table just loaded must name the device whose header was read: checked
// again after the load, since a table names devices by number.
Status check_mapped_device(const std::string& name, const std::string& devnum) {
  ENVCRYPT_ASSIGN_OR_RETURN(DmTarget loaded, mapping_target(name, false));
  const std::string mapped = table_device(loaded.params);
  if (mapped != devnum) {
    return Error(ErrorCode::kConflict, name + ": the table maps " + mapped + ", not " + devnum +
                                           " whose header was read");
  }
  return OkStatus();
}

// Maps `backing` with the DK: the only place the DK reaches the kernel.
Status map_with_key(const DiskHeader& header, const SecretBytes& data_key, const Backing& backing,
                    std::uint64_t bytes, const std::string& name, bool read_only,
                    bool allow_discards) {
  const std::string description = "envcrypt:" + uuid_to_string(header.uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(ThreadLogonKey key, ThreadLogonKey::add(description, data_key));

  std::ostringstream params;
  params << backing.devnum << ' ' << header.geometry.data_offset / kSector << ' ' << key.reference()
         << ' ' << (allow_discards ? 2 : 1) << " sector_size:" << header.geometry.sector_size;
  if (allow_discards) {
    params << " allow_discards";
  }
  DmTarget target{0, bytes / kSector, "envcrypt", params.str()};
  Status created = create_mapping(name, dm_uuid_for(header, name), target, read_only);
  key.remove();
  ENVCRYPT_TRY(created);
  if (auto checked = check_mapped_device(name, backing.devnum); !checked.ok()) {
    (void)remove_mapping(name);
    return checked;
  }
  return OkStatus();
}

Status require_absent(const std::string& name) {
  auto existing = mapping_info(name);
  if (existing.ok()) {
    return Error(ErrorCode::kConflict, "a mapping named " + name + " already exists");
  }
  if (existing.error().code() != ErrorCode::kNotFound) {
    return existing.error();
  }
  return OkStatus();
}

Status require_not_attached(const Device& device) {
  if (!device.is_block) {
    return require_no_loop_over(device);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(std::string devnum, device_number(device));
  ENVCRYPT_ASSIGN_OR_RETURN(const auto user, mapping_using(devnum));
  if (user) {
    return Error(ErrorCode::kConflict,
                 device.path.string() + " is already attached as " + user->name);
  }
  return OkStatus();
}

// Writes zeros through the mapping, so the backing device holds ciphertext
// of zeros everywhere.
Status fill_with_zeros(const std::filesystem::path& mapper_path, std::uint64_t bytes,
                       const ProgressFn& progress) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device mapped, open_device(mapper_path, OpenMode::kReadWrite));
  const std::vector<std::uint8_t> zeros(4 << 20, 0);
  for (std::uint64_t done = 0; done < bytes;) {
    const std::uint64_t chunk = std::min<std::uint64_t>(zeros.size(), bytes - done);
    ENVCRYPT_TRY(write_at(mapped, done, std::span(zeros).first(chunk)));
    done += chunk;
    if (progress) {
      progress(done, bytes);
    }
  }
  return flush(mapped);
}

Status wipe_data_area(const DiskHeader& header, const SecretBytes& data_key, const Device& device,
                      const ProgressFn& progress) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::uint64_t bytes, data_bytes(header, device.size, device.path));
  ENVCRYPT_ASSIGN_OR_RETURN(Backing backing, backing_for(device, false));
  const std::string name = "envcrypt-wipe-" + uuid_to_hex(header.uuid).substr(0, 8);
  ENVCRYPT_TRY(require_absent(name));
  ENVCRYPT_TRY(map_with_key(header, data_key, backing, bytes, name, false, false));
  Status filled = fill_with_zeros("/dev/mapper/" + name, bytes, progress);
  Status removed = remove_mapping(name);
  ENVCRYPT_TRY(filled);
  return removed;
}

// Never through a symbolic link, even with --force: a link planted where
// the header is to go (in /tmp, say) would otherwise have format truncate
// whatever file it points to.
Result<Device> open_header_file_for_format(const std::filesystem::path& path, bool force) {
  const int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (force ? 0 : O_EXCL);
  UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (!fd.valid()) {
    const int err = errno;
    if (err == EEXIST) {
      return Error(ErrorCode::kConflict,
                   path.string() + ": header file exists (use --force to overwrite it)");
    }
    if (err == ELOOP) {
      return Error(ErrorCode::kUsage, "header file " + path.string() +
                                          " is a symbolic link: never written through one");
    }
    return error_from_errno(ErrorCode::kIo, path.string(), err);
  }
  struct stat created {};
  if (::fstat(fd.get(), &created) != 0 || !S_ISREG(created.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": not a regular file");
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(kHeaderAreaSize)) != 0) {
    return error_from_errno(ErrorCode::kIo, path.string(), errno);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(Device device, open_device(path, OpenMode::kReadWrite));
  if (device.st_dev != created.st_dev || device.st_ino != created.st_ino) {
    return Error(ErrorCode::kConflict, path.string() + ": replaced while it was being created");
  }
  return device;
}

}  // namespace

// Refuses to map a device one of our mappings already uses: a block device
// by number, an image file by the loop device over it (ours or anyone's: two
// writers of one image corrupt it).
Status require_no_loop_over(const Device& image) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto loop, loop_backed_by(image));
  if (loop) {
    return Error(ErrorCode::kConflict, image.path.string() + " is in use: it backs " +
                                           loop->string() + " (attached already?)");
  }
  return OkStatus();
}

Status refuse_existing_data(const Device& device) {
  auto existing = read_header(device);
  if (existing.ok()) {
    return Error(ErrorCode::kConflict, device.path.string() + ": already an envcrypt disk (uuid " +
                                           uuid_to_string(existing->header.uuid) +
                                           "); use --force to destroy it");
  }
  // Magic that does not read (a newer version, both checksums bad) is
  // exactly the disk an operator must restore from a header backup.
  ENVCRYPT_ASSIGN_OR_RETURN(bool magic, has_header_magic(device));
  if (magic) {
    return Error(ErrorCode::kConflict, device.path.string() +
                                           ": carries an envcrypt header that cannot be read (" +
                                           existing.error().message() +
                                           "); restore a header backup, or use --force to "
                                           "destroy it");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto signature, find_signature(device));
  if (signature) {
    return Error(ErrorCode::kConflict, device.path.string() +
                                           ": holds data (blkid finds: " + *signature +
                                           "); refusing to format (use --force to destroy it)");
  }
  return OkStatus();
}

std::string default_mapping_name(const DiskHeader& header) {
  return "envcrypt-" + uuid_to_hex(header.uuid).substr(0, 8);
}

Result<DiskHeader> format_volume(KmsRegistry& kms, const FormatOptions& options,
                                 const ProgressFn& progress) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device device, open_device(options.device, OpenMode::kExclusive));
  // O_EXCL refuses a block device in use; an image file in use is one a
  // loop device is bound to.
  if (!device.is_block) {
    ENVCRYPT_TRY(require_no_loop_over(device));
  }
  if (!options.force) {
    ENVCRYPT_TRY(refuse_existing_data(device));
  }

  DiskHeader header;
  ENVCRYPT_ASSIGN_OR_RETURN(header.uuid, random_uuid());
  header.label = options.label;
  header.geometry.sector_size = options.sector_size;
  // A detached header leaves the whole device to data.
  header.geometry.data_offset = options.header_file ? 0 : kDefaultDataOffset;
  ENVCRYPT_TRY(data_bytes(header, device.size, device.path));

  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * backend, kms.for_key(options.cmk));
  ENVCRYPT_ASSIGN_OR_RETURN(DataKey data_key,
                            backend->envelope().generate(options.cmk, encryption_context(header),
                                                         header.geometry.key_size));
  header.wrapped = std::move(data_key.wrapped);
  ENVCRYPT_ASSIGN_OR_RETURN(header.kcv, key_check_value(data_key.plaintext, header.uuid));
  if (options.recovery_key) {
    header.version = ENVCRYPT_HDR_VERSION_RECOVERY;
    ENVCRYPT_ASSIGN_OR_RETURN(
        header.recovery,
        wrap_for_recovery(*options.recovery_key, data_key.plaintext, recovery_context(header)));
  }
  ENVCRYPT_TRY(validate(header));

  if (options.force) {
    // Every signature, the tail's included (md, ZFS, RAID metadata), so
    // nothing claims the disk after it is ours.
    ENVCRYPT_TRY(wipe_signatures(device));
  }
  if (options.header_file) {
    ENVCRYPT_ASSIGN_OR_RETURN(Device header_device,
                              open_header_file_for_format(*options.header_file, options.force));
    ENVCRYPT_TRY(erase_header_area(header_device, header_device.size));
    ENVCRYPT_TRY(write_header(header_device, header));
  } else {
    // Old signatures and header copies go first, so a crash leaves either
    // nothing or a complete new header.
    ENVCRYPT_TRY(erase_header_area(device, header.geometry.data_offset));
    ENVCRYPT_TRY(write_header(device, header));
  }

  if (options.wipe) {
    // The table must claim the device, which our O_EXCL open would refuse.
    ENVCRYPT_TRY(drop_exclusive(device));
    if (auto wiped = wipe_data_area(header, data_key.plaintext, device, progress); !wiped.ok()) {
      return wiped.error().with_context("formatted (uuid " + uuid_to_string(header.uuid) +
                                        ") but the wipe failed");
    }
  }
  return header;
}

Result<HeaderSelection> read_volume_header(
    const std::filesystem::path& device, const std::optional<std::filesystem::path>& header_file) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device source,
                            open_device(header_file.value_or(device), OpenMode::kRead));
  return read_header(source);
}

Result<SecretBytes> unlock(KmsRegistry& kms, const DiskHeader& header, const CallContext& call) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * backend, kms.for_key(header.wrapped.cmk_uri));
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes data_key, backend->envelope(call).unwrap(
                                                      header.wrapped, encryption_context(header)));
  ENVCRYPT_TRY(check_data_key(header, data_key));
  return data_key;
}

namespace {

// Writes the uses the cache served to the disk's audit trail, then forgets
// them; on any failure they stay for the next contact.
Status report_uses(KmsRegistry& kms, const DiskHeader& header, OutageCache& cache) {
  const std::string disk_uuid = uuid_to_string(header.uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(std::vector<CacheUse> uses, cache.pending_uses(disk_uuid));
  if (uses.empty()) {
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(header.wrapped.cmk_uri));
  for (const CacheUse& use : uses) {
    AuditEvent event;
    event.operation = "OutageCacheUse";
    event.key_id = use.cmk_uri.empty() ? header.wrapped.cmk_uri : use.cmk_uri;
    event.key_version = use.cmk_version;
    event.context = encryption_context(header);
    event.result = "ok";
    event.details["used_at"] = format_rfc3339(use.time);
    event.details["valid_until"] = format_rfc3339(use.valid_until);
    event.details["kms_unreachable"] = use.reason;
    ENVCRYPT_TRY(log->append(event));
  }
  return cache.clear_uses(disk_uuid);
}

// After the KMS answered with the key: refresh or drop the entry, report
// earlier uses.  Failures here do not fail the attach; they become notes.
void after_kms_answer(KmsRegistry& kms, const DiskHeader& header, const std::string& name,
                      OutageCache& cache, UnlockedKey& unlocked) {
  const std::string disk_uuid = uuid_to_string(header.uuid);
  if (auto reported = report_uses(kms, header, cache); !reported.ok()) {
    unlocked.notes.push_back(
        "outage cache uses not yet in the audit trail (kept for the next "
        "attach): " +
        reported.error().message());
  }
  if (cache.enabled_for(name, disk_uuid)) {
    if (auto stored = cache.store(header, unlocked.data_key); !stored.ok()) {
      unlocked.notes.push_back("outage cache entry not refreshed: " + stored.error().message());
    }
    return;
  }
  if (auto forgotten = cache.forget(disk_uuid); !forgotten.ok()) {
    unlocked.notes.push_back("outage cache entry of a disk no longer enabled not removed: " +
                             forgotten.error().message());
  }
}

bool kms_refused(const Error& error) {
  return error.code() == ErrorCode::kDenied || error.code() == ErrorCode::kNotFound;
}

}  // namespace

Result<UnlockedKey> unlock_for_attach(KmsRegistry& kms, const DiskHeader& header,
                                      const std::string& name, OutageCache& cache,
                                      const CallContext& call) {
  const std::string disk_uuid = uuid_to_string(header.uuid);
  auto answered = unlock(kms, header, call);
  if (answered.ok()) {
    UnlockedKey unlocked{std::move(*answered), std::nullopt, {}};
    after_kms_answer(kms, header, name, cache, unlocked);
    return unlocked;
  }
  const Error& error = answered.error();
  if (kms_refused(error)) {
    auto forgotten = cache.forget(disk_uuid);
    if (forgotten.ok() && *forgotten) {
      return Error(error.code(), error.message() + " (its outage cache entry is destroyed)");
    }
    if (!forgotten.ok()) {
      return Error(error.code(), error.message() +
                                     " (its outage cache entry could not be "
                                     "destroyed: " +
                                     forgotten.error().message() + ")");
    }
    return answered.error();
  }
  if (error.code() != ErrorCode::kKmsUnreachable || !cache.enabled_for(name, disk_uuid)) {
    return answered.error();
  }
  std::int64_t valid_until = 0;
  auto cached = cache.use(header, error.message(), &valid_until);
  if (!cached.ok()) {
    return Error(ErrorCode::kKmsUnreachable,
                 error.message() + " (outage cache not used: " + cached.error().message() + ")");
  }
  UnlockedKey unlocked{
      std::move(*cached),
      CacheUse{0, error.message(), valid_until, header.wrapped.cmk_uri, header.wrapped.cmk_version},
      {}};
  return unlocked;
}

// The header that describes `device`: its own, or the detached header file's.
Result<HeaderSelection> header_for(const Device& device,
                                   const std::optional<std::filesystem::path>& header_file) {
  if (header_file) {
    ENVCRYPT_ASSIGN_OR_RETURN(Device source, open_device(*header_file, OpenMode::kRead));
    return read_header(source);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, read_header(device));
  if (auto placed = check_on_device_geometry(selection.header); !placed.ok()) {
    return placed.error().with_context(device.path.string());
  }
  return selection;
}

// One descriptor for the whole attach, locked until the table is loaded:
// the header read, the size, the device number, the loop device and the
// table all refer to the same device, whatever happens to its path.
Result<Attached> attach_volume(KmsRegistry& kms, const AttachOptions& options) {
  AttachTrace unused;
  AttachTrace& trace = options.trace != nullptr ? *options.trace : unused;
  trace.step = "header";
  ENVCRYPT_ASSIGN_OR_RETURN(
      Device device,
      open_device(options.device, options.read_only ? OpenMode::kRead : OpenMode::kAttach));
  ENVCRYPT_TRY(lock_device(device));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, header_for(device, options.header_file));
  Attached attached;
  attached.header = std::move(selection.header);
  attached.name = options.name.value_or(default_mapping_name(attached.header));
  ENVCRYPT_TRY(check_mapping_name(attached.name));
  attached.mapper_path = "/dev/mapper/" + attached.name;
  trace.name = attached.name;
  trace.cmk_uri = attached.header.wrapped.cmk_uri;
  trace.step = "device";
  ENVCRYPT_TRY(require_absent(attached.name));
  ENVCRYPT_ASSIGN_OR_RETURN(std::uint64_t bytes,
                            data_bytes(attached.header, device.size, device.path));
  ENVCRYPT_TRY(require_not_attached(device));
  trace.step = "unwrap";
  OutageCache cache = system_outage_cache(kms.config());
  ENVCRYPT_ASSIGN_OR_RETURN(
      UnlockedKey unlocked,
      unlock_for_attach(kms, attached.header, attached.name, cache, options.kms_call));
  const SecretBytes data_key = std::move(unlocked.data_key);
  attached.from_cache = std::move(unlocked.from_cache);
  attached.notes = std::move(unlocked.notes);
  fault_point("attach:unwrapped");  // test builds only: the core-dump test crashes here
  trace.step = "map";
  ENVCRYPT_ASSIGN_OR_RETURN(Backing backing, backing_for(device, options.read_only));
  attached.backing = backing.path;
  ENVCRYPT_TRY(map_with_key(attached.header, data_key, backing, bytes, attached.name,
                            options.read_only, options.allow_discards));
  return attached;
}

namespace {

// How long detach waits for an open of the mapping to end, and how often it
// looks: libdevmapper retries a busy remove for 5 s in the same steps.
constexpr std::chrono::milliseconds kTransientOpenWait{5000};
constexpr std::chrono::milliseconds kOpenPoll{200};

// The last close of a writer makes udev probe the device (its inotify
// watch), so a detach right after a write can meet an open that ends by
// itself; libdevmapper's retry of the remove covers an open that starts
// after this check.  A mount never ends by itself: refused after the wait.
Result<DmDevice> wait_until_closed(const std::string& name, DmDevice device) {
  RetryClock& clock = steady_retry_clock();
  const SteadyTime deadline = clock.now() + kTransientOpenWait;
  while (device.open_count > 0 && pause_before_next_round(clock, deadline, kOpenPoll)) {
    ENVCRYPT_ASSIGN_OR_RETURN(device, mapping_info(name));
  }
  return device;
}

}  // namespace

Status detach_volume(const std::string& name) {
  ENVCRYPT_TRY(check_mapping_name(name));
  ENVCRYPT_ASSIGN_OR_RETURN(DmDevice device, mapping_info(name));
  if (!device.uuid.starts_with(kDmUuidPrefix)) {
    return Error(ErrorCode::kUsage, name + " is not an envcrypt mapping");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(device, wait_until_closed(name, std::move(device)));
  if (device.open_count > 0) {
    return Error(ErrorCode::kConflict, name + " is in use (still open " +
                                           std::to_string(device.open_count) + " times after " +
                                           duration_text(kTransientOpenWait) + ": mounted?)");
  }
  return remove_mapping(name);
}

std::string table_device(std::string_view table) {
  return std::string(table.substr(0, table.find(' ')));
}

Result<std::filesystem::path> mapping_device(const std::string& name) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::vector<MappingStatus> mappings, volume_status(name));
  if (mappings.empty()) {
    return Error(ErrorCode::kNotFound, "mapping " + name + ": not found");
  }
  const std::string devnum = table_device(mappings.front().table);
  std::ifstream uevent("/sys/dev/block/" + devnum + "/uevent");
  for (std::string line; std::getline(uevent, line);) {
    if (line.starts_with("DEVNAME=")) {
      return std::filesystem::path("/dev") / line.substr(8);
    }
  }
  return Error(ErrorCode::kNotFound, "mapping " + name + ": no device " + devnum + " in /sys");
}

Result<std::optional<MappingStatus>> mapping_using(
    const std::function<bool(const std::string& devnum)>& uses) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto mappings, volume_status(std::nullopt));
  for (MappingStatus& mapping : mappings) {
    if (uses(table_device(mapping.table))) {
      return std::optional<MappingStatus>(std::move(mapping));
    }
  }
  return std::optional<MappingStatus>();
}

Result<std::optional<MappingStatus>> mapping_using(const std::string& devnum) {
  return mapping_using([&devnum](const std::string& mapped) { return mapped == devnum; });
}

Result<std::vector<MappingStatus>> volume_status(const std::optional<std::string>& name) {
  std::vector<DmDevice> devices;
  if (name) {
    ENVCRYPT_TRY(check_mapping_name(*name));
    ENVCRYPT_ASSIGN_OR_RETURN(DmDevice device, mapping_info(*name));
    if (!device.uuid.starts_with(kDmUuidPrefix)) {
      return Error(ErrorCode::kUsage, *name + " is not an envcrypt mapping");
    }
    devices.push_back(std::move(device));
  } else {
    ENVCRYPT_ASSIGN_OR_RETURN(devices, list_mappings());
  }

  std::vector<MappingStatus> out;
  for (const DmDevice& device : devices) {
    if (!device.uuid.starts_with(kDmUuidPrefix)) {
      continue;
    }
    MappingStatus s;
    s.name = device.name;
    const std::string hex = device.uuid.substr(kDmUuidPrefix.size(), 32);
    const auto uuid = uuid_from_hex(hex);
    s.disk_uuid = uuid ? uuid_to_string(*uuid) : hex;
    s.read_only = device.read_only;
    s.suspended = device.suspended;
    s.open_count = device.open_count;
    auto table = mapping_target(device.name, false);
    if (!table.ok() && !name && table.error().code() == ErrorCode::kNotFound) {
      // Another process's attach has created the mapping but not loaded
      // its table yet (or its detach removed it meanwhile): not a mapping
      // of any device, and no reason to fail this listing.  Attaches run
      // in parallel under systemd, one unit a disk.
      continue;
    }
    if (!table.ok()) {
      return table.error();
    }
    s.table = table->params;
    s.size_bytes = table->length * kSector;
    ENVCRYPT_ASSIGN_OR_RETURN(DmTarget info, mapping_target(device.name, true));
    s.info = info.params;
    std::istringstream fields(info.params);
    fields >> s.driver >> s.sector_size >> s.key_state >> s.reads >> s.writes >> s.read_bytes >>
        s.write_bytes >> s.errors;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace envcrypt
