#include "audit/audit_line.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <limits>

namespace envcrypt::audit_line {

std::filesystem::path head_path_for(const std::filesystem::path& log) {
  std::filesystem::path head = log;
  head += ".head";
  return head;
}

bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool same_mac(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string hmac_hex(const SecretBytes& key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(),
           &size) == nullptr) {
    return {};  // never equal to a stored MAC, so the line fails to verify
  }
  return to_hex(std::span<const std::uint8_t>(mac.data(), size));
}

// mac(N) = HMAC(chain key, mac(N-1) in hex || line N up to its mac field).
std::string line_mac(const AuditKeys& keys, std::string_view prev_mac, std::string_view body) {
  std::string data(prev_mac);
  data.append(body);
  return hmac_hex(keys.chain, data);
}

std::string head_seal(const AuditKeys& keys, std::uint64_t seq, std::string_view mac) {
  std::string data = "envcrypt-audit-head-v1";
  data.push_back('\0');
  data += std::to_string(seq);
  data.push_back('\0');
  data.append(mac);
  return hmac_hex(keys.head, data);
}

std::optional<KeyedLine> split_keyed(std::string_view line) {
  if (line.size() <= kMacSuffixSize) {
    return std::nullopt;
  }
  const std::size_t at = line.size() - kMacSuffixSize;
  const std::string_view mac = line.substr(at + kMacOpen.size(), kMacHexSize);
  if (line.substr(at, kMacOpen.size()) != kMacOpen || !line.ends_with("\"}") ||
      !is_lower_hex(mac)) {
    return std::nullopt;
  }
  return KeyedLine{line.substr(0, at), mac};
}

ordered_json parse_object(std::string_view text) {
  ordered_json parsed = ordered_json::parse(text, nullptr, false);
  return parsed.is_object() ? parsed : ordered_json();
}

bool has_unsigned(const ordered_json& object, const char* name) {
  return object.is_object() && object.contains(name) && object[name].is_number_unsigned();
}

bool fits_u32(const ordered_json& value) {
  return value.is_number_unsigned() &&
         value.get<std::uint64_t>() <= std::numeric_limits<std::uint32_t>::max();
}

// A line of the unkeyed format of envcryptctl 0.1: a number and a "prev".
bool is_legacy(std::string_view line) {
  const ordered_json parsed = parse_object(line);
  return has_unsigned(parsed, "seq") && parsed.contains("prev") && parsed["prev"].is_string() &&
         !parsed.contains("mac");
}

std::vector<std::string_view> split_lines(std::string_view contents) {
  std::vector<std::string_view> lines;
  std::size_t begin = 0;
  while (begin < contents.size()) {
    std::size_t end = contents.find('\n', begin);
    if (end == std::string_view::npos) {
      end = contents.size();
    }
    lines.push_back(contents.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

Result<AuditRecord> parse_record(std::string_view line) {
  const ordered_json parsed = parse_object(line);
  if (!parsed.is_object()) {
    return Error(ErrorCode::kCorrupt, "not a JSON object");
  }
  AuditRecord record;
  // Numbers are checked before they are converted: nlohmann's get<> of a
  // float, a negative number or one too large is undefined or wraps.
  if (!has_unsigned(parsed, "seq")) {
    return Error(ErrorCode::kCorrupt, "missing or mistyped field: seq is not an unsigned integer");
  }
  if (parsed.contains("key_version") && !parsed["key_version"].is_null() &&
      !fits_u32(parsed["key_version"])) {
    return Error(ErrorCode::kCorrupt,
                 "missing or mistyped field: key_version is not an unsigned 32-bit integer");
  }
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
    record.is_intent = parsed.value("phase", "") == "intent";
  } catch (const nlohmann::json::exception& e) {
    return Error(ErrorCode::kCorrupt, std::string("missing or mistyped field: ") + e.what());
  }
  ENVCRYPT_ASSIGN_OR_RETURN(record.unix_time, parse_rfc3339(record.time));
  record.line = std::string(line);
  return record;
}

}  // namespace envcrypt::audit_line
