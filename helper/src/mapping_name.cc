#include "mapping_name.h"

#include <linux/dm-ioctl.h>

#include <cctype>
#include <string>

namespace envcrypt {
namespace {

static_assert(sizeof("ENVCRYPT-") - 1 + 32 + 1 + kMaxMappingName == DM_UUID_LEN - 1,
              "the longest name must leave room for the dm uuid's prefix and disk uuid");

bool is_name_char(unsigned char c) {
  return std::isalnum(c) != 0 || c == '_' || c == '-' || c == '.' || c == '+';
}

// The offending character, as itself when printable, else as \xNN.
std::string shown(unsigned char c) {
  if (c > 0x20 && c < 0x7f) {
    return {static_cast<char>(c)};
  }
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("\\x") + kHex[c >> 4] + kHex[c & 0xf];
}

std::string escaped(std::string_view name) {
  std::string out;
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    out +=
        c == '\\' || c == '\'' ? shown(c) : (c > 0x20 && c < 0x7f ? std::string(1, ch) : shown(c));
  }
  return out;
}

}  // namespace

Status check_mapping_name(std::string_view name) {
  if (name.empty()) {
    return Error(ErrorCode::kUsage, "empty mapping name");
  }
  const std::string quoted = "name '" + escaped(name) + "'";
  if (name.size() > kMaxMappingName) {
    return Error(ErrorCode::kUsage,
                 quoted + " is longer than " + std::to_string(kMaxMappingName) + " characters");
  }
  if (name == "." || name == ".." || name.front() == '-') {
    return Error(ErrorCode::kUsage, quoted + " is not allowed");
  }
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (!is_name_char(c)) {
      return Error(ErrorCode::kUsage,
                   quoted + " contains '" + shown(c) + "' (use letters, digits and . _ + -)");
    }
  }
  return OkStatus();
}

}  // namespace envcrypt
