#include "cli/boot_cli.h"

#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "boot/auto_attach.h"
#include "boot/boot.h"
#include "boot/udev_properties.h"
#include "cli/exit_codes.h"
#include "cli/initramfs_cli.h"
#include "config/crypttab.h"
#include "device/mapping_name.h"
#include "volume/diagnostics.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

// Arguments of the boot commands, shared by the callbacks that parse them
// and the action that runs later.
struct BootArgs {
  std::string tab;
  std::vector<std::string> names;
  std::string device;
  std::string out_dir;
  std::string unit_dir = "/lib/systemd/system";
};

Result<bool> auto_attach_enabled(const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  return registry->config().boot.auto_attach;
}

// The table, plus the implicit entries of auto-attached disks that --name
// asks for (auto_attach.h); its bad lines are logged and skipped.
Result<Envcrypttab> read_table_for_names(const BootArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_envcrypttab(args.tab));
  log_skipped_lines(tab, *hooks.err);
  ENVCRYPT_ASSIGN_OR_RETURN(bool auto_attach, auto_attach_enabled(hooks));
  if (auto_attach) {
    add_auto_entries(tab.entries, args.names);
  }
  return tab;
}

// A configuration that does not load leaves the defaults: the boot still
// gets units, and attach-all reports the configuration error itself.
GeneratorSettings settings_for_units(const BootCommandHooks& hooks) {
  Config config;
  if (auto registry = hooks.registry(); registry.ok()) {
    config = (*registry)->config();
  } else {
    *hooks.err << "envcryptctl: warning: generate-units: " << registry.error().message()
               << " (using the defaults)\n";
  }
  return generator_settings(config);
}

Result<AttachPolicy> attach_policy(const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  AttachPolicy policy;
  policy.timeout = registry->config().boot.attach_timeout;
  return policy;
}

std::string seconds_text(std::chrono::milliseconds elapsed) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(2) << static_cast<double>(elapsed.count()) / 1000.0
       << " s";
  return text.str();
}

void print_disk(std::ostream& out, const DiskResult& disk) {
  out << disk.name << ": " << to_string(disk.outcome);
  if (!disk.device.empty()) {
    out << " " << disk.device.string();
  } else {
    out << " " << disk.device_spec;
  }
  if (!disk.detail.empty()) {
    out << (disk.outcome == DiskOutcome::kAttached ? " as " : " (") << disk.detail
        << (disk.outcome == DiskOutcome::kAttached ? "" : ")");
  }
  if (disk.error) {
    out << ": " << disk.error->message();
  }
  if (disk.nofail &&
      (disk.outcome == DiskOutcome::kMissing || disk.outcome == DiskOutcome::kFailed)) {
    out << " (nofail: ignored)";
  }
  out << " [" << seconds_text(disk.elapsed) << "]\n";
}

json disk_json(const DiskResult& disk) {
  json j = {{"name", disk.name},
            {"device_spec", disk.device_spec},
            {"device", disk.device.string()},
            {"outcome", to_string(disk.outcome)},
            {"nofail", disk.nofail},
            {"seconds", static_cast<double>(disk.elapsed.count()) / 1000.0}};
  if (!disk.detail.empty()) {
    j["path"] = disk.detail;
  }
  if (disk.error) {
    j["error"] = disk.error->message();
    j["exit_code"] = exit_code_for(*disk.error);
  }
  return j;
}

// Prints every disk's result; the run fails, with the first failure's exit
// code, if a disk without nofail failed or is missing.
Status report(const BootReport& report, const std::string& verb, const BootCommandHooks& hooks) {
  std::ostream& out = *hooks.out;
  for (const DiskResult& disk : report.disks) {
    // Failures of the attach itself were reported by attach_with_diagnostics().
    if (disk.outcome == DiskOutcome::kMissing && disk.error) {
      report_attach_failure({disk.name, disk.device_spec, "", "", "device", disk.error->code(),
                             disk.error->message(), 0},
                            *hooks.err);
    }
  }
  if (*hooks.json) {
    json disks = json::array();
    for (const DiskResult& disk : report.disks) {
      disks.push_back(disk_json(disk));
    }
    out << json{{"disks", disks}, {"summary", report.summary()}}.dump(2) << '\n';
  } else {
    for (const DiskResult& disk : report.disks) {
      print_disk(out, disk);
    }
    out << verb << ": " << report.summary() << '\n';
  }
  const DiskResult* failure = report.first_failure();
  if (failure == nullptr) {
    return OkStatus();
  }
  const auto failures =
      std::count_if(report.disks.begin(), report.disks.end(),
                    [](const DiskResult& disk) { return disk.counts_as_failure(); });
  return Error(failure->error->code(),
               std::to_string(failures) + " of " + std::to_string(report.disks.size()) +
                   " disks failed, first " + failure->name + ": " + failure->error->message());
}

BootSelection selection_of(const BootArgs& args) {
  BootSelection selection;
  selection.names = args.names;
  if (!args.device.empty()) {
    selection.device = args.device;
  }
  return selection;
}

