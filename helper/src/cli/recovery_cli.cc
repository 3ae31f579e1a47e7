#include "cli/recovery_cli.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "volume/recovery_volume.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

struct RecoveryArgs {
  std::string device;
  std::string header_file;
  std::string key_file;
  std::string cmk;
  bool replace = false;

  [[nodiscard]] RecoveryTarget target() const {
    return {device,
            header_file.empty() ? std::nullopt : std::optional<std::filesystem::path>(header_file)};
  }
};

json wrap_json(const DiskHeader& header) {
  if (!header.recovery) {
    return nullptr;
  }
  return {{"algorithm", "X25519-HKDF-SHA256-AES-256-GCM"},
          {"key_id", to_hex(header.recovery->key_id)}};
}

std::string wrap_text(const DiskHeader& header) {
  if (!header.recovery) {
    return "none";
  }
  return "X25519-HKDF-SHA256-AES-256-GCM, recovery key " + to_hex(header.recovery->key_id);
}

void print_change(const BootCommandHooks& hooks, const RecoveryArgs& args, const HeaderChange& c,
                  const std::string& done, const std::string& unchanged) {
  if (*hooks.json) {
    *hooks.out << json{{"device", args.device},      {"uuid", uuid_to_string(c.after.uuid)},
                       {"version", c.after.version}, {"sequence", c.after.sequence},
                       {"changed", c.changed},       {"recovery", wrap_json(c.after)}}
                      .dump(2)
               << '\n';
    return;
  }
  *hooks.out << args.device << ": " << (c.changed ? done : unchanged) << " (header version "
             << c.after.version << ", sequence " << c.after.sequence << ")\n";
}

Status upgrade(const RecoveryArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderChange change, upgrade_header_volume(*kms, args.target()));
  print_change(hooks, args, change, "upgraded to header version 2",
               "already header version 2, nothing written");
  return OkStatus();
}

Status add(const RecoveryArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(RecoveryPublicKey key, read_recovery_public_key(args.key_file));
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderChange change,
                            add_recovery_wrap(*kms, args.target(), key, args.replace));
  print_change(hooks, args, change, "recovery wrap added for key " + to_hex(key.id), "");
  return OkStatus();
}

Status remove(const RecoveryArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderChange change, remove_recovery_wrap(*kms, args.target()));
  print_change(hooks, args, change, "recovery wrap removed", "");
  return OkStatus();
}

Status show(const RecoveryArgs& args, const BootCommandHooks& hooks) {
  const RecoveryTarget target = args.target();
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection,
                            read_volume_header(target.device, target.header_file));
  const DiskHeader& header = selection.header;
  if (*hooks.json) {
    *hooks.out << json{{"device", args.device},
                       {"uuid", uuid_to_string(header.uuid)},
                       {"version", header.version},
                       {"recovery", wrap_json(header)}}
                      .dump(2)
               << '\n';
    return OkStatus();
  }
  *hooks.out << args.device << ": header version " << header.version << ", recovery wrap "
             << wrap_text(header) << '\n';
  return OkStatus();
}

Status recover(const RecoveryArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(RecoveryPrivateKey key, read_recovery_private_key(args.key_file));
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  const std::optional<std::string> cmk =
      args.cmk.empty() ? std::nullopt : std::optional<std::string>(args.cmk);
  ENVCRYPT_ASSIGN_OR_RETURN(RecoverResult result, recover_volume(*kms, args.target(), key, cmk));
  if (*hooks.json) {
    *hooks.out << json{{"device", args.device},
                       {"uuid", uuid_to_string(result.change.after.uuid)},
                       {"cmk", result.cmk_uri},
                       {"cmk_version", result.cmk_version},
                       {"sequence", result.change.after.sequence}}
                      .dump(2)
               << '\n';
    return OkStatus();
  }
  *hooks.out << args.device << ": recovered with recovery key " << short_key_id(key.public_key.id)
             << "; the data key is now wrapped under " << result.cmk_uri << " (version "
             << result.cmk_version << ")\n";
  return OkStatus();
}

using Command = Status (*)(const RecoveryArgs&, const BootCommandHooks&);

CLI::App* disk_command(CLI::App& parent, const std::string& name, const std::string& help,
                       const std::shared_ptr<RecoveryArgs>& args, const BootCommandHooks& hooks,
                       Command command) {
  auto* sub = parent.add_subcommand(name, help);
  sub->add_option("DEVICE", args->device, "block device or image file")->required();
  sub->add_option("--header", args->header_file, "detached header file");
  const std::string what = parent.get_name() == "recovery" ? "recovery " + name : name;
  sub->callback([args, hooks, command, what] {
    hooks.select(what + " " + args->device,
                 [args, hooks, command] { return command(*args, hooks); });
  });
  return sub;
}

}  // namespace

void add_recovery_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto args = std::make_shared<RecoveryArgs>();
  disk_command(app, "upgrade-header", "rewrite a version 1 header as version 2 (crash-safe)", args,
               hooks, upgrade);
  auto* recover_command =
      disk_command(app, "recover", "rewrap the data key under a CMK with the recovery private key",
                   args, hooks, recover);
  recover_command->add_option("--recovery-private-key", args->key_file, "X25519 private key, PEM")
      ->required();
  recover_command->add_option("--cmk", args->cmk,
                              "key id, alias/<name> or CMK URI (default: the disk's CMK)");

  auto* recovery = app.add_subcommand("recovery", "the disk's recovery wrap");
  recovery->require_subcommand(1);
  auto* add_command = disk_command(*recovery, "add", "wrap the data key to a recovery public key",
                                   args, hooks, add);
  add_command->add_option("--recovery-key", args->key_file, "X25519 public key, PEM")->required();
  add_command->add_flag("--replace", args->replace, "replace an existing recovery wrap");
  disk_command(*recovery, "remove", "remove the recovery wrap", args, hooks, remove);
  disk_command(*recovery, "show", "show the recovery wrap", args, hooks, show);
}

}  // namespace envcrypt
