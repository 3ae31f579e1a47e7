// The outage cache's files (outage_cache.h): an entry, <uuid>.json
// (decode_cache_entry), and a line of <uuid>.uses (decode_cache_use).  The
// first input byte picks which: even, an entry; odd, a use line.
// Properties: no sanitizer finding; an accepted entry has a disk uuid, 64
// lower-case hex digits of wrap digest and no PIN, and encodes back to a
// text that decodes to the same entry; an accepted use encodes to one line
// that decodes to the same use.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "volume/outage_cache.h"

namespace {

using envcrypt::fuzz::require;

void fuzz_entry(const std::string& text) {
  const envcrypt::Result<envcrypt::CacheEntry> entry = envcrypt::decode_cache_entry(text);
  if (!entry.ok()) {
    return;
  }
  require(entry->disk_uuid.size() == 36 && entry->wrap_sha256.size() == 64,
          "an accepted entry names a uuid and a 64-digit digest");
  require(!entry->sealed.policy.pin, "an accepted entry asks for no PIN");
  const envcrypt::Result<envcrypt::CacheEntry> again =
      envcrypt::decode_cache_entry(envcrypt::encode_cache_entry(*entry));
  require(again.ok(), "an accepted entry encodes back to one that decodes");
  require(again->disk_uuid == entry->disk_uuid && again->cmk_uri == entry->cmk_uri &&
              again->cmk_version == entry->cmk_version &&
              again->wrap_sha256 == entry->wrap_sha256 &&
              again->confirmed_at == entry->confirmed_at &&
              again->sealed.public_area == entry->sealed.public_area &&
              again->sealed.private_area == entry->sealed.private_area &&
              again->sealed.policy.pcrs == entry->sealed.policy.pcrs,
          "decode(encode(entry)) == entry");
}

void fuzz_use(const std::string& line) {
  const envcrypt::Result<envcrypt::CacheUse> use = envcrypt::decode_cache_use(line);
  if (!use.ok()) {
    return;
  }
  const std::string encoded = envcrypt::encode_cache_use(*use);
  require(encoded.find('\n') == std::string::npos, "an encoded use is one line");
  const envcrypt::Result<envcrypt::CacheUse> again = envcrypt::decode_cache_use(encoded);
  require(again.ok(), "an accepted use encodes back to one that decodes");
  require(again->time == use->time && again->reason == use->reason &&
              again->valid_until == use->valid_until && again->cmk_uri == use->cmk_uri &&
              again->cmk_version == use->cmk_version,
          "decode(encode(use)) == use");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    fuzz_entry(text);
  } else {
    fuzz_use(text);
  }
  return 0;
}
