#include "util/uuid.h"

#include <cstring>

#include "util/crypto.h"

namespace envcrypt {
namespace {

constexpr std::size_t kTextSize = 36;

bool dash_at(std::size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

// Packs 32 hexadecimal digits into 16 bytes; nullopt on any other input.
std::optional<Uuid> pack(std::string_view digits) {
  if (digits.size() != 2 * kUuidSize) {
    return std::nullopt;
  }
  auto bytes = from_hex(digits);
  if (!bytes.ok()) {
    return std::nullopt;
  }
  Uuid uuid{};
  std::memcpy(uuid.data(), bytes->data(), kUuidSize);
  return uuid;
}

}  // namespace

std::string uuid_to_hex(const Uuid& uuid) { return to_hex(uuid); }

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
