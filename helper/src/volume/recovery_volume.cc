#include "volume/recovery_volume.h"

#include <functional>
#include <string>
#include <utility>

#include "audit/audit.h"
#include "device/blockdev.h"
#include "header/header_io.h"
#include "util/test_hooks.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

void recovery_fault_point(std::string_view step) { fault_point("recovery:" + std::string(step)); }

AuditEvent recovery_event(std::string operation, const DiskHeader& header,
                          const RecoveryTarget& target) {
  AuditEvent event;
  event.operation = std::move(operation);
  event.context = encryption_context(header);
  event.details["device"] = target.header_file.value_or(target.device).string();
  event.details["cmk"] = header.wrapped.cmk_uri;
  if (header.recovery) {
    event.details["recovery_key_id"] = to_hex(header.recovery->key_id);
  }
  return event;
}

// Runs `body` between an intent line and its outcome line, so a refused
// attempt (a wrong recovery key) is in the trail as well as a successful
// one, and nothing happens unaudited: no intent line, no attempt.
template <typename T>
Result<T> audited(AuditLog& log, AuditEvent event, const std::function<Result<T>()>& body) {
  AuditEvent intent = event;
  intent.result = "pending";
  ENVCRYPT_ASSIGN_OR_RETURN(const std::uint64_t seq, log.append(intent, {true, std::nullopt}));
  Result<T> result = body();
  event.result = result.ok() ? "ok" : result.error().message();
  if (auto logged = log.append(event, {false, seq}); !logged.ok() && result.ok()) {
    return logged.error().with_context("the header was changed but its audit line failed");
  }
  return result;
}

struct OpenHeader {
  Device device;
  HeaderSelection current;
};

Result<OpenHeader> open_for_update(const RecoveryTarget& target) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      Device device, open_device(target.header_file.value_or(target.device), OpenMode::kReadWrite));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection current, read_header(device));
  return OpenHeader{std::move(device), std::move(current)};
}

Result<HeaderChange> commit(const OpenHeader& open, DiskHeader next) {
  recovery_fault_point("prepared");
  HeaderChange change{open.current.header, next, true};
  ENVCRYPT_TRY(update_header(open.device, open.current, std::move(next), recovery_fault_point));
  change.after.sequence = change.before.sequence + 1;
  return change;
}

Status require_version_2(const DiskHeader& header, const RecoveryTarget& target) {
  if (header.version < ENVCRYPT_HDR_VERSION_RECOVERY) {
    return Error(ErrorCode::kUsage,
                 "header version 1 cannot carry a recovery wrap; run `envcryptctl "
                 "upgrade-header " +
                     target.device.string() + "` first");
  }
  return OkStatus();
}

Result<SecretBytes> open_recovery_wrap(const DiskHeader& header, const RecoveryPrivateKey& key) {
  if (!header.recovery) {
    return Error(ErrorCode::kNotFound, "the disk has no recovery wrap");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes data_key,
                            unwrap_recovery(key, *header.recovery, recovery_context(header)));
  // The wrap authenticated, so this only fails if the wrap was made from a
  // wrong key in the first place; never write such a key under a CMK.
  if (auto checked = check_data_key(header, data_key); !checked.ok()) {
    return Error(ErrorCode::kCorrupt,
                 "the recovery wrap holds a key that fails the disk's "
                 "key check value");
  }
  return data_key;
}

Result<WrappedKey> wrap_under(KmsRegistry& kms, const DiskHeader& header,
                              const std::string& destination, const SecretBytes& data_key) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * backend, kms.for_key(destination));
  const EncryptionContext context = encryption_context(header);
  Envelope envelope = backend->envelope();
  ENVCRYPT_ASSIGN_OR_RETURN(WrappedKey wrapped, envelope.wrap(destination, data_key, context));
  ENVCRYPT_TRY(envelope.verify(wrapped, context, data_key));
  return wrapped;
}

}  // namespace

Status attach_recovery_wrap(DiskHeader& header, const SecretBytes& data_key,
                            const RecoveryPublicKey& key) {
  header.version = ENVCRYPT_HDR_VERSION_RECOVERY;
  ENVCRYPT_ASSIGN_OR_RETURN(header.recovery,
                            wrap_for_recovery(key, data_key, recovery_context(header)));
  return OkStatus();
}

