// An integer read from hostile JSON (keystore files, keystore backups):
// nlohmann's get<T>() converts a float (undefined behaviour when it is out
// of T's range) and wraps a negative or too large integer, so every reader
// asks this instead and refuses what it returns nullopt for, in its own
// error type.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>

namespace envcrypt {

// `value` as T when it is a JSON integer inside T's range; nullopt for a
// float, a string, or an integer out of range.
template <typename T>
std::optional<T> exact_integer(const nlohmann::json& value) {
  if (value.is_number_unsigned() &&
      value.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
    return static_cast<T>(value.get<std::uint64_t>());
  }
  if constexpr (std::is_signed_v<T>) {
    if (value.is_number_integer() && !value.is_number_unsigned()) {
      const std::int64_t number = value.get<std::int64_t>();
      if (number >= std::numeric_limits<T>::min() && number <= std::numeric_limits<T>::max()) {
        return static_cast<T>(number);
      }
    }
  }
  return std::nullopt;
}

}  // namespace envcrypt
