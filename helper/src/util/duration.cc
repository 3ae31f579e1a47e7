#include "util/duration.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>

#include "util/printable.h"

namespace envcrypt {
namespace {

// One "<number><unit>" part of a duration, in milliseconds per unit.
struct TimeUnit {
  std::string_view name;
  std::uint64_t ms;
};
// systemd.time(7)'s spellings of the units a duration takes.
constexpr std::array kTimeUnits = {
    TimeUnit{"ms", 1},          TimeUnit{"msec", 1},       TimeUnit{"s", 1000},
    TimeUnit{"sec", 1000},      TimeUnit{"second", 1000},  TimeUnit{"seconds", 1000},
    TimeUnit{"m", 60000},       TimeUnit{"min", 60000},    TimeUnit{"minute", 60000},
    TimeUnit{"minutes", 60000}, TimeUnit{"h", 3600000},    TimeUnit{"hr", 3600000},
    TimeUnit{"hour", 3600000},  TimeUnit{"hours", 3600000}};

std::optional<std::uint64_t> unit_ms(std::string_view name) {
  for (const TimeUnit& unit : kTimeUnits) {
    if (unit.name == name) {
      return unit.ms;
    }
  }
  return std::nullopt;
}

// "a day (24h)", "30 days (720h)": a limit of whole hours.
std::string limit_text(std::chrono::milliseconds limit) {
  const auto hours = std::chrono::duration_cast<std::chrono::hours>(limit).count();
  const std::string in_hours = "(" + std::to_string(hours) + "h)";
  if (hours == 24) {
    return "a day " + in_hours;
  }
  if (hours % 24 == 0) {
    return std::to_string(hours / 24) + " days " + in_hours;
  }
  return std::to_string(hours) + "h";
}

}  // namespace

Result<std::chrono::milliseconds> parse_duration(std::string_view text,
                                                 std::chrono::milliseconds limit_ms) {
  const auto malformed = [&] {
    return Error(ErrorCode::kUsage, "'" + printable(text) +
                                        "' is not a duration (a number of ms, s, min or h; "
                                        "a bare number is seconds)");
  };
  if (text.empty()) {
    return malformed();
  }
  // Each part is bounded before it is scaled, and the sum after every part,
  // so nothing overflows and "86400min" is refused like "25h".
  const auto limit = static_cast<std::uint64_t>(limit_ms.count());
  std::uint64_t total = 0;
  const char* at = text.data();
  const char* const end = text.data() + text.size();
  while (at < end) {
    std::uint64_t value = 0;
    const auto [unit_start, ec] = std::from_chars(at, end, value);
    if (ec != std::errc() && ec != std::errc::result_out_of_range) {
      return malformed();
    }
    const char* unit_end = unit_start;
    while (unit_end < end && std::isalpha(static_cast<unsigned char>(*unit_end)) != 0) {
      ++unit_end;
    }
    const std::string_view name(unit_start, static_cast<std::size_t>(unit_end - unit_start));
    // A bare number is seconds, but only on its own ("90"), as in systemd.
    const auto scale = name.empty() && at == text.data() && unit_end == end
                           ? std::optional<std::uint64_t>(1000)
                           : unit_ms(name);
    if (!scale) {
      return malformed();
    }
    if (ec == std::errc::result_out_of_range || value > limit ||
        (total += value * *scale) > limit) {
      return Error(ErrorCode::kUsage,
                   "'" + printable(text) + "' is longer than " + limit_text(limit_ms));
    }
    at = unit_end;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(total));
}

}  // namespace envcrypt
