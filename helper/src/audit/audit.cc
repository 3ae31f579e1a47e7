#include "audit/audit.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "audit/audit_line.h"
#include "util/crypto.h"
#include "util/file_io.h"
#include "util/keystore.h"
#include "util/unique_fd.h"

namespace envcrypt {
namespace {

using namespace audit_line;  // the line format's vocabulary (audit_line.h)

std::filesystem::path lock_path_for(const std::filesystem::path& log) {
  return log.parent_path() / ("." + log.filename().string() + ".lock");
}

// HKDF-SHA256 (RFC 5869) of the root key, no salt, `info` naming the use.
Result<SecretBytes> hkdf_sha256(std::span<const std::uint8_t> key, std::string_view info) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* context = kdf == nullptr ? nullptr : EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (context == nullptr) {
    return Error(ErrorCode::kInternal, "HKDF is not available from OpenSSL");
  }
  std::string digest = "SHA256";
  std::string info_copy(info);
  const std::array<OSSL_PARAM, 4> params = {
      OSSL_PARAM_construct_utf8_string("digest", digest.data(), 0),
      OSSL_PARAM_construct_octet_string("key", const_cast<std::uint8_t*>(key.data()), key.size()),
      OSSL_PARAM_construct_octet_string("info", info_copy.data(), info_copy.size()),
      OSSL_PARAM_construct_end()};
  SecretBytes derived(kSha256Size);
  const bool ok = EVP_KDF_derive(context, derived.data(), derived.size(), params.data()) == 1;
  EVP_KDF_CTX_free(context);
  if (!ok) {
    return Error(ErrorCode::kInternal, "HKDF-SHA256 failed");
  }
  return derived;
}

// The end of the log, from the start of its last line on: read backwards
// in growing chunks, so appending costs the same however long the log is.
Result<std::string> read_tail(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  for (std::size_t chunk = 4096;; chunk *= 4) {
    const std::size_t start = size > chunk ? size - chunk : 0;
    std::string tail(size - start, '\0');
    std::size_t done = 0;
    while (done < tail.size()) {
      const ssize_t got =
          ::pread(fd, tail.data() + done, tail.size() - done, static_cast<off_t>(start + done));
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got <= 0) {
        return got < 0 ? error_from_errno(ErrorCode::kIo, "read " + path.string(), errno)
                       : Error(ErrorCode::kIo, path.string() + " shrank while being read");
      }
      done += static_cast<std::size_t>(got);
    }
    // Whole when it starts the file or holds the newline before the last line.
    const std::size_t last_end =
        !tail.empty() && tail.back() == '\n' ? tail.size() - 1 : tail.size();
    if (start == 0 || (last_end > 0 && tail.rfind('\n', last_end - 1) != std::string::npos)) {
      return tail;
    }
  }
}

// What the log's last line says about how to continue the chain.
struct ChainTail {
  std::string last;                // the last line, torn or not
  bool torn = false;               // the file does not end with a newline
  std::optional<std::string> mac;  // when the last line is a keyed line
  std::uint64_t seq = 0;           // of the last line, when it carries one
};

ChainTail tail_of(const std::string& contents) {
  ChainTail tail;
  if (contents.empty()) {
    return tail;
  }
  tail.torn = contents.back() != '\n';
  const std::size_t end = tail.torn ? contents.size() : contents.size() - 1;
  const std::size_t previous_newline = end == 0 ? std::string::npos : contents.rfind('\n', end - 1);
  const std::size_t begin = previous_newline == std::string::npos ? 0 : previous_newline + 1;
  tail.last = contents.substr(begin, end - begin);
  if (const std::optional<KeyedLine> keyed = split_keyed(tail.last)) {
    tail.mac = std::string(keyed->mac);
  }
  const ordered_json parsed = parse_object(tail.last);
  if (has_unsigned(parsed, "seq")) {
    tail.seq = parsed["seq"].get<std::uint64_t>();
  }
  return tail;
}

// A deferred event's MAC: HMAC(chain key, domain || its JSON without the
// MAC), a domain no log line starts with, so neither can pass for the other.
constexpr std::string_view kDeferredDomain = "envcrypt-deferred-audit-v1";
constexpr std::string_view kDeferredRejected = "DeferredAuditRejected";
constexpr std::size_t kDeferredTimeDigits = 20;

