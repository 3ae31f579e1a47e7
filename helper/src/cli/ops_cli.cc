#include "cli/ops_cli.h"

#include <iomanip>
#include <iostream>
#include <memory>
#include <ostream>

#include "audit/audit.h"
#include "boot/preflight.h"
#include "config/crypttab.h"
#include "volume/diagnostics.h"
#include "volume/header_backup.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

struct OpsArgs {
  std::string tab;
  std::string device;
  std::string file;
  bool force = false;
};

json check_json(const DiskCheck& check) {
  const CheckStep* failure = check.first_failure();
  json steps = json::array();
  for (const CheckStep& step : check.steps) {
    steps.push_back({{"step", step.step}, {"ok", step.ok}, {"detail", step.detail}});
  }
  json j = {
      {"name", check.disk.name},
      {"device", check.disk.device.empty() ? check.disk.device_spec : check.disk.device.string()},
      {"in_table", check.disk.in_table},
      {"attached_as", check.disk.attached_as ? json(*check.disk.attached_as) : json()},
      {"nofail", check.disk.nofail},
      {"cmk", check.cmk_uri},
      {"endpoint", check.endpoint},
      {"result", failure == nullptr ? "OK" : "FAIL"}};
  if (failure != nullptr) {
    j["step"] = failure->step;
    j["reason"] = failure->detail;
    j["exit_code"] = static_cast<int>(failure->code);
  }
  j["checks"] = steps;
  j["outage_cache"] = check.outage_cache.to_json(system_clock_seconds());
  return j;
}

Status preflight(const OpsArgs& args, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_envcrypttab(args.tab));
  log_skipped_lines(tab, *hooks.err);
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  PreflightEnvironment env = system_preflight_environment();
  ENVCRYPT_ASSIGN_OR_RETURN(PreflightReport report, run_preflight(tab.entries, *kms, env));
  if (*hooks.json) {
    json disks = json::array();
    for (const DiskCheck& check : report.disks) {
      disks.push_back(check_json(check));
    }
    *hooks.out << json{{"disks", disks},
                       {"summary", report.summary()},
                       {"ok", report.first_counted_failure() == nullptr}}
                      .dump(2)
               << '\n';
  } else {
    for (const DiskCheck& check : report.disks) {
      *hooks.out << preflight_row(check) << '\n';
    }
    *hooks.out << "preflight: " << report.summary() << '\n';
  }
  const DiskCheck* failure = report.first_counted_failure();
  // A skipped line is a disk the next boot will not attach either.
  if (failure == nullptr && !tab.skipped.empty()) {
    return Error(ErrorCode::kUsage, std::to_string(tab.skipped.size()) + " envcrypttab " +
                                        (tab.skipped.size() == 1 ? "line" : "lines") +
                                        " skipped, first " + tab.skipped.front().message());
  }
  if (failure == nullptr) {
    return OkStatus();
  }
  const auto counted =
      std::count_if(report.disks.begin(), report.disks.end(),
                    [](const DiskCheck& check) { return check.counts_as_failure(); });
  const CheckStep* step = failure->first_failure();
  return Error(step->code, std::to_string(counted) + " of " + std::to_string(report.disks.size()) +
                               " disks would not attach, first " + failure->disk.name + " at " +
                               step->step + ": " + step->detail);
}

// The command line already names the device: "header-backup DEV: DEV: why" reads badly.
Error without_device(const Error& error, const std::string& device) {
  const std::string prefix = device + ": ";
  return error.message().starts_with(prefix)
             ? Error(error.code(), error.message().substr(prefix.size()))
             : error;
}

Status header_backup(const OpsArgs& args, const BootCommandHooks& hooks) {
  auto backed_up = backup_header(args.device, args.file);
  if (!backed_up.ok()) {
    return without_device(backed_up.error(), args.device);
  }
  const HeaderSelection& selection = *backed_up;
  const std::string uuid = uuid_to_string(selection.header.uuid);
  if (*hooks.json) {
    *hooks.out << json{{"device", args.device},
                       {"file", args.file},
                       {"uuid", uuid},
                       {"sequence", selection.header.sequence}}
                      .dump(2)
               << '\n';
  } else {
    *hooks.out << "backed up the header of " << args.device << " (uuid " << uuid << ", sequence "
               << selection.header.sequence << ") to " << args.file << '\n';
  }
  if (selection.degraded()) {
    *hooks.err << "envcryptctl: warning: " << args.device
               << ": a header copy is not current; the backup holds it as it is\n";
  }
  return OkStatus();
}

