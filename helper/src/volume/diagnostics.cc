#include "volume/diagnostics.h"

#include <sys/stat.h>
#include <syslog.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "audit/audit.h"
#include "device/blockdev.h"
#include "device/mapping_name.h"
#include "util/file_io.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr std::string_view kKmipScheme = "kmip://";

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// key=value fields for syslog and the terminal: quoted when the value holds
// blanks, quotes, '=' or '\\', and every byte outside printable ASCII (a
// newline from a key server's message would start a forged log line) as
// \xNN.
std::string quoted_if_needed(const std::string& value) {
  const std::string safe = printable(value);
  if (!safe.empty() && safe == value && value.find_first_of(" \t\"=") == std::string::npos) {
    return value;
  }
  std::string out = "\"";
  for (const char c : safe) {
    if (c == '"') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

// Records are named after the disk; a name that breaks the mapping-name
// rule (and could climb out of the directory) gets no record.
Result<fs::path> error_file(const std::string& disk) {
  ENVCRYPT_TRY(check_mapping_name(disk));
  return run_dir() / "attach-errors" / disk;
}

json to_json(const AttachFailure& failure) {
  return {{"disk", failure.disk},     {"device", failure.device},
          {"cmk", failure.cmk_uri},   {"endpoint", failure.endpoint},
          {"step", failure.step},     {"code", static_cast<int>(failure.code)},
          {"reason", failure.reason}, {"time", failure.time}};
}

// Root-only, replaced atomically: a reader sees the old record or the new.
Status write_record(const AttachFailure& failure) {
  ENVCRYPT_ASSIGN_OR_RETURN(const fs::path path, error_file(failure.disk));
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  ::chmod(run_dir().c_str(), 0700);
  ::chmod(path.parent_path().c_str(), 0700);
  return write_file_durably(path, to_json(failure).dump() + "\n");
}

void log_line(const AttachFailure& failure, std::ostream& err) {
  const std::string line = "attach failed: " + failure_fields(failure);
  // Without a syslog daemon the message is dropped, which is harmless.
  ::openlog("envcryptctl", LOG_PID, LOG_DAEMON);
  ::syslog(LOG_ERR, "%s", line.c_str());
  ::closelog();
  err << "envcryptctl: " << line << '\n';
}

}  // namespace

std::string kms_endpoint(const Config& config, const std::string& cmk_uri) {
  if (cmk_uri.starts_with(kKmipScheme)) {
    const std::string rest = cmk_uri.substr(kKmipScheme.size());
    const std::string authority = rest.substr(0, rest.find('/'));
    for (const auto& [name, endpoint] : config.kmip_endpoints) {
      if (name == authority) {
        return "kmip " + endpoint.host + ":" + std::to_string(endpoint.port);
      }
    }
    return "kmip " + authority;
  }
  if (cmk_uri.empty()) {
    return "";
  }
  // local:// URIs, key ids and aliases.
  return "local keystore " + config.local_dir.string();
}

std::string failure_fields(const AttachFailure& failure) {
  std::string out;
  for (const auto& [key, value] : {std::pair<const char*, std::string>{"disk", failure.disk},
                                   {"device", failure.device},
                                   {"cmk", failure.cmk_uri.empty() ? "-" : failure.cmk_uri},
                                   {"endpoint", failure.endpoint.empty() ? "-" : failure.endpoint},
                                   {"step", failure.step},
                                   {"code", std::to_string(static_cast<int>(failure.code))},
                                   {"reason", failure.reason}}) {
    out += (out.empty() ? "" : " ") + std::string(key) + "=" + quoted_if_needed(value);
  }
  return out;
}

void report_attach_failure(AttachFailure failure, std::ostream& err) {
  if (failure.time == 0) {
    failure.time = now_seconds();
  }
  log_line(failure, err);
  if (auto recorded = write_record(failure); !recorded.ok()) {
    err << "envcryptctl: warning: cannot record the attach error: " << recorded.error().message()
        << '\n';
  }
}

namespace {

// The cache line goes to syslog as well as stderr: an attach that skipped
// the KMS's checks must be visible in the journal whoever ran it.
void report_attach_notes(const Attached& attached, std::ostream& err) {
  if (attached.from_cache) {
    const std::string line = attached.name + ": attached from the outage cache, KMS unreachable: " +
                             printable(attached.from_cache->reason) + ", valid until " +
                             format_rfc3339(attached.from_cache->valid_until);
    ::openlog("envcryptctl", LOG_PID, LOG_DAEMON);
    ::syslog(LOG_WARNING, "%s", line.c_str());
    ::closelog();
    err << "envcryptctl: " << line << '\n';
  }
  for (const std::string& note : attached.notes) {
    err << "envcryptctl: " << attached.name << ": warning: " << printable(note) << '\n';
  }
}

}  // namespace

Result<Attached> attach_with_diagnostics(KmsRegistry& kms, const AttachOptions& options,
                                         std::ostream& err) {
  AttachTrace trace;
  AttachOptions traced = options;
  traced.trace = &trace;
  auto attached = attach_volume(kms, traced);
  if (attached.ok()) {
    std::error_code ec;
    if (auto record = error_file(attached->name); record.ok()) {
      fs::remove(*record, ec);
    }
    report_attach_notes(*attached, err);
    return attached;
  }
  AttachFailure failure;
  failure.disk =
      !trace.name.empty() ? trace.name : options.name.value_or(options.device.filename().string());
  failure.device = options.device.string();
  failure.cmk_uri = trace.cmk_uri;
  failure.endpoint = kms_endpoint(kms.config(), trace.cmk_uri);
  failure.step = trace.step;
  failure.code = attached.error().code();
  failure.reason = attached.error().message();
  report_attach_failure(std::move(failure), err);
  return attached;
}

Result<std::optional<AttachFailure>> last_attach_error(const std::string& disk) {
  ENVCRYPT_ASSIGN_OR_RETURN(const fs::path path, error_file(disk));
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return std::optional<AttachFailure>();
  }
  std::ifstream in(path);
  if (!in) {
    return Error(ErrorCode::kIo, path.string() + ": cannot read (not root?)");
  }
  const json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(ErrorCode::kIo, path.string() + ": not an attach error record");
  }
  AttachFailure failure;
  failure.disk = j.value("disk", disk);
  failure.device = j.value("device", "");
  failure.cmk_uri = j.value("cmk", "");
  failure.endpoint = j.value("endpoint", "");
  failure.step = j.value("step", "");
  failure.code = static_cast<ErrorCode>(j.value("code", 1));
  failure.reason = j.value("reason", "");
  failure.time = j.value("time", std::int64_t{0});
  return std::optional<AttachFailure>(std::move(failure));
}

}  // namespace envcrypt