// udev IMPORT{program} output for the entry naming DEVICE.  No match is an
// answer, not a failure: every property is printed empty and the exit is 0,
// so the rules see the properties cleared.  With envcrypt=no on the kernel
// command line nothing matches, so udev starts and runs nothing.
Status tab_match(const BootArgs& args, const BootCommandHooks& hooks) {
  if (!boot_attach_enabled_now(*hooks.err)) {
    *hooks.out << tab_match_output({});
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries(args.tab, *hooks.err));
  auto actions = system_boot_actions(hooks.registry);
  ENVCRYPT_ASSIGN_OR_RETURN(const TabEntry* entry, entry_for_device(table, args.device, *actions));
  std::optional<TabEntry> implicit;
  if (entry == nullptr) {
    ENVCRYPT_ASSIGN_OR_RETURN(bool auto_attach, auto_attach_enabled(hooks));
    ENVCRYPT_ASSIGN_OR_RETURN(DeviceIdentity identity, actions->identify(args.device));
    if (!auto_attach || identity.uuid.empty()) {
      *hooks.out << tab_match_output({});
      return OkStatus();
    }
    implicit = auto_entry(identity.uuid, identity.cmk_uri);
    entry = &*implicit;
  }
  ENVCRYPT_TRY(check_mapping_name(entry->name));
  *hooks.out << tab_match_output(
      {entry->name, attach_unit_name(entry->name), entry->needs_network(), entry->noauto});
  return OkStatus();
}

}  // namespace

void add_boot_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto args = std::make_shared<BootArgs>();
  auto add_tab = [args](CLI::App* command) {
    command->add_option("--tab", args->tab,
                        "table file (default: $ENVCRYPT_TAB, else /etc/envcrypttab)");
  };

  auto* attach_command = app.add_subcommand(
      "attach-all", "attach every envcrypttab disk that is present and not attached");
  add_tab(attach_command);
  attach_command->add_option("--name", args->names, "only this entry (repeatable; noauto too)");
  attach_command->add_option("--device", args->device,
                             "only the entries naming this device, attached from it (udev)");
  attach_command->callback([args, hooks] {
    hooks.select("attach-all", [args, hooks]() -> Status {
      ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_table_for_names(*args, hooks));
      auto actions = system_boot_actions(hooks.registry);
      ENVCRYPT_ASSIGN_OR_RETURN(AttachPolicy policy, attach_policy(hooks));
      ENVCRYPT_ASSIGN_OR_RETURN(BootReport result,
                                attach_all(tab.entries, selection_of(*args), *actions, policy));
      ENVCRYPT_TRY(report(result, "attach-all", hooks));
      // --name asks for some disks only: a bad other line is not its business.
      return args->names.empty() ? whole_table_status(tab) : OkStatus();
    });
  });

  auto* detach_command =
      app.add_subcommand("detach-all", "detach the envcrypttab disks, last first");
  add_tab(detach_command);
  detach_command->add_option("--name", args->names, "only this entry (repeatable)");
  detach_command->callback([args, hooks] {
    hooks.select("detach-all", [args, hooks]() -> Status {
      ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_table_for_names(*args, hooks));
      const std::vector<TabEntry>& table = tab.entries;
      auto actions = system_boot_actions(hooks.registry);
      BootSelection selection;
      selection.names = args->names;
      if (selection.names.empty()) {  // reverses attach-all, and any noauto disk attached by hand
        for (const TabEntry& entry : table) {
          selection.names.push_back(entry.name);
        }
      }
      ENVCRYPT_ASSIGN_OR_RETURN(BootReport result, detach_all(table, selection, *actions));
      return report(result, "detach-all", hooks);
    });
  });

  auto* match = app.add_subcommand("tab-match",
                                   "print the envcrypttab entry naming DEVICE as udev properties");
  add_tab(match);
  match->add_option("DEVICE", args->device)->required();
  match->callback([args, hooks] {
    hooks.select("tab-match " + args->device,
                 [args, hooks]() -> Status { return tab_match(*args, hooks); });
  });

  auto* generate = app.add_subcommand(
      "generate-units", "write systemd units for envcrypttab (the envcrypt-generator)");
  add_tab(generate);
  generate->add_option("DIR", args->out_dir, "the generator's output directory")->required();
  generate->add_option("--unit-dir", args->unit_dir, "where envcrypt-attach@.service is installed");
  generate->callback([args, hooks] {
    hooks.select("generate-units", [args, hooks]() -> Status {
      // envcrypt=no: no units, so the boot attaches nothing (luks=no).
      if (!boot_attach_enabled_now(*hooks.err)) {
        return OkStatus();
      }
      const std::filesystem::path path = envcrypttab_path(
          args->tab.empty() ? std::nullopt : std::optional<std::filesystem::path>(args->tab));
      ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries(args->tab, *hooks.err));
      return write_generated(generate_units(table, path, args->unit_dir, settings_for_units(hooks)),
                             args->out_dir);
    });
  });
  add_initramfs_commands(app, hooks);
}

}  // namespace envcrypt
