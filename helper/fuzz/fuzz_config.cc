// Configuration parsing (config.h) from TOML text.  Properties: no sanitizer
// finding (toml++ included); every accepted KMIP endpoint has a first server
// and a call deadline that is not negative.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using envcrypt::fuzz::require;
  const std::string text(reinterpret_cast<const char*>(data), size);
  envcrypt::Result<envcrypt::Config> config = envcrypt::parse_config(text, "fuzz.conf");
  if (!config.ok()) {
    return 0;
  }
  for (const auto& [name, endpoint] : config->kmip_endpoints) {
    require(!endpoint.servers().empty(), "an accepted KMIP endpoint has a server");
    require(endpoint.call_deadline() >= std::chrono::milliseconds(0),
            "a KMIP call deadline is not negative");
  }
  return 0;
}
