#include "util/printable.h"

namespace envcrypt {

std::string escaped_byte(unsigned char byte) {
  static constexpr char kHex[] = "0123456789abcdef";
  return {'\\', 'x', kHex[byte >> 4], kHex[byte & 0xf]};
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7e || c == '\\') {
      out += escaped_byte(c);
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace envcrypt
