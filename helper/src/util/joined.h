// A list as text: "a, b, c" for messages and tables.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace envcrypt {

inline std::string joined(const std::vector<std::string>& items, std::string_view separator) {
  std::string text;
  for (std::size_t i = 0; i < items.size(); ++i) {
    text += (i == 0 ? "" : std::string(separator)) + items[i];
  }
  return text;
}

}  // namespace envcrypt
