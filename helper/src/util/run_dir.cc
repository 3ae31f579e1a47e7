#include "util/run_dir.h"

#include <cstdlib>

namespace envcrypt {

std::filesystem::path run_dir() {
  const char* dir = std::getenv("ENVCRYPT_RUN_DIR");
  return dir != nullptr && *dir != '\0' ? std::filesystem::path(dir)
                                        : std::filesystem::path("/run/envcrypt");
}

}  // namespace envcrypt
