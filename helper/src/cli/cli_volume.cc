// envcryptctl's commands on one disk: format, attach, detach, status,
// inspect, verify, probe.
#include <iomanip>
#include <sstream>

#include "audit/audit.h"
#include "boot/udev_properties.h"
#include "cli/cli_app.h"
#include "cli/lifecycle_cli.h"
#include "cli/ops_cli.h"
#include "util/printable.h"
#include "volume/diagnostics.h"
#include "volume/recovery_volume.h"

namespace envcrypt {

Status Cli::format() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * reg, registry());
  FormatOptions options;
  options.device = device_;
  options.header_file = header_file();
  options.cmk = cmk_.empty() ? reg->config().default_cmk : cmk_;
  options.label = label_;
  options.sector_size = sector_size_;
  options.force = force_;
  options.wipe = wipe_;
  if (!recovery_key_.empty()) {
    ENVCRYPT_ASSIGN_OR_RETURN(options.recovery_key, read_recovery_public_key(recovery_key_));
  }
  ProgressBar bar(err_);
  ENVCRYPT_ASSIGN_OR_RETURN(DiskHeader header, format_volume(*reg, options, bar.callback()));
  if (header.recovery) {
    if (auto audited = audit_recovery_format(*reg, header); !audited.ok()) {
      return audited.error().with_context("formatted (uuid " + uuid_to_string(header.uuid) +
                                          ", with a recovery wrap) but the audit line failed");
    }
  }
  if (json_) {
    print_json({{"device", device_},
                {"uuid", uuid_to_string(header.uuid)},
                {"cmk", header.wrapped.cmk_uri},
                {"cmk_version", header.wrapped.cmk_version},
                {"data_offset", header.geometry.data_offset},
                {"sector_size", header.geometry.sector_size},
                {"wiped", wipe_}});
  } else {
    out_ << "formatted " << device_ << ": uuid " << uuid_to_string(header.uuid) << ", CMK "
         << header.wrapped.cmk_uri << " (version " << header.wrapped.cmk_version
         << "), sector size " << header.geometry.sector_size << ", data at "
         << human_bytes(header.geometry.data_offset) << (wipe_ ? ", data area wiped" : "") << '\n';
  }
  return OkStatus();
}

Status Cli::attach() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * reg, registry());
  // An unreadable header fails the attach below, which reports it.
  if (auto selection = read_volume_header(device_, header_file()); selection.ok()) {
    warn_if_degraded(header_file_.empty() ? device_ : header_file_, *selection);
  }
  AttachOptions options;
  options.device = device_;
  if (!name_.empty()) {
    options.name = name_;
  }
  options.header_file = header_file();
  options.read_only = read_only_;
  options.allow_discards = allow_discards_;
  ENVCRYPT_ASSIGN_OR_RETURN(Attached attached, attach_with_diagnostics(*reg, options, err_));
  if (json_) {
    print_json({{"name", attached.name},
                {"path", attached.mapper_path.string()},
                {"device", device_},
                {"backing", attached.backing.string()},
                {"uuid", uuid_to_string(attached.header.uuid)},
                {"cmk", attached.header.wrapped.cmk_uri},
                {"outage_cache", outage_cache_json(attached.from_cache)}});
  } else {
    out_ << "attached " << device_ << " as " << attached.mapper_path.string() << " (uuid "
         << uuid_to_string(attached.header.uuid) << ", CMK " << attached.header.wrapped.cmk_uri
         << (attached.from_cache ? ", key from the outage cache" : "") << ")\n";
  }
  return OkStatus();
}

Status Cli::detach() {
  ENVCRYPT_TRY(detach_volume(name_));
  if (json_) {
    print_json({{"name", name_}, {"detached", true}});
  } else {
    out_ << "detached " << name_ << '\n';
  }
  return OkStatus();
}

