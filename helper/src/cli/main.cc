// envcryptctl: see cli.h and Documentation/admin-guide/envcryptctl.8.
#include <iostream>

#include "cli/cli.h"
#include "cli/exit_codes.h"
#include "util/secret.h"

int main(int argc, char** argv) {
  // First of all, before any key, config or header is read: no core file
  // may ever hold a key (Documentation/security/key-hierarchy.rst).
  const envcrypt::Status protection = envcrypt::protect_process_secrets();
  if (!protection.ok()) {
    std::cerr << "envcryptctl: " << protection.error().message() << '\n';
    return envcrypt::exit_code_for(protection.error());
  }
  return envcrypt::run_cli(argc, argv, std::cout, std::cerr);
}