Result<HeaderChange> upgrade_header_volume(KmsRegistry& kms, const RecoveryTarget& target) {
  ENVCRYPT_ASSIGN_OR_RETURN(OpenHeader open, open_for_update(target));
  const DiskHeader& header = open.current.header;
  // A version 2 header with a copy left behind by an interrupted upgrade is
  // rewritten, so running upgrade-header again finishes its work.
  if (header.version >= ENVCRYPT_HDR_VERSION_RECOVERY && !open.current.degraded()) {
    return HeaderChange{header, header, false};
  }
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(header.wrapped.cmk_uri));
  return audited<HeaderChange>(*log, recovery_event("UpgradeHeader", header, target), [&] {
    DiskHeader next = header;
    next.version = ENVCRYPT_HDR_VERSION_RECOVERY;
    return commit(open, std::move(next));
  });
}

Result<HeaderChange> add_recovery_wrap(KmsRegistry& kms, const RecoveryTarget& target,
                                       const RecoveryPublicKey& key, bool replace) {
  ENVCRYPT_ASSIGN_OR_RETURN(OpenHeader open, open_for_update(target));
  const DiskHeader& header = open.current.header;
  ENVCRYPT_TRY(require_version_2(header, target));
  if (header.recovery && !replace) {
    return Error(ErrorCode::kConflict, "the disk already has a recovery wrap (key " +
                                           short_key_id(header.recovery->key_id) +
                                           "); remove it first, or use --replace");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(header.wrapped.cmk_uri));
  AuditEvent event = recovery_event("AddRecoveryWrap", header, target);
  event.details["recovery_key_id"] = to_hex(key.id);
  return audited<HeaderChange>(*log, event, [&]() -> Result<HeaderChange> {
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes data_key, unlock(kms, header));
    DiskHeader next = header;
    ENVCRYPT_TRY(attach_recovery_wrap(next, data_key, key));
    return commit(open, std::move(next));
  });
}

Result<HeaderChange> remove_recovery_wrap(KmsRegistry& kms, const RecoveryTarget& target) {
  ENVCRYPT_ASSIGN_OR_RETURN(OpenHeader open, open_for_update(target));
  const DiskHeader& header = open.current.header;
  if (!header.recovery) {
    return Error(ErrorCode::kNotFound, "the disk has no recovery wrap");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(header.wrapped.cmk_uri));
  return audited<HeaderChange>(*log, recovery_event("RemoveRecoveryWrap", header, target), [&] {
    DiskHeader next = header;
    next.recovery.reset();
    return commit(open, std::move(next));
  });
}

Result<RecoverResult> recover_volume(KmsRegistry& kms, const RecoveryTarget& target,
                                     const RecoveryPrivateKey& key,
                                     const std::optional<std::string>& cmk) {
  ENVCRYPT_ASSIGN_OR_RETURN(OpenHeader open, open_for_update(target));
  const DiskHeader& header = open.current.header;
  const std::string destination = cmk.value_or(header.wrapped.cmk_uri);
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(destination));
  AuditEvent event = recovery_event("Recover", header, target);
  event.details["used_recovery_key_id"] = to_hex(key.public_key.id);
  event.details["destination"] = destination;
  return audited<RecoverResult>(*log, event, [&]() -> Result<RecoverResult> {
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes data_key, open_recovery_wrap(header, key));
    DiskHeader next = header;
    ENVCRYPT_ASSIGN_OR_RETURN(next.wrapped, wrap_under(kms, header, destination, data_key));
    RecoverResult result;
    result.cmk_uri = next.wrapped.cmk_uri;
    result.cmk_version = next.wrapped.cmk_version;
    ENVCRYPT_ASSIGN_OR_RETURN(result.change, commit(open, std::move(next)));
    return result;
  });
}

Status audit_recovery_format(KmsRegistry& kms, const DiskHeader& header) {
  ENVCRYPT_ASSIGN_OR_RETURN(AuditLog * log, kms.audit_for(header.wrapped.cmk_uri));
  AuditEvent event = recovery_event("FormatWithRecoveryWrap", header, RecoveryTarget{});
  event.details.erase("device");
  event.result = "ok";
  ENVCRYPT_TRY(log->append(event));
  return OkStatus();
}

}  // namespace envcrypt
