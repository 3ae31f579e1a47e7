#include "audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "crypto.h"
#include "keystore.h"

namespace envcrypt {
namespace {

using ordered_json = nlohmann::ordered_json;

// The `prev` of the first line: there is no line before it.
const std::string kGenesisHash(2 * kSha256Size, '0');

Error io_error(const std::string& what, const std::filesystem::path& path, int error_number) {
  return {ErrorCode::kIo, what + " " + path.string() + ": " + std::strerror(error_number)};
}

std::filesystem::path lock_path_for(const std::filesystem::path& log) {
  return log.parent_path() / ("." + log.filename().string() + ".lock");
}

std::filesystem::path head_path_for(const std::filesystem::path& log) {
  std::filesystem::path head = log;
  head += ".head";
  return head;
}

// What the log's last complete line says about how to continue the chain.
struct ChainTail {
  std::uint64_t seq = 0;            // of the last line; 0 for an empty log
  std::string hash = kGenesisHash;  // SHA-256 of the last line
  bool torn = false;                // the file does not end with a newline
};

// The chain continues from the last line (even a torn or unparsable one, so
// verify() reports it instead of the chain skipping it silently).  `contents`
// is the end of the log holding at least its whole last line.  seq stays 0
// when the last line carries no sequence number.
ChainTail tail_of(const std::string& contents) {
  ChainTail tail;
  if (contents.empty()) {
    return tail;
  }
  tail.torn = contents.back() != '\n';
  const std::size_t end = tail.torn ? contents.size() : contents.size() - 1;
  const std::size_t previous_newline = end == 0 ? std::string::npos : contents.rfind('\n', end - 1);
  const std::size_t begin = previous_newline == std::string::npos ? 0 : previous_newline + 1;
  const std::string_view last(contents.data() + begin, end - begin);
  tail.hash = sha256_hex(last);
  const ordered_json parsed = ordered_json::parse(last, nullptr, false);
  if (parsed.is_object() && parsed.contains("seq") && parsed["seq"].is_number_unsigned()) {
    tail.seq = parsed["seq"].get<std::uint64_t>();
  }
  return tail;
}

// The end of the log, from the start of its last line on: read backwards
// in growing chunks, so appending costs the same however long the log is.
Result<std::string> read_tail(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return io_error("stat", path, errno);
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
        return got < 0 ? io_error("read", path, errno)
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

std::vector<std::string_view> split_lines(const std::string& contents) {
  std::vector<std::string_view> lines;
  std::size_t begin = 0;
  while (begin < contents.size()) {
    std::size_t end = contents.find('\n', begin);
    if (end == std::string::npos) {
      end = contents.size();
    }
    lines.emplace_back(contents.data() + begin, end - begin);
    begin = end + 1;
  }
  return lines;
}

// Whether a line from `from` on carries sequence number `seq`.
bool appears_later(const std::vector<std::string_view>& lines, std::size_t from,
                   std::uint64_t seq) {
  for (std::size_t index = from; index < lines.size(); ++index) {
    const ordered_json parsed = ordered_json::parse(lines[index], nullptr, false);
    if (parsed.is_object() && parsed.contains("seq") && parsed["seq"] == seq) {
      return true;
    }
  }
  return false;
}

Result<AuditRecord> parse_record(std::string_view line) {
  const ordered_json parsed = ordered_json::parse(line, nullptr, false);
  if (!parsed.is_object()) {
    return Error(ErrorCode::kCorruptHeader, "not a JSON object");
  }
  AuditRecord record;
  try {
    record.seq = parsed.at("seq").get<std::uint64_t>();
    record.time = parsed.at("time").get<std::string>();
    record.principal = parsed.at("principal").get<std::string>();
    record.operation = parsed.at("operation").get<std::string>();
    record.key_id = parsed.at("key_id").get<std::string>();
    if (parsed.contains("key_version") && !parsed["key_version"].is_null()) {
      record.key_version = parsed["key_version"].get<std::uint32_t>();
    }
    record.disk = parsed.value("disk", "");
    record.result = parsed.at("result").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return Error(ErrorCode::kCorruptHeader, std::string("missing or mistyped field: ") + e.what());
  }
  ENVCRYPT_ASSIGN_OR_RETURN(record.unix_time, parse_rfc3339(record.time));
  record.line = std::string(line);
  return record;
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

Result<AuditLog> AuditLog::open(const std::filesystem::path& path, std::string principal,
                                std::function<std::int64_t()> clock) {
  if (!clock) {
    clock = [] { return static_cast<std::int64_t>(std::time(nullptr)); };
  }
  return AuditLog(path, std::move(principal), std::move(clock));
}

Status AuditLog::append(const AuditEvent& event) {
  ENVCRYPT_ASSIGN_OR_RETURN(const FileLock lock, FileLock::acquire(lock_path_for(path_)));
  const int fd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return io_error("open", path_, errno);
  }
  Status written = append_line(fd, event);
  ::close(fd);
  return written;
}

Status AuditLog::append_line(int fd, const AuditEvent& event) {
  ENVCRYPT_TRY(check_private_fd(fd, path_));
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string end, read_tail(fd, path_));
  ChainTail tail = tail_of(end);
  if (tail.seq == 0 && !end.empty()) {
    // The last line has no sequence number: number on from the line count.
    ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> whole, read_private_file(path_));
    tail.seq = static_cast<std::uint64_t>(std::count(whole->begin(), whole->end(), '\n')) +
               (tail.torn ? 1 : 0);
  }

