// envcryptctl rewrap: one disk (DEVICE) or every disk of envcrypttab
// under an older CMK version (--all); the rules are boot/rewrap.h's.
#include "cli/rewrap_cli.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "boot/preflight.h"
#include "boot/rewrap.h"
#include "cli/exit_codes.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

struct RewrapArgs {
  std::string device;
  std::string header_file;
  std::string cmk;
  std::string tab;
  bool all = false;
};

class RewrapCommand {
 public:
  explicit RewrapCommand(LifecycleCommandHooks hooks) : h_(std::move(hooks)) {}

  Status run();

  RewrapArgs args;

 private:
  std::ostream& out() { return *h_.out; }
  [[nodiscard]] bool json_output() const { return *h_.json; }
  void print_json(const json& j) { out() << j.dump(2) << '\n'; }
  Status rewrap_one(KmsRegistry& registry);
  Status rewrap_every(KmsRegistry& registry);

  LifecycleCommandHooks h_;
};

std::string version_text(const WrapVersion& wrap) {
  return wrap.cmk_uri + " version " + std::to_string(wrap.cmk_version);
}

json rewrap_json(const RewrapResult& result) {
  return {{"changed", result.changed},
          {"before", {{"cmk", result.before.cmk_uri}, {"cmk_version", result.before.cmk_version}}},
          {"after", {{"cmk", result.after.cmk_uri}, {"cmk_version", result.after.cmk_version}}},
          {"sequence_before", result.sequence_before},
          {"sequence_after", result.sequence_after}};
}

std::string rewrap_text(const RewrapResult& result) {
  if (!result.changed) {
    return "already under " + version_text(result.after) + ", the primary version" +
           (result.sequence_after != result.sequence_before
                ? "; both header copies rewritten (sequence " +
                      std::to_string(result.sequence_after) + ")"
                : "");
  }
  return version_text(result.before) + " -> " + version_text(result.after) + " (header sequence " +
         std::to_string(result.sequence_before) + " -> " + std::to_string(result.sequence_after) +
         ", data untouched)";
}

Status RewrapCommand::run() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, h_.registry());
  if (args.all == !args.device.empty()) {
    return Error(ErrorCode::kUsage, "name a DEVICE or give --all, not both");
  }
  if (args.all && !args.header_file.empty()) {
    return Error(ErrorCode::kUsage, "--header names one disk's header; --all reads envcrypttab's");
  }
  return args.all ? rewrap_every(*registry) : rewrap_one(*registry);
}

Status RewrapCommand::rewrap_one(KmsRegistry& registry) {
  RewrapRequest request;
  request.device = args.device;
  if (!args.header_file.empty()) {
    request.header_file = args.header_file;
  }
  if (!args.cmk.empty()) {
    request.cmk = args.cmk;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(RewrapResult result, rewrap_volume(registry, request));
  if (json_output()) {
    json j = {{"device", args.device}};
    j.update(rewrap_json(result));
    print_json(j);
  } else {
    out() << (result.changed ? "rewrapped " : "") << args.device << ": " << rewrap_text(result)
          << '\n';
  }
  return OkStatus();
}

void print_disk_rewrap(std::ostream& out, const DiskRewrap& disk) {
  const std::string where =
      disk.disk.device.empty() ? disk.disk.device_spec : disk.disk.device.string();
  out << disk.disk.name << ": " << to_string(disk.outcome) << ' ' << where << ": ";
  if (disk.result) {
    out << rewrap_text(*disk.result);
  } else if (disk.error) {
    out << disk.error->message();
  }
  if (disk.outcome == RewrapOutcome::kMissing && disk.disk.nofail) {
    out << " (nofail: ignored)";
  }
  out << '\n';
}

json disk_rewrap_json(const DiskRewrap& disk) {
  json j = {
      {"name", disk.disk.name},
      {"device", disk.disk.device.empty() ? disk.disk.device_spec : disk.disk.device.string()},
      {"outcome", to_string(disk.outcome)},
      {"nofail", disk.disk.nofail}};
  if (disk.result) {
    j.update(rewrap_json(*disk.result));
  }
  if (disk.error) {
    j["error"] = disk.error->message();
    j["exit_code"] = exit_code_for(*disk.error);
  }
  return j;
}

Status RewrapCommand::rewrap_every(KmsRegistry& registry) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries(args.tab, std::cerr));
  PreflightEnvironment env = system_preflight_environment();
  ENVCRYPT_ASSIGN_OR_RETURN(
      auto disks,
      rewrap_all(registry, table, env,
                 args.cmk.empty() ? std::nullopt : std::optional<std::string>(args.cmk)));
  std::map<RewrapOutcome, int> counts;
  for (const DiskRewrap& disk : disks) {
    ++counts[disk.outcome];
  }
  const std::string summary = std::to_string(counts[RewrapOutcome::kRewrapped]) + " rewrapped, " +
                              std::to_string(counts[RewrapOutcome::kCurrent]) + " current, " +
                              std::to_string(counts[RewrapOutcome::kMissing]) + " missing, " +
                              std::to_string(counts[RewrapOutcome::kFailed]) + " failed";
  if (json_output()) {
    json list = json::array();
    for (const DiskRewrap& disk : disks) {
      list.push_back(disk_rewrap_json(disk));
    }
    print_json({{"disks", list}, {"summary", summary}});
  } else {
    for (const DiskRewrap& disk : disks) {
      print_disk_rewrap(out(), disk);
    }
    out() << "rewrap --all: " << summary << '\n';
  }
  const auto failures = std::count_if(
      disks.begin(), disks.end(), [](const DiskRewrap& disk) { return disk.counts_as_failure(); });
  const auto first = std::find_if(disks.begin(), disks.end(),
                                  [](const DiskRewrap& disk) { return disk.counts_as_failure(); });
  if (first == disks.end()) {
    return OkStatus();
  }
  return Error(first->error->code(), std::to_string(failures) + " of " +
                                         std::to_string(disks.size()) + " disks failed, first " +
                                         first->disk.name + ": " + first->error->message());
}

}  // namespace

void add_rewrap_command(CLI::App& app, const LifecycleCommandHooks& hooks) {
  auto command = std::make_shared<RewrapCommand>(hooks);
  RewrapArgs* args = &command->args;
  auto* rewrap = app.add_subcommand(
      "rewrap", "wrap a disk's data key under its CMK's primary version or another CMK");
  rewrap->add_option("DEVICE", args->device, "block device or image file");
  rewrap->add_option("--cmk", args->cmk, "destination key (default: the disk's own CMK)");
  rewrap->add_option("--header", args->header_file, "detached header file");
  rewrap->add_flag("--all", args->all,
                   "every disk this host knows still under an older version (all with --cmk)");
  rewrap->add_option("--tab", args->tab,
                     "envcrypttab for --all (default: $ENVCRYPT_TAB, "
                     "else /etc/envcrypttab)");
  rewrap->callback([args, command, hooks] {
    const std::string what = args->all              ? std::string("rewrap --all")
                             : args->device.empty() ? std::string("rewrap")
                                                    : "rewrap " + args->device;
    hooks.select(what, [command] { return command->run(); });
  });
}

}  // namespace envcrypt
