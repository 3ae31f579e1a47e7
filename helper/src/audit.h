// The KMS audit trail: append-only JSON lines, one per operation, each
// carrying the SHA-256 of the line before it so that an altered, removed or
// reordered line is found by verify().  A head file records the sequence
// number and hash of the last line, so truncating the log is found too.
// Key material never enters an audit record.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms.h"
#include "result.h"

namespace envcrypt {

struct AuditEvent {
  std::string operation;  // e.g. GenerateDataKey, Decrypt, DisableKey
  std::string key_id;     // empty when the key reference did not resolve
  std::optional<std::uint32_t> key_version;
  EncryptionContext context;
  std::string result;                          // "ok" or the error message
  std::map<std::string, std::string> details;  // e.g. alias, grant principal
};

// One line of the log as read back.
struct AuditRecord {
  std::uint64_t seq = 0;
  std::string time;  // RFC 3339 UTC
  std::int64_t unix_time = 0;
  std::string principal;
  std::string operation;
  std::string key_id;
  std::optional<std::uint32_t> key_version;
  std::string disk;  // disk uuid from the context, if any
  std::string result;
  std::string line;  // the JSON line exactly as stored
};

struct AuditFilter {
  std::optional<std::string> key_id;
  std::optional<std::string> disk;
  std::optional<std::int64_t> since;  // unix seconds, inclusive
  std::optional<std::int64_t> until;  // unix seconds, inclusive
};

struct AuditVerification {
  bool intact = true;
  std::uint64_t lines = 0;
  std::uint64_t first_bad_line = 0;  // 1-based; 0 when intact
  std::string problem;               // what is wrong with that line
  std::string head_hash;             // SHA-256 of the last line, for external anchoring
};

// The disk uuid of an encryption context (its "disk_uuid" entry), or "".
std::string disk_from_context(const EncryptionContext& context);

// RFC 3339 UTC timestamps with second precision: 2026-11-28T08:42:58Z.
std::string format_rfc3339(std::int64_t unix_seconds);
Result<std::int64_t> parse_rfc3339(std::string_view text);

class AuditLog {
 public:
  // `path` is the log; its head file is `path` + ".head" and its lock sits
  // beside them.  The directory must already exist with safe permissions.
  static Result<AuditLog> open(const std::filesystem::path& path, std::string principal,
                               std::function<std::int64_t()> clock);

  Status append(const AuditEvent& event);
  Result<std::vector<AuditRecord>> query(const AuditFilter& filter) const;
  Result<AuditVerification> verify() const;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  AuditLog(std::filesystem::path path, std::string principal, std::function<std::int64_t()> clock)
      : path_(std::move(path)), principal_(std::move(principal)), clock_(std::move(clock)) {}

  // Appends under the lock, to the log open as `fd`.
  Status append_line(int fd, const AuditEvent& event);

  std::filesystem::path path_;
  std::string principal_;
  std::function<std::int64_t()> clock_;
};

}  // namespace envcrypt
