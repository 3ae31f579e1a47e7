// envcryptctl's exit codes (envcryptctl(8), EXIT STATUS): the one place
// where an error's canonical code becomes a process exit code.  Nothing
// below the command line chooses an exit code.
#pragma once

#include "util/result.h"

namespace envcrypt {

// 1 internal, 2 usage, 3 not found, 4 denied, 5 corrupt, 6 I/O, 7 KMS
// unreachable, 8 conflict.
int exit_code_for(ErrorCode code);

inline int exit_code_for(const Error& error) { return exit_code_for(error.code()); }

}  // namespace envcrypt
