// Attach-failure diagnostics: whoever attaches (an operator by hand,
// attach-all at boot, udev on hot-plug) reports a failure the same way, as
// one structured line to syslog (LOG_DAEMON, ident envcryptctl: the journal
// when it runs) and to stderr, and as the disk's last attach error in
// $ENVCRYPT_RUN_DIR/attach-errors/<name> (default /run/envcrypt), which
// `envcryptctl status` shows and a successful attach removes.
// Documentation/admin-guide/operations.rst.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "kms/kms_registry.h"
#include "util/result.h"
#include "util/run_dir.h"
#include "volume/volume.h"

namespace envcrypt {

// One attach failure, everything an operator needs to act on it.
struct AttachFailure {
  std::string disk;      // the mapping name
  std::string device;    // as given
  std::string cmk_uri;   // empty when the header could not be read
  std::string endpoint;  // the KMS the CMK lives on (kms_endpoint())
  std::string step;      // AttachTrace::step
  ErrorCode code = ErrorCode::kInternal;
  std::string reason;     // the error's own message (the KMS's, for KMS steps)
  std::int64_t time = 0;  // unix seconds
};

// The KMS that serves `cmk_uri`, for messages: "local keystore <dir>" or
// "kmip <host>:<port>" (a configured endpoint's name resolved).
std::string kms_endpoint(const Config& config, const std::string& cmk_uri);

// key=value fields, values with blanks or quotes quoted:
// disk=data device=/dev/vdb cmk=local://local-1/k endpoint="local keystore /x"
// step=unwrap code=4 reason="key local://local-1/k is Disabled"
std::string failure_fields(const AttachFailure& failure);

// attach_volume() with diagnostics: a failure is logged (syslog, `err`) and
// recorded as the disk's last attach error; success clears the record.
Result<Attached> attach_with_diagnostics(KmsRegistry& kms, const AttachOptions& options,
                                         std::ostream& err);

// Logs and records a failure that happened before attach_volume() ran (a
// device that never appeared at boot).
void report_attach_failure(AttachFailure failure, std::ostream& err);

// The recorded last attach error of `disk`, if any.
Result<std::optional<AttachFailure>> last_attach_error(const std::string& disk);

}  // namespace envcrypt
