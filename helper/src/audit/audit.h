// The KMS audit trail: append-only JSON lines, one per operation, each
// ending in a MAC that chains it to every line before it:
//   mac(N) = HMAC-SHA256(chain key, mac(N-1) || line N up to its "mac" field)
// with both keys derived (HKDF-SHA256) from the local KMS root key, so only
// the holder of the root key can add, alter, remove or reorder a line
// unnoticed.  A sealed head file (sequence number and MAC of the last line,
// MACed under a second derived key) finds lines cut off the end; an anchor
// kept off the host (kms audit --anchor) finds a rollback to an older log
// and head.  A keystore change is written ahead as an intent line whose
// outcome line follows the commit, so a process stopped in between is
// reported.  Key material never enters an audit record.
// Documentation/kms/local.rst says what this proves and what it cannot.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/kms.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

struct AuditEvent {
  std::string operation;  // e.g. GenerateDataKey, Decrypt, DisableKey
  std::string key_id;     // empty when the key reference did not resolve
  std::optional<std::uint32_t> key_version;
  EncryptionContext context;
  std::string result;                          // "ok" or the error message
  std::map<std::string, std::string> details;  // e.g. alias, grant principal
};

// How a line takes part in write-ahead: an intent line is written (and
// fsynced) before the keystore commit it announces; the operation's own
// line then names it in `intent`.
struct AuditPhase {
  bool is_intent = false;
  std::optional<std::uint64_t> intent;
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
  bool is_intent = false;
  std::string line;  // the JSON line exactly as stored
};

struct AuditFilter {
  std::optional<std::string> key_id;
  std::optional<std::string> disk;
  std::optional<std::int64_t> since;  // unix seconds, inclusive
  std::optional<std::int64_t> until;  // unix seconds, inclusive
};

// The two keys of the trail, derived from the local KMS root key.
struct AuditKeys {
  SecretBytes chain;  // MACs the lines
  SecretBytes head;   // seals the head file
};
Result<AuditKeys> derive_audit_keys(std::span<const std::uint8_t> root_key);

// A head kept off the host: "audit-v1:<seq>:<mac of line seq, 64 hex>".
struct AuditAnchor {
  std::uint64_t seq = 0;
  std::string mac;  // lower-case hex
};
std::string format_audit_anchor(const AuditAnchor& anchor);
// ErrorCode::kUsage with one line naming the expected form.
Result<AuditAnchor> parse_audit_anchor(std::string_view text);

struct AuditVerification {
  bool intact = true;
  std::uint64_t lines = 0;
  std::uint64_t first_bad_line = 0;  // 1-based; 0 when intact
  std::string problem;               // what is wrong with that line
  AuditAnchor head;                  // the last line, for --anchor (when intact)
};

// Verifies a whole log held in memory: its bytes, the head file's bytes
// (std::nullopt when there is none) and optionally an anchor.  Touches no
// file; every byte is treated as hostile.  This is the entry point of the
// audit-verification fuzzer.
AuditVerification verify_audit_text(std::string_view log, std::optional<std::string_view> head,
                                    const AuditKeys& keys,
                                    const std::optional<AuditAnchor>& anchor = std::nullopt);

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
                               std::function<std::int64_t()> clock, AuditKeys keys);

  // Appends one line (durable when this returns) and answers its sequence
  // number.  A log still in the unkeyed format of envcryptctl 0.1 first
  // gets the line that seals it (operation AuditChainKeyed).  Events kept
  // by defer() are written first, oldest first.
  Result<std::uint64_t> append(const AuditEvent& event, const AuditPhase& phase = {});

  // Where defer() keeps events: a root-only directory off the log's file
  // system (under /run).  Unset: defer() refuses.
  void defer_to(std::filesystem::path spool) { spool_ = std::move(spool); }
  // Keeps `event` for a log that cannot be written now (its file system is
  // read-only: a read-only root, a /var not yet writable), because `reason`:
  // one file in the spool, MACed under the chain key, durable when this
  // returns.  The next append() writes it as a line of its own, with its
  // time, principal and reason in details.deferred_*; a kept file that
  // fails its MAC becomes a DeferredAuditRejected line, never the event it
  // claims.  Nothing is lost while /run lasts; nothing is back-dated.
  Status defer(const AuditEvent& event, std::string_view reason);
  // The operations' lines; intent lines are left out (verify() checks them).
  Result<std::vector<AuditRecord>> query(const AuditFilter& filter) const;
  Result<AuditVerification> verify(const std::optional<AuditAnchor>& anchor = std::nullopt) const;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  AuditLog(std::filesystem::path path, std::string principal, std::function<std::int64_t()> clock,
           AuditKeys keys)
      : path_(std::move(path)),
        principal_(std::move(principal)),
        clock_(std::move(clock)),
        keys_(std::move(keys)) {}

  // Appends under the lock, to the log open as `fd`.
  Result<std::uint64_t> append_line(int fd, const AuditEvent& event, const AuditPhase& phase);
  // Writes one keyed line after the chain value `prev_mac`; answers its MAC.
  Result<std::string> write_keyed(int fd, std::uint64_t seq, const std::string& prev_mac,
                                  const AuditEvent& event, const AuditPhase& phase,
                                  bool torn_before);
  Status write_head(std::uint64_t seq, const std::string& mac) const;
  // Writes the events defer() kept, to the log open (and locked) as `fd`.
  Status write_deferred(int fd);
  // A kept file's event, or the DeferredAuditRejected event that replaces it.
  [[nodiscard]] AuditEvent deferred_event(const std::string& text, const std::string& id) const;

  std::filesystem::path path_;
  std::string principal_;
  std::function<std::int64_t()> clock_;
  AuditKeys keys_;
  std::filesystem::path spool_;
};

}  // namespace envcrypt
