#include "boot/rewrap.h"

#include <string>

#include "device/blockdev.h"
#include "header/header_io.h"
#include "util/test_hooks.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

// The test hook described in rewrap.h (test builds only: test_hooks.h).
void rewrap_fault_point(std::string_view step) { fault_point("rewrap:" + std::string(step)); }

WrapVersion version_of(const WrappedKey& wrapped) { return {wrapped.cmk_uri, wrapped.cmk_version}; }

// ReEncrypt inside one backend when both keys live there; across backends
// (local to KMIP, say) the DK is unwrapped, checked and wrapped again here.
Result<WrappedKey> reencrypt_to(KmsRegistry& kms, const DiskHeader& header,
                                const std::string& destination) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * source, kms.for_key(header.wrapped.cmk_uri));
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * target, kms.for_key(destination));
  const EncryptionContext context = encryption_context(header);
  if (source == target) {
    return source->envelope().rewrap(header.wrapped, context, destination, context);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes data_key, unlock(kms, header));
  return target->envelope().wrap(destination, data_key, context);
}

// A new wrap replaces the old one only once it has been decrypted back
// through its KMS and the result passed the disk's key check value: a wrap
// that cannot be opened again would leave the disk unrecoverable.
Status verify_new_wrap(KmsRegistry& kms, const DiskHeader& header, const WrappedKey& wrapped) {
  DiskHeader next = header;
  next.wrapped = wrapped;
  auto data_key = unlock(kms, next);
  if (!data_key.ok()) {
    return Error(data_key.error().code(),
                 wrapped.cmk_uri +
                     ": the new wrap does not decrypt back to this disk's data key (" +
                     data_key.error().message() + "); the header was not changed");
  }
  return OkStatus();
}

Result<KeyInfo> describe(KmsRegistry& kms, const std::string& keyref) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms.for_key(keyref));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * admin,
                            offered(*client, client->administration(), "describe-key"));
  return admin->describe_key(keyref);
}

// Whether the disk already is where rewrap --all would put it.
Result<bool> is_current(KmsRegistry& kms, const DiskHeader& header,
                        const std::optional<KeyInfo>& destination) {
  if (destination) {
    return header.wrapped.cmk_uri == destination->uri &&
           header.wrapped.cmk_version == destination->primary_version;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, describe(kms, header.wrapped.cmk_uri));
  return header.wrapped.cmk_version == key.primary_version;
}

DiskRewrap rewrap_known(KmsRegistry& kms, const KnownDisk& disk,
                        const std::optional<std::string>& cmk,
                        const std::optional<KeyInfo>& destination) {
  DiskRewrap out{disk, RewrapOutcome::kFailed, std::nullopt, std::nullopt};
  if (disk.device.empty()) {
    out.outcome = RewrapOutcome::kMissing;
    out.error = disk.device_error.value_or(Error(ErrorCode::kNotFound, "device not found"));
    return out;
  }
  auto selection = read_volume_header(disk.device, disk.header_file);
  if (!selection.ok()) {
    out.error = selection.error();
    return out;
  }
  auto current = is_current(kms, selection->header, destination);
  if (!current.ok()) {
    out.error = current.error();
    return out;
  }
  if (*current) {
    const DiskHeader& header = selection->header;
    out.outcome = RewrapOutcome::kCurrent;
    out.result = RewrapResult{version_of(header.wrapped), version_of(header.wrapped),
                              header.sequence, header.sequence, false};
    return out;
  }
  auto result = rewrap_volume(kms, {disk.device, disk.header_file, cmk});
  if (!result.ok()) {
    out.error = result.error();
    return out;
  }
  out.outcome = RewrapOutcome::kRewrapped;
  out.result = std::move(result).value();
  return out;
}

}  // namespace

Result<RewrapResult> rewrap_volume(KmsRegistry& kms, const RewrapRequest& request) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device device, open_device(request.header_file.value_or(request.device),
                                                       OpenMode::kReadWrite));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection current, read_header(device));
  const DiskHeader& header = current.header;
  ENVCRYPT_ASSIGN_OR_RETURN(
      WrappedKey wrapped, reencrypt_to(kms, header, request.cmk.value_or(header.wrapped.cmk_uri)));
  RewrapResult result{version_of(header.wrapped), version_of(wrapped), header.sequence,
                      header.sequence, false};
  result.changed = result.after.cmk_uri != result.before.cmk_uri ||
                   result.after.cmk_version != result.before.cmk_version;
  // A fresh nonce alone is not worth a header write; a copy left stale by
  // an interrupted rewrap is, so running rewrap again finishes its work.
  if (!result.changed && !current.degraded()) {
    return result;
  }
  if (result.changed) {
    ENVCRYPT_TRY(verify_new_wrap(kms, header, wrapped));
  }
  rewrap_fault_point("reencrypted");
  DiskHeader next = header;
  if (result.changed) {
    next.wrapped = std::move(wrapped);
  }
  ENVCRYPT_TRY(update_header(device, current, std::move(next), rewrap_fault_point));
  result.sequence_after = header.sequence + 1;
  return result;
}

std::string_view to_string(RewrapOutcome outcome) {
  switch (outcome) {
    case RewrapOutcome::kRewrapped:
      return "rewrapped";
    case RewrapOutcome::kCurrent:
      return "current";
    case RewrapOutcome::kMissing:
      return "missing";
    case RewrapOutcome::kFailed:
      return "failed";
  }
  return "failed";
}

bool DiskRewrap::counts_as_failure() const {
  return outcome == RewrapOutcome::kFailed || (outcome == RewrapOutcome::kMissing && !disk.nofail);
}

Result<std::vector<DiskRewrap>> rewrap_all(KmsRegistry& kms, const std::vector<TabEntry>& table,
                                           PreflightEnvironment& env,
                                           const std::optional<std::string>& cmk) {
  std::optional<KeyInfo> destination;
  if (cmk) {
    ENVCRYPT_ASSIGN_OR_RETURN(destination, describe(kms, *cmk));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto disks, known_disks(table, env));
  std::vector<DiskRewrap> results;
  for (const KnownDisk& disk : disks) {
    results.push_back(rewrap_known(kms, disk, cmk, destination));
  }
  return results;
}

Result<std::vector<std::string>> disks_wrapped_by(const std::string& key_uri,
                                                  const std::vector<TabEntry>& table,
                                                  PreflightEnvironment& env) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto disks, known_disks(table, env));
  std::vector<std::string> names;
  for (const KnownDisk& disk : disks) {
    if (disk.device.empty()) {
      continue;
    }
    auto selection = read_volume_header(disk.device, disk.header_file);
    if (selection.ok() && selection->header.wrapped.cmk_uri == key_uri) {
      names.push_back(disk.name + " (" + disk.device.string() + ")");
    }
  }
  return names;
}

}  // namespace envcrypt
