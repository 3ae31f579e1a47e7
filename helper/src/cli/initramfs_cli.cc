#include "cli/initramfs_cli.h"

#include <cstdlib>
#include <memory>
#include <ostream>
#include <system_error>

#include "boot/boot.h"
#include "boot/initramfs_plan.h"
#include "config/crypttab.h"
#include "util/file_io.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

struct PlanArgs {
  std::string tab;
  std::string fstab;
};

// --fstab, else $ENVCRYPT_FSTAB, else /etc/fstab; a missing file is empty.
Result<std::string> read_fstab(const std::string& option) {
  std::string path = option;
  if (path.empty()) {
    const char* env = std::getenv("ENVCRYPT_FSTAB");
    path = env != nullptr && *env != '\0' ? env : "/etc/fstab";
  }
  auto text = read_file_at_most(path, kMaxTableFile);
  if (!text.ok() && text.error().code() == ErrorCode::kNotFound) {
    return std::string();
  }
  return text;
}

Status initramfs_plan(const PlanArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_envcrypttab(args.tab));
  log_skipped_lines(tab, *hooks.err);
  InitramfsPlanInputs inputs;
  inputs.table = std::move(tab.entries);
  ENVCRYPT_ASSIGN_OR_RETURN(inputs.fstab_text, read_fstab(args.fstab));
  // A host without such a line gets its initramfs whatever else is wrong
  // here: the configuration is read only when a line needs it.
  if (initramfs_lines(inputs.table, inputs.fstab_text, system_mapping_names).empty()) {
    *hooks.out << initramfs_plan_output({});
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  inputs.config = registry->config();
  auto actions = system_boot_actions(hooks.registry);
  inputs.cmk_of = [&actions](const TabEntry& entry) { return system_cmk_of(entry, *actions); };
  inputs.mapping_names = system_mapping_names;
  inputs.exists = [](const std::filesystem::path& path) {
    std::error_code ec;
    return std::filesystem::exists(path, ec);
  };
  ENVCRYPT_ASSIGN_OR_RETURN(InitramfsPlan plan, plan_initramfs(inputs));
  for (const std::string& warning : plan.warnings) {
    *hooks.err << "envcryptctl: warning: " << warning << '\n';
  }
  *hooks.out << initramfs_plan_output(plan);
  return OkStatus();
}

}  // namespace

void add_initramfs_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto args = std::make_shared<PlanArgs>();
  auto* command = app.add_subcommand(
      "initramfs-plan",
      "what the initramfs-tools hook copies: disks, KMS files, network, TPM (KEY=value)");
  command->add_option("--tab", args->tab,
                      "table file (default: $ENVCRYPT_TAB, else /etc/envcrypttab)");
  command->add_option("--fstab", args->fstab,
                      "fstab naming / and /usr (default: $ENVCRYPT_FSTAB, else /etc/fstab)");
  command->callback([args, hooks] {
    hooks.select("initramfs-plan", [args, hooks] { return initramfs_plan(*args, hooks); });
  });
}

}  // namespace envcrypt
