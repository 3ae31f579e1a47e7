// Audit trail verification (audit.h), fed a log and a head file as anyone
// who can write them would shape them.  Property: no sanitizer finding; a
// log reported intact has as many lines as it holds.
//
// Input: the log's text, then a NUL byte, then the head file's text; without
// a NUL there is no head file.  (JSON lines hold no raw NUL, so nothing
// verify() could read is out of reach.)
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "audit/audit.h"
#include "fuzz_check.h"

namespace envcrypt::fuzz {
namespace {

// The one place that knows the verification API: verify_audit_text works on
// the bytes alone, keyed from a fixed root key (the MACs will rarely match,
// but everything a reader parses before and around them is exercised).
struct Verdict {
  bool intact = false;
  std::uint64_t lines = 0;
};
Verdict verify_audit(std::string_view log, std::optional<std::string_view> head) {
  static const AuditKeys keys = [] {
    std::array<std::uint8_t, 32> root{};
    root.fill(0x5a);
    Result<AuditKeys> derived = derive_audit_keys(root);
    require(derived.ok(), "audit keys derive from a fixed root key");
    return std::move(derived).value();
  }();
  const AuditVerification verdict = verify_audit_text(log, head, keys);
  return Verdict{verdict.intact, verdict.lines};
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
  const envcrypt::fuzz::Verdict verdict = envcrypt::fuzz::verify_audit(log, head);
  if (verdict.intact) {
    const auto newlines = static_cast<std::uint64_t>(std::count(log.begin(), log.end(), '\n'));
    envcrypt::fuzz::require(verdict.lines == newlines, "an intact log has one record a line");
  }
  return 0;
}
