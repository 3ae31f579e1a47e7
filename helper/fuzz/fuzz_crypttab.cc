// envcrypttab parsing (crypttab.h): the file is root's, but udev and the
// systemd generator act on what it says, so a parser bug there misroutes
// boot.  Properties: no sanitizer finding; every accepted entry has a name
// and exactly one of a device path and a uuid, and says where it came from;
// every skipped line's message is one line of printable ASCII.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/crypttab.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using envcrypt::fuzz::require;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const envcrypt::Envcrypttab tab = envcrypt::parse_envcrypttab(text, "fuzz.tab");
  for (const envcrypt::Error& skipped : tab.skipped) {
    for (const char c : skipped.message()) {
      require(c >= 0x20 && c < 0x7f, "a skipped line's message is printable ASCII");
    }
  }
  for (const envcrypt::TabEntry& entry : tab.entries) {
    require(!entry.name.empty(), "an accepted entry has a name");
    require(entry.device_path.empty() != entry.uuid.empty(),
            "an accepted entry has exactly one of a device path and a uuid");
    require(entry.line >= 1 && !entry.source.empty(), "an accepted entry names its line");
    (void)entry.device_spec();
  }
  return 0;
}
