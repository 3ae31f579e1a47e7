// The run directory: $ENVCRYPT_RUN_DIR, else /run/envcrypt.  It holds the
// last attach errors (attach-errors/<name>) and the per-device locks
// (locks/), both root-only.
#pragma once

#include <filesystem>

namespace envcrypt {

std::filesystem::path run_dir();

}  // namespace envcrypt