Result<json> Cli::status_json(const std::vector<MappingStatus>& mappings) {
  json list = json::array();
  for (const auto& m : mappings) {
    list.push_back({{"name", m.name},
                    {"path", "/dev/mapper/" + m.name},
                    {"uuid", m.disk_uuid},
                    {"size", m.size_bytes},
                    {"read_only", m.read_only},
                    {"suspended", m.suspended},
                    {"open_count", m.open_count},
                    {"table", m.table},
                    {"driver", m.driver},
                    {"sector_size", m.sector_size},
                    {"key", m.key_state},
                    {"reads", m.reads},
                    {"writes", m.writes},
                    {"read_bytes", m.read_bytes},
                    {"write_bytes", m.write_bytes},
                    {"errors", m.errors}});
  }
  ENVCRYPT_ASSIGN_OR_RETURN(json all_errors, attach_errors_json(tab_));
  json errors = json::array();
  for (const json& error : all_errors) {
    if (name_.empty() || error["disk"] == name_) {
      errors.push_back(error);
    }
  }
  return json{{"mappings", list}, {"attach_errors", errors}};
}

// The mappings, then the last attach error of each envcrypttab disk that
// has one (diagnostics.h); with --keys, the CMK versions instead.
Status Cli::status() {
  if (keys_) {
    return print_key_versions(tab_, command_hooks());
  }
  ENVCRYPT_ASSIGN_OR_RETURN(
      auto mappings,
      volume_status(name_.empty() ? std::nullopt : std::optional<std::string>(name_)));
  if (json_) {
    ENVCRYPT_ASSIGN_OR_RETURN(json j, status_json(mappings));
    print_json(j);
    return OkStatus();
  }
  if (mappings.empty()) {
    out_ << "no envcrypt mappings\n";
  }
  for (const auto& m : mappings) {
    out_ << m.name << ": /dev/mapper/" << m.name << '\n'
         << "  uuid:       " << m.disk_uuid << '\n'
         << "  size:       " << human_bytes(m.size_bytes) << (m.read_only ? ", read-only" : "")
         << (m.suspended ? ", suspended" : "") << ", open " << m.open_count << '\n'
         << "  table:      " << m.table << '\n'
         << "  crypto:     " << m.driver << ", sector size " << m.sector_size << ", key "
         << m.key_state << '\n'
         << "  io:         " << m.reads << " reads (" << human_bytes(m.read_bytes) << "), "
         << m.writes << " writes (" << human_bytes(m.write_bytes) << "), " << m.errors
         << " errors\n";
  }
  std::ostringstream errors;
  ENVCRYPT_TRY(print_attach_errors(tab_, errors));
  std::istringstream lines(errors.str());
  for (std::string line; std::getline(lines, line);) {
    if (name_.empty() || line.starts_with(name_ + ": ")) {
      out_ << line << '\n';
    }
  }
  return OkStatus();
}

Status Cli::inspect() {
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, read_volume_header(device_, header_file()));
  const std::string source = header_file_.empty() ? device_ : header_file_;
  if (json_) {
    print_json(header_json(source, selection));
    return OkStatus();
  }
  const DiskHeader& h = selection.header;
  const Geometry& g = h.geometry;
  out_ << source << ": envcrypt header version " << h.version << '\n'
       << "  uuid:          " << uuid_to_string(h.uuid) << '\n'
       << "  label:         " << h.label << '\n'
       << "  sequence:      " << h.sequence << '\n'
       << "  cipher:        " << g.cipher << ", " << g.key_size * 8 << "-bit key, sector size "
       << g.sector_size << '\n'
       << "  data offset:   " << g.data_offset << " (" << human_bytes(g.data_offset) << ")\n"
       << "  data size:     "
       << (g.data_size == 0 ? std::string("to the end of the device")
                            : std::to_string(g.data_size) + " (" + human_bytes(g.data_size) + ")")
       << '\n'
       << "  cmk:           " << h.wrapped.cmk_uri << " (version " << h.wrapped.cmk_version << ")\n"
       << "  wrapped key:   AES-256-GCM, " << h.wrapped.ciphertext.size()
       << " bytes, key check value HMAC-SHA256-128\n"
       << "  recovery:      "
       << (h.recovery ? "X25519-HKDF-SHA256-AES-256-GCM, key " + to_hex(h.recovery->key_id)
                      : std::string("none"))
       << '\n'
       << "  primary:       " << copy_text(selection.primary) << '\n'
       << "  secondary:     " << copy_text(selection.secondary) << '\n';
  return OkStatus();
}