// "<unix time, 20 digits>-<pid>-<n>.json": names sort in the order the
// events were kept (within a second, per process).
std::string deferred_name(std::int64_t unix_time) {
  static unsigned counter = 0;
  std::string time = std::to_string(unix_time);
  time.insert(0, kDeferredTimeDigits - std::min(time.size(), kDeferredTimeDigits), '0');
  std::string number = std::to_string(counter++);
  number.insert(0, kDeferredTimeDigits - std::min(number.size(), kDeferredTimeDigits), '0');
  return time + "-" + std::to_string(::getpid()) + "-" + number + ".json";
}

std::vector<std::filesystem::path> deferred_files(const std::filesystem::path& spool) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(spool, ec)) {
    if (entry.path().extension() == ".json" && !entry.is_symlink(ec) && entry.is_regular_file(ec)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string disk_from_context(const EncryptionContext& context) {
  const auto found = context.find("disk_uuid");
  return found == context.end() ? std::string() : found->second;
}

std::string format_rfc3339(std::int64_t unix_seconds) {
  const auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text.data();
}

Result<std::int64_t> parse_rfc3339(std::string_view text) {
  std::tm utc{};
  int consumed = 0;
  const std::string copy(text);
  if (std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &utc.tm_year, &utc.tm_mon,
                  &utc.tm_mday, &utc.tm_hour, &utc.tm_min, &utc.tm_sec, &consumed) != 6 ||
      static_cast<std::size_t>(consumed) != copy.size() || utc.tm_mon < 1 || utc.tm_mon > 12 ||
      utc.tm_mday < 1 || utc.tm_mday > 31 || utc.tm_hour > 23 || utc.tm_min > 59 ||
      utc.tm_sec > 60) {
    return Error(ErrorCode::kUsage,
                 "'" + copy + "' is not an RFC 3339 UTC time like 2026-11-28T08:42:58Z");
  }
  utc.tm_year -= 1900;
  utc.tm_mon -= 1;
  return static_cast<std::int64_t>(timegm(&utc));
}

Result<AuditKeys> derive_audit_keys(std::span<const std::uint8_t> root_key) {
  AuditKeys keys;
  ENVCRYPT_ASSIGN_OR_RETURN(keys.chain, hkdf_sha256(root_key, "envcrypt/local/audit/chain/v1"));
  ENVCRYPT_ASSIGN_OR_RETURN(keys.head, hkdf_sha256(root_key, "envcrypt/local/audit/head/v1"));
  return keys;
}

std::string format_audit_anchor(const AuditAnchor& anchor) {
  return std::string(kAnchorPrefix) + std::to_string(anchor.seq) + ":" + anchor.mac;
}

Result<AuditAnchor> parse_audit_anchor(std::string_view text) {
  const Error refusal(ErrorCode::kUsage,
                      "the anchor is not of the form audit-v1:<sequence>:<64 hex digits> "
                      "(as kms audit --anchor prints it)");
  if (!text.starts_with(kAnchorPrefix)) {
    return refusal;
  }
  text.remove_prefix(kAnchorPrefix.size());
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return refusal;
  }
  AuditAnchor anchor;
  const std::string_view digits = text.substr(0, colon);
  const auto [end, error] =
      std::from_chars(digits.data(), digits.data() + digits.size(), anchor.seq);
  const std::string_view mac = text.substr(colon + 1);
  if (error != std::errc() || end != digits.data() + digits.size() || anchor.seq == 0 ||
      digits.front() == '0' || mac.size() != kMacHexSize || !is_lower_hex(mac)) {
    return refusal;
  }
  anchor.mac = std::string(mac);
  return anchor;
}

Result<AuditLog> AuditLog::open(const std::filesystem::path& path, std::string principal,
                                std::function<std::int64_t()> clock, AuditKeys keys) {
  if (!clock) {
    clock = [] { return static_cast<std::int64_t>(std::time(nullptr)); };
  }
  if (keys.chain.size() != kSha256Size || keys.head.size() != kSha256Size) {
    return Error(ErrorCode::kInternal, "audit keys are not derived");
  }
  return AuditLog(path, std::move(principal), std::move(clock), std::move(keys));
}

Result<std::uint64_t> AuditLog::append(const AuditEvent& event, const AuditPhase& phase) {
  ENVCRYPT_ASSIGN_OR_RETURN(const FileLock lock, FileLock::acquire(lock_path_for(path_)));
  const UniqueFd fd(
      ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return error_from_errno(ErrorCode::kIo, "open " + path_.string(), errno);
  }
  if (Status deferred = write_deferred(fd.get()); !deferred.ok()) {
    return deferred.error();
  }
  return append_line(fd.get(), event, phase);
}

