// Verification of the audit trail (AuditLog::verify, verify_audit_text):
// the MAC chain line by line, the sealed head, an anchor kept off the host
// and the intents left open.  Each check stops at the first bad line.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/audit.h"
#include "audit/audit_line.h"

namespace envcrypt {
namespace {

using namespace audit_line;  // the line format's vocabulary (audit_line.h)

// A value from the log for a message: printable ASCII only, so a line
// cannot put control sequences on the operator's terminal.
std::string printable(std::string_view text) {
  std::string shown;
  for (const char c : text.substr(0, 128)) {
    shown.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return shown;
}

// Whether a line from `from` on carries sequence number `seq`.
bool appears_later(const std::vector<std::string_view>& lines, std::size_t from,
                   std::uint64_t seq) {
  for (std::size_t index = from; index < lines.size(); ++index) {
    const ordered_json parsed = parse_object(lines[index]);
    if (has_unsigned(parsed, "seq") && parsed["seq"].get<std::uint64_t>() == seq) {
      return true;
    }
  }
  return false;
}

// What is wrong with line `number` carrying `seq`, or nothing.
std::optional<std::string> sequence_problem(const std::vector<std::string_view>& lines,
                                            std::uint64_t number, std::uint64_t seq) {
  const std::string prefix =
      "line " + std::to_string(number) + " has sequence number " + std::to_string(seq) + ": ";
  if (seq < number) {
    return prefix + "lines were reordered or duplicated";
  }
  if (seq == number) {
    return std::nullopt;
  }
  if (appears_later(lines, number, number)) {
    return prefix + "lines were reordered";
  }
  return prefix + (seq == number + 1
                       ? "the line numbered " + std::to_string(number) + " was removed"
                       : "the lines numbered " + std::to_string(number) + ".." +
                             std::to_string(seq - 1) + " were removed");
}

// Walks a log held in memory: the unkeyed lines of an old log first (if
// any), the line that seals them, the keyed chain, then the head file, the
// anchor and the intents.  Each check stops at the first bad line.
class Verifier {
 public:
  Verifier(std::string_view log, const AuditKeys& keys)
      : log_(log), keys_(keys), lines_(split_lines(log)), macs_(lines_.size()) {
    report_.lines = lines_.size();
  }

  AuditVerification run(std::optional<std::string_view> head,
                        const std::optional<AuditAnchor>& anchor) {
    if (check_legacy() && check_keyed() && check_torn() && check_head(head) &&
        check_anchor(anchor) && check_intents() && !lines_.empty()) {
      report_.head = {lines_.size(), macs_.back()};
    }
    return report_;
  }

 private:
  bool fail(std::uint64_t line, std::string problem) {
    report_.intact = false;
    report_.first_bad_line = line;
    report_.problem = std::move(problem);
    return false;
  }

  static std::string line_text(std::uint64_t number) { return "line " + std::to_string(number); }

  // The unkeyed lines of envcryptctl 0.1: SHA-256 chained, checked as
  // before, and accepted only once a keyed line seals them.
  bool check_legacy() {
    std::string expected_prev = kGenesisHash;
    while (legacy_lines_ < lines_.size() && is_legacy(lines_[legacy_lines_])) {
      const std::uint64_t number = legacy_lines_ + 1;
      const ordered_json parsed = parse_object(lines_[legacy_lines_]);
      if (auto problem = sequence_problem(lines_, number, parsed["seq"].get<std::uint64_t>())) {
        return fail(number, *problem);
      }
      if (parsed["prev"].get<std::string>() != expected_prev) {
        return fail(number - 1, line_text(number - 1) + " was altered: " + line_text(number) +
                                    " records a different hash for it");
      }
      if (!parse_record(lines_[legacy_lines_]).ok()) {
        return fail(number, line_text(number) + " lacks audit fields (altered)");
      }
      expected_prev = sha256_hex(lines_[legacy_lines_]);
      ++legacy_lines_;
    }
    legacy_head_ = expected_prev;
    if (legacy_lines_ > 0 && legacy_lines_ == lines_.size()) {
      return fail(legacy_lines_,
                  "lines 1.." + std::to_string(legacy_lines_) +
                      " are in the unkeyed format of envcryptctl 0.1 and not sealed: anyone "
                      "who can write the file could have rewritten them; the next kms "
                      "operation seals them");
    }
    return true;
  }

  bool check_keyed() {
    std::string prev = kGenesisHash;
    for (std::size_t index = legacy_lines_; index < lines_.size(); ++index) {
      const std::uint64_t number = index + 1;
      const std::optional<KeyedLine> keyed = split_keyed(lines_[index]);
      const ordered_json parsed = keyed ? parse_object(lines_[index]) : ordered_json();
      if (!has_unsigned(parsed, "seq")) {
        return fail(number, line_text(number) + (is_legacy(lines_[index])
                                                     ? " is an unkeyed line inside the keyed "
                                                       "chain (inserted or altered)"
                                                     : " is not an audit record (altered or "
                                                       "torn)"));
      }
      if (auto problem = sequence_problem(lines_, number, parsed["seq"].get<std::uint64_t>())) {
        return fail(number, *problem);
      }
      if (!same_mac(line_mac(keys_, prev, keyed->body), keyed->mac)) {
        return fail(number, line_text(number) +
                                " was altered: its MAC does not verify under this root key");
      }
      if (!parse_record(lines_[index]).ok()) {
        return fail(number, line_text(number) + " lacks audit fields (altered)");
      }
      if (index == legacy_lines_ && legacy_lines_ > 0 && !seals_legacy(parsed)) {
        return fail(number, line_text(number) + " does not seal the " +
                                std::to_string(legacy_lines_) +
                                " unkeyed lines before it: they were altered after the KMS "
                                "sealed them, or lines were inserted");
      }
      if (!track_intent(number, parsed)) {
        return false;
      }
      prev = std::string(keyed->mac);
      macs_[index] = prev;
    }
    return true;
  }

  // The sealing line names how many unkeyed lines it seals and the SHA-256
  // of the last one, which the unkeyed chain binds to every line before.
  bool seals_legacy(const ordered_json& parsed) const {
    if (parsed.value("operation", "") != kSealOperation || !parsed.contains("details") ||
        !parsed["details"].is_object()) {
      return false;
    }
    const ordered_json& details = parsed["details"];
    return details.value("legacy_lines", "") == std::to_string(legacy_lines_) &&
           details.value("legacy_sha256", "") == legacy_head_;
  }

  bool track_intent(std::uint64_t number, const ordered_json& parsed) {
    if (parsed.value("phase", "") == "intent") {
      open_intents_[number] = printable(parsed.value("operation", "")) + " on key " +
                              printable(parsed.value("key_id", ""));
    }
    if (has_unsigned(parsed, "intent")) {
      const auto intent = parsed["intent"].get<std::uint64_t>();
      if (open_intents_.erase(intent) == 0) {
        return fail(number, line_text(number) + " resolves line " + std::to_string(intent) +
                                ", which is not an open intent");
      }
    }
    return true;
  }

  bool check_torn() {
    if (!log_.empty() && log_.back() != '\n') {
      return fail(lines_.size(), line_text(lines_.size()) + " is torn (no newline)");
    }
    return true;
  }

  // The head names the last line the KMS wrote: a log that ends earlier was
  // truncated, one whose line there carries another MAC was altered.  The
  // head may lag the log by one line: an append stopped before its head
  // update.
  bool check_head(std::optional<std::string_view> head_text) {
    const std::uint64_t count = lines_.size();
    if (!head_text) {
      return count == 0 || fail(count, "the head file is missing");
    }
    const ordered_json head = parse_object(*head_text);
    if (!has_unsigned(head, "version") || head["version"] != kHeadVersion ||
        !has_unsigned(head, "seq") || !head.contains("mac") || !head["mac"].is_string() ||
        !head.contains("seal") || !head["seal"].is_string()) {
      return fail(count, "the head file is damaged or unsealed");
    }
    const auto seq = head["seq"].get<std::uint64_t>();
    const auto mac = head["mac"].get<std::string>();
    if (!same_mac(head_seal(keys_, seq, mac), head["seal"].get<std::string>())) {
      return fail(count, "the head file is not sealed under this root key (replaced)");
    }
    if (seq > count) {
      return fail(count + 1, "the log ends at line " + std::to_string(count) + " but " +
                                 std::to_string(seq) +
                                 " lines were written: the last lines were removed");
    }
    if (seq == 0 || seq + 1 < count) {
      return fail(seq + 1, "the head file names line " + std::to_string(seq) +
                               " but the log goes on to line " + std::to_string(count) +
                               ": the head was replaced by an older one");
    }
    if (!same_mac(macs_[seq - 1], mac)) {
      return fail(seq, line_text(seq) + " does not match the MAC in the head file (altered)");
    }
    return true;
  }

  bool check_anchor(const std::optional<AuditAnchor>& anchor) {
    if (!anchor) {
      return true;
    }
    const std::uint64_t count = lines_.size();
    if (anchor->seq > count) {
      return fail(count + 1, "the log ends at line " + std::to_string(count) +
                                 " but the anchor records line " + std::to_string(anchor->seq) +
                                 ": the log was truncated or rolled back");
    }
    if (anchor->seq == 0 || !same_mac(macs_[anchor->seq - 1], anchor->mac)) {
      return fail(anchor->seq, line_text(anchor->seq) +
                                   " does not match the anchor: the log was rewritten after the "
                                   "anchor was taken");
    }
    return true;
  }

  bool check_intents() {
    if (open_intents_.empty()) {
      return true;
    }
    const auto& [number, what] = *open_intents_.begin();
    return fail(number, line_text(number) + " is the intent of " + what +
                            " with no outcome: the KMS stopped between this line and its "
                            "keystore commit, so that change may or may not be committed");
  }

  std::string_view log_;
  const AuditKeys& keys_;
  std::vector<std::string_view> lines_;
  std::vector<std::string> macs_;  // the chain value after each keyed line
  std::size_t legacy_lines_ = 0;
  std::string legacy_head_;
  std::map<std::uint64_t, std::string> open_intents_;
  AuditVerification report_;
};

}  // namespace

AuditVerification verify_audit_text(std::string_view log, std::optional<std::string_view> head,
                                    const AuditKeys& keys,
                                    const std::optional<AuditAnchor>& anchor) {
  return Verifier(log, keys).run(head, anchor);
}

}  // namespace envcrypt
