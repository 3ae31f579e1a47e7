// `envcryptctl rewrap`: moves a disk's data key to its CMK's primary version,
// or to another CMK, through KMS ReEncrypt.  Metadata only: the header's
// envelope changes, not one byte of data, so it works while the disk is
// attached.  The header update is crash-safe (header_io.h update_header):
// killed at any instant, the disk attaches with the old wrap or the new.
// Also the "safe disable" question: which disks this host knows does a key
// still wrap?  Documentation/kms/lifecycle.rst is the operator's view.
//
// Test hook (test builds only, test_hooks.h): ENVCRYPT_FAULT=rewrap:<step>
// makes the process SIGKILL itself when it reaches <step>;
// ENVCRYPT_FAULT=rewrap:<step>:pause makes it print
// "envcryptctl: fault injection: paused at rewrap:<step>" on stderr and wait
// to be killed (the VM crash test kills the whole guest then).  Steps, in
// order: reencrypted (the KMS answered, nothing written), then
// update_header's first-copy-written, first-copy-flushed,
// second-copy-written, second-copy-flushed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "boot/preflight.h"
#include "config/crypttab.h"
#include "kms/kms_registry.h"
#include "util/result.h"

namespace envcrypt {

// The steps ENVCRYPT_FAULT can name, in the order a rewrap reaches them.
inline constexpr std::string_view kRewrapSteps[] = {"reencrypted", "first-copy-written",
                                                    "first-copy-flushed", "second-copy-written",
                                                    "second-copy-flushed"};

struct RewrapRequest {
  std::filesystem::path device;
  std::optional<std::filesystem::path> header_file;  // the header lives there
  std::optional<std::string> cmk;  // destination; default: the CMK that wraps it now
};

// Which CMK and version wrap the DK.
struct WrapVersion {
  std::string cmk_uri;
  std::uint32_t cmk_version = 0;
};

struct RewrapResult {
  WrapVersion before;
  WrapVersion after;
  std::uint64_t sequence_before = 0;
  std::uint64_t sequence_after = 0;  // == sequence_before when nothing was written
  // False when the DK already was under the destination's primary version:
  // the header is then left as it was, unless a copy was not current (an
  // interrupted rewrap), which is then rewritten.
  bool changed = false;
};

Result<RewrapResult> rewrap_volume(KmsRegistry& kms, const RewrapRequest& request);

// rewrap --all: every disk this host knows (envcrypttab and attached).
enum class RewrapOutcome {
  kRewrapped,
  kCurrent,  // already under the destination's primary version
  kMissing,  // the device is not there
  kFailed,
};
std::string_view to_string(RewrapOutcome outcome);

struct DiskRewrap {
  KnownDisk disk;
  RewrapOutcome outcome = RewrapOutcome::kFailed;
  std::optional<RewrapResult> result;  // kRewrapped and kCurrent
  std::optional<Error> error;          // kMissing and kFailed

  // Failed, or missing without nofail.
  [[nodiscard]] bool counts_as_failure() const;
};

// With `cmk`, every disk moves to that CMK; without, only those wrapped
// under a version that is not their CMK's primary one.  One disk failing
// never stops the others.
Result<std::vector<DiskRewrap>> rewrap_all(KmsRegistry& kms, const std::vector<TabEntry>& table,
                                           PreflightEnvironment& env,
                                           const std::optional<std::string>& cmk);

// The known disks whose DK `key_uri` (a canonical CMK URI) wraps, as
// "<name> (<device>)"; disks whose header cannot be read are not listed.
Result<std::vector<std::string>> disks_wrapped_by(const std::string& key_uri,
                                                  const std::vector<TabEntry>& table,
                                                  PreflightEnvironment& env);

}  // namespace envcrypt