Status header_restore(const OpsArgs& args, const BootCommandHooks& hooks) {
  auto restored = restore_header(args.device, args.file, args.force);
  if (!restored.ok()) {
    return without_device(restored.error(), args.device);
  }
  const DiskHeader& header = *restored;
  const std::string uuid = uuid_to_string(header.uuid);
  if (*hooks.json) {
    *hooks.out << json{{"device", args.device},
                       {"file", args.file},
                       {"uuid", uuid},
                       {"sequence", header.sequence},
                       {"cmk", header.wrapped.cmk_uri}}
                      .dump(2)
               << '\n';
  } else {
    *hooks.out << "restored the header of disk " << uuid << " (sequence " << header.sequence
               << ", CMK " << header.wrapped.cmk_uri << ") from " << args.file << " to "
               << args.device << '\n';
  }
  return OkStatus();
}

Result<std::vector<AttachFailure>> configured_errors(const std::string& tab) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries(tab, std::cerr));
  std::vector<AttachFailure> errors;
  for (const TabEntry& entry : table) {
    ENVCRYPT_ASSIGN_OR_RETURN(auto last, last_attach_error(entry.name));
    if (last) {
      errors.push_back(std::move(*last));
    }
  }
  return errors;
}

}  // namespace

void add_ops_commands(CLI::App& app, const BootCommandHooks& hooks) {
  auto args = std::make_shared<OpsArgs>();

  auto* check = app.add_subcommand(
      "preflight", "check, without attaching, that every disk would attach at the next boot");
  check->add_option("--tab", args->tab,
                    "table file (default: $ENVCRYPT_TAB, else /etc/envcrypttab)");
  check->callback([args, hooks] {
    hooks.select("preflight", [args, hooks] { return preflight(*args, hooks); });
  });

  auto* backup = app.add_subcommand("header-backup", "copy both header copies to a new file");
  backup->add_option("DEVICE", args->device)->required();
  backup->add_option("FILE", args->file, "created 0600; never overwritten")->required();
  backup->callback([args, hooks] {
    hooks.select("header-backup " + args->device,
                 [args, hooks] { return header_backup(*args, hooks); });
  });

  auto* restore = app.add_subcommand("header-restore", "write a backed-up header to both copies");
  restore->add_option("DEVICE", args->device)->required();
  restore->add_option("FILE", args->file)->required();
  restore->add_flag("--force", args->force, "restore even if the disk uuids differ");
  restore->callback([args, hooks] {
    hooks.select("header-restore " + args->device,
                 [args, hooks] { return header_restore(*args, hooks); });
  });
}

Status print_attach_errors(const std::string& tab, std::ostream& out) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto errors, configured_errors(tab));
  for (const AttachFailure& failure : errors) {
    out << failure.disk << ": last attach failed " << format_rfc3339(failure.time) << ": "
        << failure_fields(failure) << '\n';
  }
  return OkStatus();
}

Result<json> attach_errors_json(const std::string& tab) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto errors, configured_errors(tab));
  json list = json::array();
  for (const AttachFailure& failure : errors) {
    list.push_back({{"disk", failure.disk},
                    {"device", failure.device},
                    {"cmk", failure.cmk_uri},
                    {"endpoint", failure.endpoint},
                    {"step", failure.step},
                    {"exit_code", static_cast<int>(failure.code)},
                    {"reason", failure.reason},
                    {"time", format_rfc3339(failure.time)}});
  }
  return list;
}

Status print_key_versions(const std::string& tab, const BootCommandHooks& hooks) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries(tab, *hooks.err));
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * kms, hooks.registry());
  PreflightEnvironment env = system_preflight_environment();
  ENVCRYPT_ASSIGN_OR_RETURN(auto rows, key_versions(table, *kms, env));
  auto version = [](const std::optional<std::uint32_t>& v) {
    return v ? std::to_string(*v) : std::string("-");
  };
  if (*hooks.json) {
    json list = json::array();
    for (const KeyVersionRow& row : rows) {
      json j = {
          {"name", row.disk.name},
          {"device", row.disk.device.empty() ? row.disk.device_spec : row.disk.device.string()},
          {"cmk", row.cmk_uri},
          {"wrapped_version", row.wrapped_version ? json(*row.wrapped_version) : json()},
          {"primary_version", row.primary_version ? json(*row.primary_version) : json()},
          {"wrap", row.currency()},
          {"outage_cache", row.outage_cache.to_json(system_clock_seconds())}};
      if (!row.error.empty()) {
        j["error"] = row.error;
      }
      list.push_back(j);
    }
    *hooks.out << list.dump(2) << '\n';
    return OkStatus();
  }
  if (rows.empty()) {
    *hooks.out << "no known disks\n";
  }
  for (const KeyVersionRow& row : rows) {
    *hooks.out << row.disk.name << ": CMK " << (row.cmk_uri.empty() ? "-" : row.cmk_uri)
               << ", wrapped by version " << version(row.wrapped_version) << ", primary version "
               << version(row.primary_version) << ": " << row.currency();
    if (!row.error.empty()) {
      *hooks.out << " (" << row.error << ")";
    }
    if (row.outage_cache.worth_showing()) {
      *hooks.out << "; outage cache: " << row.outage_cache.describe(system_clock_seconds());
    }
    *hooks.out << '\n';
  }
  return OkStatus();
}

}  // namespace envcrypt
