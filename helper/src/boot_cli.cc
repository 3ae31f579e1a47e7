#include "boot_cli.h"

namespace envcrypt {

void add_boot_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto* attach_all = app.add_subcommand("attach-all", "attach the disks listed in envcrypttab");
  attach_all->callback([hooks] {
    hooks.select("attach-all",
                 []() -> Status { return Error(ErrorCode::kInternal, "not implemented yet"); });
  });
  auto* detach_all = app.add_subcommand("detach-all", "detach the disks listed in envcrypttab");
  detach_all->callback([hooks] {
    hooks.select("detach-all",
                 []() -> Status { return Error(ErrorCode::kInternal, "not implemented yet"); });
  });
}

}  // namespace envcrypt
