// What every fuzz target uses to turn a broken property into a finding:
// libFuzzer records an input as a crash when the process aborts.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace envcrypt::fuzz {

// Aborts, naming the property, unless `holds`.  Used for properties the code
// promises (a round trip, a character set), never for input the code is
// entitled to refuse.
inline void require(bool holds, const char* property) {
  if (!holds) {
    std::fprintf(stderr, "fuzz property violated: %s\n", property);
    std::abort();
  }
}

}  // namespace envcrypt::fuzz
