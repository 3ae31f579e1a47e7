// envcryptctl's command line (envcryptctl(8)): parses
// with CLI11, calls the operations in volume.h and the KMS backends, prints
// text or --json.  Errors are one line, "envcryptctl: <what>: <why>", and the
// exit status is the ErrorCode (result.h).
#pragma once

#include <iosfwd>

namespace envcrypt {

// Runs one command; returns the process exit status.
int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace envcrypt
