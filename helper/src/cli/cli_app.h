// The state and commands of envcryptctl's top level (cli.cc), shared by
// the files that define its commands: cli_volume.cc (format, attach,
// detach, status, inspect, verify, probe) and cli_kms.cc (kms key
// administration and aliases).  Other command groups have their own files
// and reach this state through BootCommandHooks / LifecycleCommandHooks.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/boot_cli.h"
#include "cli/json_records.h"
#include "config/config.h"
#include "kms/kms_registry.h"
#include "volume/volume.h"

namespace envcrypt {

using json = nlohmann::ordered_json;

// 1536 -> "1.5 KiB".
std::string human_bytes(std::uint64_t bytes);

// A header copy's state in words: "valid (sequence 3)".
std::string copy_text(const CopyReport& copy);

// Progress of a long write on stderr, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::ostream& err);

  ProgressFn callback();

 private:
  void draw(std::uint64_t done, std::uint64_t total);

  std::ostream& err_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

// State shared by every command: parsed globals, output streams, the KMS.
class Cli {
 public:
  Cli(std::ostream& out, std::ostream& err) : out_(out), err_(err) {}

  int run(int argc, const char* const* argv);

 private:
  void add_volume_commands(CLI::App& app);
  void add_kms_commands(CLI::App& app);
  void add_boot_commands(CLI::App& app);
  BootCommandHooks command_hooks();
  Result<json> status_json(const std::vector<MappingStatus>& mappings);

  Result<KmsRegistry*> registry() {
    if (!registry_) {
      ENVCRYPT_ASSIGN_OR_RETURN(
          Config config,
          load_config(config_path_.empty() ? std::nullopt
                                           : std::optional<std::filesystem::path>(config_path_)));
      registry_.emplace(std::move(config));
    }
    return &*registry_;
  }

  Result<KmsClient*> kms_for(const std::string& keyref) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * reg, registry());
    return kms_selector_.empty() ? reg->for_key(keyref) : reg->for_selector(kms_selector_);
  }

  Result<KmsClient*> kms_selected() {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * reg, registry());
    return reg->for_selector(kms_selector_.empty() ? std::nullopt
                                                   : std::optional<std::string>(kms_selector_));
  }

  // Key administration and aliases of the client for `keyref` (or of
  // --kms's), or its explanation why it cannot do `operation`.
  Result<KeyAdministration*> admin_for(const std::string& keyref, std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_for(keyref));
    return offered(*client, client->administration(), operation);
  }
  Result<KeyAdministration*> admin_selected(std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_selected());
    return offered(*client, client->administration(), operation);
  }
  Result<KeyAliases*> aliases_for(const std::string& keyref, std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_for(keyref));
    return offered(*client, client->aliases(), operation);
  }
  Result<KeyAliases*> aliases_selected(std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_selected());
    return offered(*client, client->aliases(), operation);
  }

  std::optional<std::filesystem::path> header_file() const {
    return header_file_.empty() ? std::nullopt : std::optional<std::filesystem::path>(header_file_);
  }

  void warn_if_degraded(const std::string& source, const HeaderSelection& selection) {
    if (selection.degraded()) {
      err_ << "envcryptctl: warning: " << source
           << ": a header copy is not current (primary: " << copy_text(selection.primary)
           << "; secondary: " << copy_text(selection.secondary) << ")\n";
    }
  }

  void print_json(const json& j) { out_ << j.dump(2) << '\n'; }

  // Commands.
  Status format();
  Status attach();
  Status detach();
  Status status();
  Status inspect();
  Status verify();
  Status probe();
  Status create_key();
  Status list_keys();
  Status describe_key();
  Status list_aliases();
  Status print_key(const KeyInfo& key);
  Status print_changed_key(KeyAdministration& backend, std::string_view done);

  std::ostream& out_;
  std::ostream& err_;
  std::optional<KmsRegistry> registry_;
  std::function<Status()> action_;
  std::string what_;  // the command and its object, for error messages

  // Parsed arguments.
  std::string config_path_;
  bool json_ = false;
  std::string device_;
  std::string name_;
  std::string header_file_;
  std::string cmk_;
  std::string label_;
  std::string recovery_key_;
  std::uint32_t sector_size_ = 4096;
  bool force_ = false;
  bool destroy_now_ = false;  // kms schedule-key-deletion on KMIP
  bool wipe_ = false;
  bool read_only_ = false;
  bool allow_discards_ = false;
  bool keys_ = false;
  std::string tab_;
  std::string kms_selector_;
  std::string keyref_;
  std::string alias_;
  std::string description_;
  std::string origin_ = "KMS";
  std::uint32_t rotation_days_ = 0;
  std::uint32_t pending_window_days_ = 30;
};

}  // namespace envcrypt
