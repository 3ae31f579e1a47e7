#include "cli/root_key_cli.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "kms/local/root_key.h"
#include "tpm/tpm_pin.h"

namespace envcrypt {
namespace {

struct SealArgs {
  std::string pcrs;
  bool pin = false;
};

RootKeyTpm root_key_tpm(const Config& config) {
  RootKeyTpm tpm;
  tpm.tcti = config.local_tpm_tcti;
  tpm.pin = [root_key = config.local_root_key] {
    return ask_tpm_pin("TPM PIN for the envcrypt root key " + root_key.string());
  };
  return tpm;
}

std::string describe_policy(const TpmSealPolicy& policy) {
  std::string text;
  for (const std::uint32_t pcr : policy.pcrs) {
    text += (text.empty() ? "PCR " : ",") + std::to_string(pcr);
  }
  if (policy.pin) {
    text += text.empty() ? "PIN" : " and PIN";
  }
  return text.empty() ? "this TPM only" : text;
}

Status seal(const LifecycleCommandHooks& hooks, const SealArgs& args) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  const Config& config = registry->config();
  TpmSealPolicy policy;
  if (!args.pcrs.empty()) {
    ENVCRYPT_ASSIGN_OR_RETURN(policy.pcrs, parse_pcr_list(args.pcrs));
  }
  policy.pin = args.pin;
  SecretBytes pin;
  if (policy.pin) {
    ENVCRYPT_ASSIGN_OR_RETURN(pin, ask_new_tpm_pin("new TPM PIN for the envcrypt root key " +
                                                   config.local_root_key.string()));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(
      const SealOutcome outcome,
      seal_root_key(config.local_root_key, root_key_tpm(config), policy, pin));
  if (*hooks.json) {
    *hooks.out << nlohmann::json{{"sealed", outcome.sealed.string()},
                                 {"removed", outcome.wiped.string()},
                                 {"tpm", config.local_tpm_tcti},
                                 {"pcrs", policy.pcrs},
                                 {"pin", policy.pin}}
                      .dump(2)
               << '\n';
  } else {
    *hooks.out << "sealed the root key into " << outcome.sealed.string() << " (bound to "
               << describe_policy(policy) << "); " << outcome.wiped.string()
               << " overwritten and removed\n";
  }
  return OkStatus();
}

Status unseal(const LifecycleCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  const Config& config = registry->config();
  ENVCRYPT_ASSIGN_OR_RETURN(const std::filesystem::path written,
                            unseal_root_key(config.local_root_key, root_key_tpm(config)));
  if (*hooks.json) {
    *hooks.out << nlohmann::json{{"root_key", written.string()},
                                 {"removed", sealed_root_key_path(written).string()}}
                      .dump(2)
               << '\n';
  } else {
    *hooks.out << "unsealed the root key into " << written.string() << "; "
               << sealed_root_key_path(written).string() << " removed\n";
  }
  return OkStatus();
}

}  // namespace

void add_root_key_commands(CLI::App& kms, const LifecycleCommandHooks& hooks) {
  auto args = std::make_shared<SealArgs>();
  auto* seal_command =
      kms.add_subcommand("seal-root-key", "move the local KMS root key into this host's TPM");
  seal_command->add_option("--pcrs", args->pcrs,
                           "bind to these PCRs of the SHA-256 bank, e.g. 7 or 0,2,7");
  seal_command->add_flag("--pin", args->pin,
                         "also require a PIN (asked on the terminal or from ENVCRYPT_TPM_PIN)");
  seal_command->callback([hooks, args] {
    hooks.select("kms seal-root-key", [hooks, args] { return seal(hooks, *args); });
  });
  kms.add_subcommand("unseal-root-key", "move the local KMS root key out of the TPM into its file")
      ->callback(
          [hooks] { hooks.select("kms unseal-root-key", [hooks] { return unseal(hooks); }); });
}

}  // namespace envcrypt
