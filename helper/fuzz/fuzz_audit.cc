// Audit trail verification (audit.h), fed a log and a head file as anyone
// who can write them would shape them.  Property: no sanitizer finding; a
// log reported intact has as many lines as it holds.
//
// Input: the log's text, then a NUL byte, then the head file's text; without
// a NUL there is no head file.  (JSON lines hold no raw NUL, so nothing
// verify() could read is out of reach.)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "audit.h"
#include "fuzz_check.h"

namespace envcrypt::fuzz {
namespace {

// A private directory for this process's log and head, made once: mode 0700
// and files 0600, as verify() insists.  Under /dev/shm when there is one, so
// the fuzzer does not wear a disk.
const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = std::string(base) + "/envcrypt-fuzz-audit.XXXXXX";
    require(::mkdtemp(pattern.data()) != nullptr, "a scratch directory can be made");
    std::atexit([] { std::filesystem::remove_all(scratch_dir()); });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

void put_file(const std::filesystem::path& path, std::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  require(fd >= 0, "the scratch file opens");
  const ssize_t written = ::write(fd, contents.data(), contents.size());
  ::close(fd);
  require(written == static_cast<ssize_t>(contents.size()), "the scratch file is written");
}

// The one place that knows the verification API: the audit rewrite
// (issue 16, point 7) changes it, and only this function follows.
struct Verdict {
  bool intact = false;
  std::uint64_t lines = 0;
};
std::optional<Verdict> verify_audit(std::string_view log, std::optional<std::string_view> head) {
  const std::filesystem::path log_path = scratch_dir() / "audit.log";
  const std::filesystem::path head_path = scratch_dir() / "audit.log.head";
  put_file(log_path, log);
  if (head) {
    put_file(head_path, *head);
  } else {
    std::filesystem::remove(head_path);
  }
  Result<AuditLog> audit = AuditLog::open(log_path, "fuzz", [] { return std::int64_t{0}; });
  require(audit.ok(), "the audit log opens");
  Result<AuditVerification> verdict = audit->verify();
  if (!verdict.ok()) {
    return std::nullopt;
  }
  return Verdict{verdict->intact, verdict->lines};
}

}  // namespace
}  // namespace envcrypt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t split = input.find('\0');
  const std::string_view log = input.substr(0, split);
  std::optional<std::string_view> head;
  if (split != std::string_view::npos) {
    head = input.substr(split + 1);
  }
  const std::optional<envcrypt::fuzz::Verdict> verdict = envcrypt::fuzz::verify_audit(log, head);
  if (verdict && verdict->intact) {
    const auto newlines = static_cast<std::uint64_t>(std::count(log.begin(), log.end(), '\n'));
    envcrypt::fuzz::require(verdict->lines == newlines, "an intact log has one record a line");
  }
  return 0;
}
