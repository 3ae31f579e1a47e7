// What `envcryptctl probe` prints for udev (udev_properties.h), from two
// header copies a hostile disk holds.  udev imports every line as a device
// property, so one injected line (ENVCRYPT_UNIT=..., SYSTEMD_WANTS=...) is
// the attack of issue 16.  Property: every line of the output is
// KEY=value with KEY in [A-Z_]+ and value in [A-Za-z0-9._:/@+-]*.
//
// Input: see header_input.h.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "boot/udev_properties.h"
#include "fuzz_check.h"
#include "header/header.h"
#include "header_input.h"

namespace envcrypt::fuzz {
namespace {

bool is_key_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }

bool is_value_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("._:/@+-").find(c) != std::string_view::npos;
}

// ^[A-Z_]+=[A-Za-z0-9._:/@+-]*$
bool is_property_line(std::string_view line) {
  const std::size_t equals = line.find('=');
  if (equals == 0 || equals == std::string_view::npos) {
    return false;
  }
  for (const char c : line.substr(0, equals)) {
    if (!is_key_char(c)) {
      return false;
    }
  }
  for (const char c : line.substr(equals + 1)) {
    if (!is_value_char(c)) {
      return false;
    }
  }
  return true;
}

// Every newline-terminated line, and a last unterminated one if any.
void check_properties(std::string_view output) {
  while (!output.empty()) {
    const std::size_t end = output.find('\n');
    require(is_property_line(output.substr(0, end)),
            "every probe line matches ^[A-Z_]+=[A-Za-z0-9._:/@+-]*$");
    if (end == std::string_view::npos) {
      return;
    }
    output.remove_prefix(end + 1);
  }
}

}  // namespace
}  // namespace envcrypt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const envcrypt::fuzz::HeaderCopies copies =
      envcrypt::fuzz::header_copies(std::span<const std::uint8_t>(data, size));
  envcrypt::Result<envcrypt::HeaderSelection> selection =
      envcrypt::select_header(copies.primary, copies.secondary);
  if (selection.ok()) {
    envcrypt::fuzz::check_properties(envcrypt::probe_output(*selection));
  }
  return 0;
}
