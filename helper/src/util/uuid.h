// The one uuid type of the helper: a disk's uuid in its header, a local
// KMS key id, the uuid of an envcrypttab UUID= spec or an automatic entry.
// Text is the canonical RFC 4122 form, 8-4-4-4-12 hexadecimal digits, which
// is what blkid, udev and the kernel print; it is written in lower case.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace envcrypt {

inline constexpr std::size_t kUuidSize = 16;

// 16 bytes in the order the text shows them (the header stores them so).
using Uuid = std::array<std::uint8_t, kUuidSize>;

// 8-4-4-4-12 lower-case hexadecimal digits.
std::string uuid_to_string(const Uuid& uuid);
// The 32 digits without the dashes (device-mapper uuids, mapping names).
std::string uuid_to_hex(const Uuid& uuid);

// Exactly 8-4-4-4-12 hexadecimal digits, either case; nothing else.
std::optional<Uuid> parse_uuid(std::string_view text);
// parse_uuid, with the error "'TEXT' is not a uuid".
Result<Uuid> uuid_from_string(std::string_view text);
// Exactly 32 hexadecimal digits, either case (uuid_to_hex's form).
std::optional<Uuid> uuid_from_hex(std::string_view hex);
// The form uuid_to_string writes: parses, and is in lower case.
bool is_canonical_uuid(std::string_view text);

// A random RFC 4122 version 4 uuid.
Result<Uuid> random_uuid();

}  // namespace envcrypt
