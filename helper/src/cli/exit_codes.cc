#include "cli/exit_codes.h"

namespace envcrypt {

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
      return 1;
    case ErrorCode::kUsage:
      return 2;
    case ErrorCode::kNotFound:
      return 3;
    case ErrorCode::kDenied:
      return 4;
    case ErrorCode::kCorrupt:
      return 5;
    case ErrorCode::kIo:
      return 6;
    case ErrorCode::kKmsUnreachable:
      return 7;
    case ErrorCode::kConflict:
      return 8;
  }
  return 1;  // a code this switch does not know is a bug
}

}  // namespace envcrypt
