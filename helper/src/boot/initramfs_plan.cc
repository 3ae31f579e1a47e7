#include "boot/initramfs_plan.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>

#include "boot/boot.h"
#include "util/printable.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMapperDir = "/dev/mapper/";
constexpr std::string_view kKmipScheme = "kmip://";

void add_unique(std::vector<fs::path>& paths, const fs::path& path) {
  if (!path.empty() && std::find(paths.begin(), paths.end(), path) == paths.end()) {
    paths.push_back(path);
  }
}

// The [kms.kmip.<name>] endpoint a kmip:// CMK URI names: by the endpoint's
// name or by one of its servers' host:port, as KmsRegistry finds it.
const KmipEndpoint* endpoint_of(const Config& config, std::string_view cmk_uri) {
  std::string_view authority = cmk_uri.substr(kKmipScheme.size());
  authority = authority.substr(0, authority.find('/'));
  for (const auto& [name, endpoint] : config.kmip_endpoints) {
    if (name == authority) {
      return &endpoint;
    }
    for (const KmipServer& server : endpoint.servers()) {
      if (server.host + ":" + std::to_string(server.port) == authority) {
        return &endpoint;
      }
    }
  }
  return nullptr;
}

// Why the line goes into the initramfs, or empty when it does not.
std::string reason_for(const TabEntry& entry, const std::vector<std::string>& root_names,
                       const std::vector<std::string>& usr_names) {
  if (std::find(root_names.begin(), root_names.end(), entry.name) != root_names.end()) {
    return "fstab /";
  }
  if (std::find(usr_names.begin(), usr_names.end(), entry.name) != usr_names.end()) {
    return "fstab /usr";
  }
  if (entry.initramfs) {
    return "option initramfs";
  }
  return "";
}

std::vector<std::string> names_for(const std::string& spec, const FstabMappingNames& resolve) {
  if (spec.empty()) {
    return {};
  }
  return resolve(spec);
}

void walk_slaves(const fs::path& sys_dir, std::vector<std::string>& names, int depth) {
  std::error_code ec;
  if (depth > 16) {
    return;
  }
  if (std::ifstream name_file(sys_dir / "dm" / "name"); name_file) {
    std::string name;
    if (std::getline(name_file, name) && !name.empty()) {
      names.push_back(name);
    }
  }
  for (const auto& slave : fs::directory_iterator(sys_dir / "slaves", ec)) {
    walk_slaves(fs::path("/sys/class/block") / slave.path().filename(), names, depth + 1);
  }
}

}  // namespace

std::vector<std::string> fstab_system_specs(const std::string& fstab_text) {
  std::string root;
  std::string usr;
  std::istringstream in(fstab_text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string spec;
    std::string mount_point;
    if (!(fields >> spec >> mount_point) || spec.front() == '#') {
      continue;
    }
    // As mount(8) reads fstab, the last line for a mount point wins.
    if (mount_point == "/") {
      root = spec;
    } else if (mount_point == "/usr") {
      usr = spec;
    }
  }
  return {root, usr};
}

std::string initramfs_tab_line(const TabEntry& entry,
                               std::chrono::milliseconds default_device_timeout) {
  std::vector<std::string> options;
  if (entry.read_only) {
    options.emplace_back("readonly");
  }
  if (entry.discard) {
    options.emplace_back("discard");
  }
  if (entry.nofail) {
    options.emplace_back("nofail");
  }
  if (entry.remote_device) {
    options.emplace_back("_netdev");
  }
  if (entry.remote_kms) {
    options.emplace_back("remote-kms");
  }
  if (entry.header_file) {
    options.push_back("header=" + entry.header_file->string());
  }
  const auto timeout =
      entry.device_timeout.count() > 0 ? entry.device_timeout : default_device_timeout;
  options.push_back("x-systemd.device-timeout=" + std::to_string(timeout.count()) + "ms");
  std::string line = entry.name + " " + entry.device_spec() + " ";
  for (std::size_t i = 0; i < options.size(); ++i) {
    line += (i == 0 ? "" : ",") + options[i];
  }
  return line;
}

std::vector<InitramfsLine> initramfs_lines(const std::vector<TabEntry>& table,
                                           const std::string& fstab_text,
                                           const FstabMappingNames& mapping_names) {
  const std::vector<std::string> specs = fstab_system_specs(fstab_text);
  const std::vector<std::string> root_names = names_for(specs[0], mapping_names);
  const std::vector<std::string> usr_names = names_for(specs[1], mapping_names);
  std::vector<InitramfsLine> lines;
  for (const TabEntry& entry : table) {
    std::string why = reason_for(entry, root_names, usr_names);
    if (!why.empty()) {
      lines.push_back({&entry, std::move(why)});
    }
  }
  return lines;
}

