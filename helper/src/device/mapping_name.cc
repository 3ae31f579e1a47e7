#include "device/mapping_name.h"

#include <linux/dm-ioctl.h>

#include <cctype>
#include <string>

#include "util/printable.h"

namespace envcrypt {
namespace {

static_assert(sizeof("ENVCRYPT-") - 1 + 32 + 1 + kMaxMappingName == DM_UUID_LEN - 1,
              "the longest name must leave room for the dm uuid's prefix and disk uuid");

bool is_name_char(unsigned char c) {
  return std::isalnum(c) != 0 || c == '_' || c == '-' || c == '.' || c == '+';
}

// The offending character, as itself when it is printable and not a blank.
std::string shown(unsigned char c) {
  return c > 0x20 && c < 0x7f ? std::string(1, static_cast<char>(c)) : escaped_byte(c);
}

}  // namespace

Status check_mapping_name(std::string_view name) {
  if (name.empty()) {
    return Error(ErrorCode::kUsage, "empty mapping name");
  }
  const std::string quoted = "name '" + printable(name) + "'";
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
