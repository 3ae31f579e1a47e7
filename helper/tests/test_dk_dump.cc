// Test-only tool, never installed: prints the data key of an envcrypt disk in
// hex, unwrapped exactly as `envcryptctl verify` does (same config, same KMS,
// same key check).  The guest tests need the DK to prove that it appears in
// no raw disk, keystore, audit log, table or keyring; envcryptctl itself has
// no way to reveal it.  Anyone who can run this could run envcryptctl attach
// and read the plaintext anyway: it grants nothing beyond the caller's access.
//
//   envcrypt-test-dk-dump [--config FILE] DEVICE [HEADER_FILE]
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "cli/exit_codes.h"
#include "config/config.h"
#include "kms/kms_registry.h"
#include "util/crypto.h"
#include "volume/volume.h"

int main(int argc, char** argv) {
  using namespace envcrypt;
  std::optional<std::filesystem::path> config_path;
  int arg = 1;
  if (argc > 2 && std::strcmp(argv[1], "--config") == 0) {
    config_path = argv[2];
    arg = 3;
  }
  if (argc - arg < 1 || argc - arg > 2) {
    std::cerr << "usage: envcrypt-test-dk-dump [--config FILE] DEVICE [HEADER_FILE]\n";
    return 2;
  }
  const std::filesystem::path device = argv[arg];
  const auto header_file =
      argc - arg == 2 ? std::optional<std::filesystem::path>(argv[arg + 1]) : std::nullopt;

  auto config = load_config(config_path);
  if (!config.ok()) {
    std::cerr << "envcrypt-test-dk-dump: " << config.error().message() << '\n';
    return envcrypt::exit_code_for(config.error());
  }
  KmsRegistry registry(std::move(config).value());
  auto selection = read_volume_header(device, header_file);
  if (!selection.ok()) {
    std::cerr << "envcrypt-test-dk-dump: " << selection.error().message() << '\n';
    return envcrypt::exit_code_for(selection.error());
  }
  auto data_key = unlock(registry, selection->header);
  if (!data_key.ok()) {
    std::cerr << "envcrypt-test-dk-dump: " << data_key.error().message() << '\n';
    return envcrypt::exit_code_for(data_key.error());
  }
  std::cout << to_hex(data_key->span()) << '\n';
  return 0;
}