Result<InitramfsPlan> plan_initramfs(const InitramfsPlanInputs& inputs) {
  const Config& config = inputs.config;
  InitramfsPlan plan;
  plan.config = config.source;
  for (const auto& [entry_ptr, why] :
       initramfs_lines(inputs.table, inputs.fstab_text, inputs.mapping_names)) {
    const TabEntry& entry = *entry_ptr;
    const std::string disk = entry.source + ": disk " + entry.name + " (" + why + ")";
    auto cmk = inputs.cmk_of(entry);
    std::string cmk_from = "header";
    if (!cmk.ok()) {
      // An image being built: the disk is not encrypted yet (image encrypt
      // comes later, under the configuration's default_cmk) or not here.
      plan.warnings.push_back(disk + ": cannot read its CMK from the header (" +
                              cmk.error().message() + "): planned for default_cmk " +
                              printable(config.default_cmk));
      cmk = config.default_cmk;
      cmk_from = "default_cmk";
    }
    InitramfsPlan::Disk planned{entry.name, why,
                                *cmk,       cmk_from,
                                "local",    initramfs_tab_line(entry, kInitramfsDeviceTimeout)};
    const std::string with_cmk = disk + ", CMK " + printable(*cmk);
    if (cmk->starts_with(kKmipScheme)) {
      const KmipEndpoint* endpoint = endpoint_of(config, *cmk);
      if (endpoint == nullptr) {
        return Error(ErrorCode::kUsage,
                     with_cmk + ": no KMIP endpoint of the configuration serves it");
      }
      planned.kms = "kmip:" + endpoint->name;
      plan.network = true;
      add_unique(plan.files, endpoint->ca);
      add_unique(plan.files, endpoint->cert);
      add_unique(plan.files, endpoint->key);
    } else {
      const fs::path sealed = config.local_root_key.string() + ".tpm";
      if (inputs.exists(sealed)) {
        plan.tpm = true;
        add_unique(plan.files, sealed);
        add_unique(plan.directories, config.local_dir);
      } else if (inputs.exists(config.local_root_key)) {
        return Error(ErrorCode::kDenied,
                     with_cmk +
                         ": a plaintext local root key in the initramfs would lie next to the "
                         "disk it opens; seal it with envcryptctl kms seal-root-key or use a "
                         "KMIP CMK");
      } else {
        return Error(ErrorCode::kNotFound, with_cmk + ": the local root key " +
                                               printable(config.local_root_key.string()) +
                                               " is missing, sealed (.tpm) or not");
      }
    }
    if (entry.header_file) {
      add_unique(plan.files, *entry.header_file);
    }
    plan.disks.push_back(std::move(planned));
  }
  return plan;
}

std::string initramfs_plan_output(const InitramfsPlan& plan) {
  std::ostringstream out;
  auto yes_no = [](bool value) { return value ? "yes" : "no"; };
  out << "NEEDED=" << yes_no(!plan.disks.empty()) << '\n'
      << "NETWORK=" << yes_no(plan.network) << '\n'
      << "TPM=" << yes_no(plan.tpm) << '\n'
      << "CONFIG=" << printable(plan.config.string()) << '\n';
  for (const InitramfsPlan::Disk& disk : plan.disks) {
    out << "DISK=" << printable(disk.name) << '\n'
        << "DISK_WHY=" << printable(disk.why) << '\n'
        << "DISK_CMK=" << printable(disk.cmk_uri) << '\n'
        << "DISK_CMK_FROM=" << disk.cmk_from << '\n'
        << "DISK_KMS=" << printable(disk.kms) << '\n'
        << "TAB_LINE=" << printable(disk.tab_line) << '\n';
  }
  for (const fs::path& file : plan.files) {
    out << "FILE=" << printable(file.string()) << '\n';
  }
  for (const fs::path& directory : plan.directories) {
    out << "DIR=" << printable(directory.string()) << '\n';
  }
  return out.str();
}

std::vector<std::string> system_mapping_names(const std::string& spec) {
  std::vector<std::string> names;
  fs::path device;
  const auto eq = spec.find('=');
  if (spec.starts_with(kMapperDir)) {
    names.push_back(spec.substr(kMapperDir.size()));
    device = spec;
  } else if (spec.starts_with("/")) {
    device = spec;
  } else if (eq != std::string::npos) {
    std::string tag = spec.substr(0, eq);
    std::transform(tag.begin(), tag.end(), tag.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    device = fs::path("/dev/disk/by-" + tag) / spec.substr(eq + 1);
  } else {
    return names;
  }
  std::error_code ec;
  const fs::path canonical = fs::canonical(device, ec);
  if (ec) {
    return names;
  }
  walk_slaves(fs::path("/sys/class/block") / canonical.filename(), names, 0);
  return names;
}

Result<std::string> system_cmk_of(const TabEntry& entry, BootActions& actions) {
  auto resolved = actions.resolve(entry);
  if (!resolved.ok()) {
    auto mapped = mapping_device(entry.name);
    if (!mapped.ok()) {
      return resolved.error();
    }
    resolved = std::move(mapped);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection header,
                            read_volume_header(*resolved, entry.header_file));
  return header.header.wrapped.cmk_uri;
}

}  // namespace envcrypt
