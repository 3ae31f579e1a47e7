#include "uuid.h"

#include <cstring>

#include "crypto.h"

namespace envcrypt {
namespace {

constexpr std::size_t kTextSize = 36;
constexpr char kHexDigits[] = "0123456789abcdef";

bool dash_at(std::size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

int nibble(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// Packs 32 hexadecimal digits into 16 bytes; nullopt on any other input.
std::optional<Uuid> pack(std::string_view digits) {
  if (digits.size() != 2 * kUuidSize) {
    return std::nullopt;
  }
  Uuid uuid{};
  for (std::size_t i = 0; i < kUuidSize; ++i) {
    const int high = nibble(digits[2 * i]);
    const int low = nibble(digits[(2 * i) + 1]);
    if (high < 0 || low < 0) {
      return std::nullopt;
    }
    uuid[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  return uuid;
}

}  // namespace

std::string uuid_to_hex(const Uuid& uuid) {
  std::string out;
  out.reserve(2 * kUuidSize);
  for (const std::uint8_t byte : uuid) {
    out += kHexDigits[byte >> 4];
    out += kHexDigits[byte & 0xf];
  }
  return out;
}

std::string uuid_to_string(const Uuid& uuid) {
  std::string out;
  for (const char digit : uuid_to_hex(uuid)) {
    if (dash_at(out.size())) {
      out += '-';
    }
    out += digit;
  }
  return out;
}

std::optional<Uuid> parse_uuid(std::string_view text) {
  if (text.size() != kTextSize) {
    return std::nullopt;
  }
  std::string digits;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (dash_at(i) != (text[i] == '-')) {
      return std::nullopt;
    }
    if (!dash_at(i)) {
      digits += text[i];
    }
  }
  return pack(digits);
}

Result<Uuid> uuid_from_string(std::string_view text) {
  if (auto uuid = parse_uuid(text)) {
    return *uuid;
  }
  return Error(ErrorCode::kUsage, "'" + std::string(text) + "' is not a uuid");
}

std::optional<Uuid> uuid_from_hex(std::string_view hex) { return pack(hex); }

bool is_canonical_uuid(std::string_view text) {
  const auto uuid = parse_uuid(text);
  return uuid && uuid_to_string(*uuid) == text;
}

Result<Uuid> random_uuid() {
  ENVCRYPT_ASSIGN_OR_RETURN(Bytes bytes, random_bytes(kUuidSize));
  Uuid uuid{};
  std::memcpy(uuid.data(), bytes.data(), uuid.size());
  uuid[6] = static_cast<std::uint8_t>((uuid[6] & 0x0f) | 0x40);  // version 4
  uuid[8] = static_cast<std::uint8_t>((uuid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return uuid;
}

}  // namespace envcrypt
