// Text from a disk, a key server, a configuration file or the command line,
// made safe to print on a terminal, in a log line or in a record: every byte
// outside printable ASCII, and the backslash, becomes \xNN, so the output
// is one line and says exactly which bytes were there.
#pragma once

#include <string>
#include <string_view>

namespace envcrypt {

std::string printable(std::string_view text);

// One byte as \xNN.
std::string escaped_byte(unsigned char byte);

}  // namespace envcrypt
