// The line format of the audit trail, shared by its writer (audit.cc) and
// its verifier (audit_verify.cc): the MAC suffix of a keyed line, the
// chain and head MACs, and parsing a line without trusting it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/audit.h"
#include "util/crypto.h"

namespace envcrypt::audit_line {

using ordered_json = nlohmann::ordered_json;

// The `prev` of the first legacy line and the chain value before the first
// keyed line: there is no line before them.
inline const std::string kGenesisHash(2 * kSha256Size, '0');

// A keyed line ends in exactly this: ,"mac":"<64 hex>"}
inline constexpr std::string_view kMacOpen = R"(,"mac":")";
inline constexpr std::size_t kMacHexSize = 2 * kSha256Size;
inline constexpr std::size_t kMacSuffixSize = kMacOpen.size() + kMacHexSize + 2;

// The line that seals the unkeyed lines of an envcryptctl 0.1 log.
inline constexpr std::string_view kSealOperation = "AuditChainKeyed";
inline constexpr std::string_view kAnchorPrefix = "audit-v1:";
inline constexpr int kHeadVersion = 2;

// <log>.head, the sealed head file beside the log.
std::filesystem::path head_path_for(const std::filesystem::path& log);

// Only the digits 0-9 and a-f.
bool is_lower_hex(std::string_view text);

// Constant-time comparison of two MACs in hex.
bool same_mac(std::string_view a, std::string_view b);

// HMAC-SHA256 in hex; empty (never equal to a stored MAC) if it fails.
std::string hmac_hex(const SecretBytes& key, std::string_view data);

// mac(N) = HMAC(chain key, mac(N-1) in hex || line N up to its mac field).
std::string line_mac(const AuditKeys& keys, std::string_view prev_mac, std::string_view body);

// The head file's seal over its sequence number and last MAC.
std::string head_seal(const AuditKeys& keys, std::uint64_t seq, std::string_view mac);

// A keyed line split into what its MAC covers and the MAC it carries.
struct KeyedLine {
  std::string_view body;
  std::string_view mac;
};

std::optional<KeyedLine> split_keyed(std::string_view line);

// The line as a JSON object, or null when it is not one.
ordered_json parse_object(std::string_view text);

// Whether `object` has an unsigned integer field `name`.
bool has_unsigned(const ordered_json& object, const char* name);

// An unsigned JSON number that fits 32 bits.
bool fits_u32(const ordered_json& value);

// A line of the unkeyed format of envcryptctl 0.1: a number and a "prev".
bool is_legacy(std::string_view line);

// The log's lines without their newlines (a torn last line included).
std::vector<std::string_view> split_lines(std::string_view contents);

// A line as a record, every field checked before it is converted.
Result<AuditRecord> parse_record(std::string_view line);

}  // namespace envcrypt::audit_line