Status Cli::verify() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * reg, registry());
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, read_volume_header(device_, header_file()));
  const std::string source = header_file_.empty() ? device_ : header_file_;
  warn_if_degraded(source, selection);
  ENVCRYPT_TRY(unlock(*reg, selection.header));  // the DK is zeroed on return
  if (json_) {
    json j = header_json(source, selection);
    j["verified"] = true;
    print_json(j);
  } else {
    out_ << source << ": ok: the data key unwraps under " << selection.header.wrapped.cmk_uri
         << " (version " << selection.header.wrapped.cmk_version
         << ") and matches the key check value\n";
  }
  return OkStatus();
}

// udev IMPORT{program} format (udev_properties.h).
Status Cli::probe() {
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, read_volume_header(device_, header_file()));
  const DiskHeader& h = selection.header;
  if (json_) {
    print_json({{"ID_FS_TYPE", "envcrypt"},
                {"ID_FS_USAGE", "crypto"},
                {"ID_FS_VERSION", h.version},
                {"ID_FS_UUID", uuid_to_string(h.uuid)},
                {"ID_FS_LABEL", udev_safe(h.label)},
                {"ENVCRYPT_UUID", uuid_to_string(h.uuid)},
                {"ENVCRYPT_CMK", udev_safe(h.wrapped.cmk_uri)}});
    return OkStatus();
  }
  out_ << probe_output(selection);
  return OkStatus();
}

void Cli::add_volume_commands(CLI::App& app) {
  auto bind = [this](CLI::App* command, const std::function<std::string()>& what,
                     Status (Cli::*method)()) {
    command->callback([this, what, method] {
      what_ = what();
      action_ = [this, method] { return (this->*method)(); };
    });
  };

  auto* format = app.add_subcommand("format", "create a header and a data key under a CMK");
  format->add_option("DEVICE", device_, "block device or image file")->required();
  format->add_option("--cmk", cmk_,
                     "key id, alias/<name> or CMK URI (default: config default_cmk)");
  format->add_option("--label", label_, "free text, at most 64 bytes");
  format->add_option("--sector-size", sector_size_, "encryption unit: 512 or 4096")
      ->check(CLI::IsMember({512, 4096}));
  format->add_option("--header", header_file_, "write a detached header to this file");
  format->add_flag("--force", force_, "destroy whatever signature the device holds");
  format->add_flag("--wipe", wipe_, "fill the data area with ciphertext of zeros");
  format->add_option("--recovery-key", recovery_key_,
                     "also wrap the data key to this X25519 public key (PEM); header version 2");
  bind(
      format, [this] { return "format " + device_; }, &Cli::format);

  auto* attach = app.add_subcommand("attach", "unwrap the data key and map the disk");
  attach->add_option("DEVICE", device_)->required();
  attach->add_option("NAME", name_, "mapping name (default: envcrypt-<uuid prefix>)");
  attach->add_option("--header", header_file_, "detached header file");
  attach->add_flag("--readonly", read_only_);
  attach->add_flag("--allow-discards", allow_discards_);
  bind(
      attach, [this] { return "attach " + device_; }, &Cli::attach);

  auto* detach = app.add_subcommand("detach", "remove a mapping");
  detach->add_option("NAME", name_)->required();
  bind(
      detach, [this] { return "detach " + name_; }, &Cli::detach);

  auto* status = app.add_subcommand(
      "status", "show envcrypt mappings and the last attach error of each envcrypttab disk");
  status->add_option("NAME", name_);
  status->add_flag("--keys", keys_,
                   "per known disk: the CMK version wrapping its data key, current or stale");
  status->add_option("--tab", tab_, "table file (default: $ENVCRYPT_TAB, else /etc/envcrypttab)");
  bind(
      status, [this] { return name_.empty() ? std::string("status") : "status " + name_; },
      &Cli::status);

  for (auto [name, help, method] :
       {std::tuple{"inspect", "print the header (never key material)", &Cli::inspect},
        std::tuple{"verify", "unwrap the data key and check it, without mapping", &Cli::verify},
        std::tuple{"probe", "print udev properties; fails if not envcrypt", &Cli::probe}}) {
    auto* command = app.add_subcommand(name, help);
    command->add_option("DEVICE", device_)->required();
    command->add_option("--header", header_file_, "detached header file");
    const std::string verb = name;
    bind(
        command, [this, verb] { return verb + " " + device_; }, method);
  }
}

}  // namespace envcrypt