Status AuditLog::defer(const AuditEvent& event, std::string_view reason) {
  if (spool_.empty()) {
    return Error(ErrorCode::kIo, "no place to keep the audit line for later");
  }
  ENVCRYPT_TRY(ensure_private_directory(spool_));
  const std::int64_t now = clock_();
  const std::string id = deferred_name(now);
  ordered_json kept;
  kept["id"] = id;
  kept["time"] = now;
  kept["principal"] = principal_;
  kept["reason"] = std::string(reason);
  kept["operation"] = event.operation;
  kept["key_id"] = event.key_id;
  kept["key_version"] = event.key_version ? ordered_json(*event.key_version) : ordered_json();
  kept["context"] = event.context;
  kept["result"] = event.result;
  kept["details"] = event.details;
  const std::string body = kept.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  kept["mac"] = line_mac(keys_, kDeferredDomain, body);
  // Each kept event has a file name of its own; no other writer replaces it.
  return write_file_durably(spool_ / id, kept.dump() + "\n", {.writers_hold_a_lock = true});
}

AuditEvent AuditLog::deferred_event(const std::string& text, const std::string& id) const {
  ordered_json kept = parse_object(text);
  const std::string mac = kept.is_object() && kept.contains("mac") && kept["mac"].is_string()
                              ? kept["mac"].get<std::string>()
                              : std::string();
  if (kept.is_object()) {
    kept.erase("mac");
  }
  const std::string body = kept.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  AuditEvent event{std::string(kDeferredRejected), "", std::nullopt, {}, "", {{"deferred_id", id}}};
  const bool names_itself = kept.is_object() && kept.contains("id") && kept["id"].is_string() &&
                            kept["id"].get<std::string>() == id;
  if (mac.empty() || !same_mac(mac, line_mac(keys_, kDeferredDomain, body)) || !names_itself) {
    event.result = "the kept audit line fails its MAC: not written as the event it claims";
    return event;
  }
  try {
    event.operation = kept.at("operation").get<std::string>();
    event.key_id = kept.at("key_id").get<std::string>();
    if (fits_u32(kept.at("key_version"))) {
      event.key_version = kept.at("key_version").get<std::uint32_t>();
    }
    event.context = kept.at("context").get<EncryptionContext>();
    event.result = kept.at("result").get<std::string>();
    event.details = kept.at("details").get<std::map<std::string, std::string>>();
    event.details["deferred_id"] = id;
    event.details["deferred_time"] = format_rfc3339(kept.at("time").get<std::int64_t>());
    event.details["deferred_principal"] = kept.at("principal").get<std::string>();
    event.details["deferred_reason"] = kept.at("reason").get<std::string>();
  } catch (const ordered_json::exception&) {
    // A MAC over a malformed record: written by a bug, not by us as such.
    return {std::string(kDeferredRejected), "", std::nullopt, {}, "malformed kept audit line",
            {{"deferred_id", id}}};
  }
  return event;
}

Status AuditLog::write_deferred(int fd) {
  if (spool_.empty()) {
    return OkStatus();
  }
  for (const std::filesystem::path& file : deferred_files(spool_)) {
    const std::string id = file.filename().string();
    // A file that cannot be read as ours (its mode, its owner) is reported
    // in the log, not left to block every later append.
    const Result<std::optional<std::string>> text = read_private_file(file);
    const AuditEvent event =
        text.ok()
            ? deferred_event(text->value_or(""), id)
            : AuditEvent{
                  std::string(kDeferredRejected), "", std::nullopt, {}, text.error().message(),
                  {{"deferred_id", id}}};
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string end, read_tail(fd, path_));
    // A run stopped between the append and the unlink wrote it already.
    if (end.find(R"("deferred_id":")" + id + "\"") == std::string::npos) {
      Result<std::uint64_t> written = append_line(fd, event, {});
      if (!written.ok()) {
        return written.error();
      }
    }
    if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
      return error_from_errno(ErrorCode::kIo, "unlink " + file.string(), errno);
    }
  }
  return OkStatus();
}