  ordered_json line;
  line["seq"] = tail.seq + 1;
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
  line["prev"] = tail.hash;
  const std::string text = line.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  // A torn last line (a writer killed mid-append) stays a line of its own,
  // which verify() then reports.
  const std::string record = (tail.torn ? "\n" : "") + text + "\n";

  ENVCRYPT_TRY(write_all(fd, record, path_, "append to"));
  if (::fsync(fd) != 0) {
    return io_error("fsync", path_, errno);
  }

  ordered_json head;
  head["seq"] = tail.seq + 1;
  head["hash"] = sha256_hex(text);
  return write_file_atomically(head_path_for(path_), head.dump() + "\n");
}

Result<std::vector<AuditRecord>> AuditLog::query(const AuditFilter& filter) const {
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> contents, read_private_file(path_));
  std::vector<AuditRecord> records;
  if (!contents) {
    return records;
  }
  for (const std::string_view line : split_lines(*contents)) {
    Result<AuditRecord> record = parse_record(line);
    if (!record.ok()) {
      continue;  // verify() is where damaged lines are reported
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

Result<AuditVerification> AuditLog::verify() const {
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> contents, read_private_file(path_));
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> head_text,
                            read_private_file(head_path_for(path_)));
  AuditVerification report;
  auto fail = [&report](std::uint64_t line, std::string problem) {
    report.intact = false;
    report.first_bad_line = line;
    report.problem = std::move(problem);
    return report;
  };

  const std::string text = contents.value_or("");
  const std::vector<std::string_view> lines = split_lines(text);
  report.lines = lines.size();
  std::string expected_prev = kGenesisHash;
  for (std::size_t index = 0; index < lines.size(); ++index) {
    const std::uint64_t number = index + 1;
    const ordered_json parsed = ordered_json::parse(lines[index], nullptr, false);
    if (!parsed.is_object() || !parsed.contains("seq") || !parsed["seq"].is_number_unsigned() ||
        !parsed.contains("prev") || !parsed["prev"].is_string()) {
      return fail(number,
                  "line " + std::to_string(number) + " is not an audit record (altered or torn)");
    }
    const auto seq = parsed["seq"].get<std::uint64_t>();
    if (seq > number) {
      const std::string prefix =
          "line " + std::to_string(number) + " has sequence number " + std::to_string(seq) + ": ";
      if (appears_later(lines, index + 1, number)) {
        return fail(number, prefix + "lines were reordered");
      }
      return fail(number,
                  prefix + (seq == number + 1
                                ? "the line numbered " + std::to_string(number) + " was removed"
                                : "the lines numbered " + std::to_string(number) + ".." +
                                      std::to_string(seq - 1) + " were removed"));
    }
    if (seq < number) {
      return fail(number, "line " + std::to_string(number) + " has sequence number " +
                              std::to_string(seq) + ": lines were reordered or duplicated");
    }
    if (parsed["prev"].get<std::string>() != expected_prev) {
      // This line is in its place, so the one before it changed.
      return fail(number - 1, "line " + std::to_string(number - 1) + " was altered: line " +
                                  std::to_string(number) + " records a different hash for it");
    }
    if (!parse_record(lines[index]).ok()) {
      return fail(number, "line " + std::to_string(number) + " lacks audit fields (altered)");
    }
    expected_prev = sha256_hex(lines[index]);
  }
  if (!text.empty() && text.back() != '\n') {
    return fail(lines.size(), "line " + std::to_string(lines.size()) + " is torn (no newline)");
  }
  report.head_hash = expected_prev;

  // The head names the last line the KMS wrote: a log that ends earlier was
  // truncated, one whose last line hashes differently was altered.
  if (!head_text) {
    if (lines.empty()) {
      return report;
    }
    return fail(lines.size(), "the head file " + head_path_for(path_).string() + " is missing");
  }
  const ordered_json head = ordered_json::parse(*head_text, nullptr, false);
  if (!head.is_object() || !head.contains("seq") || !head["seq"].is_number_unsigned() ||
      !head.contains("hash") || !head["hash"].is_string()) {
    return fail(lines.size(), "the head file " + head_path_for(path_).string() + " is damaged");
  }
  const auto head_seq = head["seq"].get<std::uint64_t>();
  const auto head_hash = head["hash"].get<std::string>();
  if (head_seq > lines.size()) {
    return fail(lines.size() + 1, "the log ends at line " + std::to_string(lines.size()) + " but " +
                                      std::to_string(head_seq) +
                                      " lines were written: the last lines were removed");
  }
  if (head_seq == 0) {
    return lines.empty() ? report : fail(1, "the head file records an empty log");
  }
  // The head may lag the log by one line: an append whose head update was
  // interrupted.  Any other difference means the tail was rewritten.
  if (head_seq + 1 < lines.size() || sha256_hex(lines[head_seq - 1]) != head_hash) {
    return fail(head_seq, "line " + std::to_string(head_seq) +
                              " does not match the hash in the head file (altered)");
  }
  return report;
}

}  // namespace envcrypt
