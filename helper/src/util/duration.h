// Durations as systemd.time(7) writes them, for envcrypttab's
// x-systemd.device-timeout= and envcrypt.conf's [outage_cache] max_age.
#pragma once

#include <chrono>
#include <string_view>

#include "util/result.h"

namespace envcrypt {

// "90", "1500ms", "90s", "2min", "1h", "1h30min" (a bare number is
// seconds); ErrorCode::kUsage when malformed or over `limit` (whole hours),
// the bound checked after conversion, so "86400min" is over a day.
Result<std::chrono::milliseconds> parse_duration(std::string_view text,
                                                 std::chrono::milliseconds limit);

}  // namespace envcrypt