Result<std::uint64_t> AuditLog::append_line(int fd, const AuditEvent& event,
                                            const AuditPhase& phase) {
  ENVCRYPT_TRY(check_private_fd(fd, path_));
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string end, read_tail(fd, path_));
  const ChainTail tail = tail_of(end);
  std::uint64_t seq = tail.seq;
  // After an old unkeyed line, or a damaged one, the keyed chain starts
  // afresh (verify() reports a damaged line).
  std::string prev = tail.mac.value_or(kGenesisHash);
  const bool legacy = !tail.torn && is_legacy(tail.last);
  if (!end.empty() && (!tail.mac || tail.seq == 0)) {
    // Number on from the line count.
    ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> whole, read_private_file(path_));
    seq = static_cast<std::uint64_t>(std::count(whole->begin(), whole->end(), '\n')) +
          (tail.torn ? 1 : 0);
  }
  if (legacy) {
    const AuditEvent seal{
        std::string(kSealOperation),
        "",
        std::nullopt,
        {},
        "ok",
        {{"legacy_lines", std::to_string(seq)}, {"legacy_sha256", sha256_hex(tail.last)}}};
    ENVCRYPT_ASSIGN_OR_RETURN(prev, write_keyed(fd, ++seq, prev, seal, {}, false));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string mac,
                            write_keyed(fd, ++seq, prev, event, phase, tail.torn));
  ENVCRYPT_TRY(write_head(seq, mac));
  return seq;
}

Result<std::string> AuditLog::write_keyed(int fd, std::uint64_t seq, const std::string& prev_mac,
                                          const AuditEvent& event, const AuditPhase& phase,
                                          bool torn_before) {
  ordered_json line;
  line["seq"] = seq;
  line["time"] = format_rfc3339(clock_());
  line["principal"] = principal_;
  line["operation"] = event.operation;
  line["key_id"] = event.key_id;
  line["key_version"] = event.key_version ? ordered_json(*event.key_version) : ordered_json();
  line["disk"] = disk_from_context(event.context);
  line["context"] = event.context;
  line["result"] = event.result;
  if (!event.details.empty()) {
    line["details"] = event.details;
  }
  if (phase.is_intent) {
    line["phase"] = "intent";
  }
  if (phase.intent) {
    line["intent"] = *phase.intent;
  }
  std::string text = line.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  text.pop_back();  // the closing brace: the MAC field goes before it
  const std::string mac = line_mac(keys_, prev_mac, text);
  // A torn last line (a writer killed mid-append) stays a line of its own,
  // which verify() then reports.
  const std::string record =
      (torn_before ? "\n" : "") + text + std::string(kMacOpen) + mac + "\"}\n";
  ENVCRYPT_TRY(write_all(fd, record, "append to " + path_.string()));
  if (::fsync(fd) != 0) {
    return error_from_errno(ErrorCode::kIo, "fsync " + path_.string(), errno);
  }
  return mac;
}

Status AuditLog::write_head(std::uint64_t seq, const std::string& mac) const {
  ordered_json head;
  head["version"] = kHeadVersion;
  head["seq"] = seq;
  head["mac"] = mac;
  head["seal"] = head_seal(keys_, seq, mac);
  // append() holds the log's lock, which serialises the writers of the head.
  return write_file_durably(head_path_for(path_), head.dump() + "\n",
                            {.writers_hold_a_lock = true});
}

Result<std::vector<AuditRecord>> AuditLog::query(const AuditFilter& filter) const {
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> contents, read_private_file(path_));
  std::vector<AuditRecord> records;
  if (!contents) {
    return records;
  }
  for (const std::string_view line : split_lines(*contents)) {
    Result<AuditRecord> record = parse_record(line);
    if (!record.ok() || record->is_intent) {
      continue;  // verify() is where damaged lines and open intents are reported
    }
    if ((filter.key_id && record->key_id != *filter.key_id) ||
        (filter.disk && record->disk != *filter.disk) ||
        (filter.since && record->unix_time < *filter.since) ||
        (filter.until && record->unix_time > *filter.until)) {
      continue;
    }
    records.push_back(std::move(record).value());
  }
  return records;
}

Result<AuditVerification> AuditLog::verify(const std::optional<AuditAnchor>& anchor) const {
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> contents, read_private_file(path_));
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> head,
                            read_private_file(head_path_for(path_)));
  return verify_audit_text(contents.value_or(""),
                           head ? std::optional<std::string_view>(*head) : std::nullopt, keys_,
                           anchor);
}

}  // namespace envcrypt
