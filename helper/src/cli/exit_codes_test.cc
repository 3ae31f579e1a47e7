// The exit codes envcryptctl(8) documents, one per canonical error code.
#include "cli/exit_codes.h"

#include <gtest/gtest.h>

namespace envcrypt {
namespace {

TEST(ExitCodes, EachCanonicalCodeHasItsDocumentedExitCode) {
  EXPECT_EQ(exit_code_for(ErrorCode::kInternal), 1);
  EXPECT_EQ(exit_code_for(ErrorCode::kUsage), 2);
  EXPECT_EQ(exit_code_for(ErrorCode::kNotFound), 3);
  EXPECT_EQ(exit_code_for(ErrorCode::kDenied), 4);
  EXPECT_EQ(exit_code_for(ErrorCode::kCorrupt), 5);
  EXPECT_EQ(exit_code_for(ErrorCode::kIo), 6);
  EXPECT_EQ(exit_code_for(ErrorCode::kKmsUnreachable), 7);
  EXPECT_EQ(exit_code_for(ErrorCode::kConflict), 8);
}

TEST(ExitCodes, AnErrorExitsWithItsCodesExitCode) {
  EXPECT_EQ(exit_code_for(Error(ErrorCode::kCorrupt, "no valid header copy")), 5);
}

}  // namespace
}  // namespace envcrypt
