#include "cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "audit.h"
#include "boot_cli.h"
#include "config.h"
#include "diagnostics.h"
#include "image_cli.h"
#include "keystore_backup_cli.h"
#include "kms_registry.h"
#include "lifecycle_cli.h"
#include "ops_cli.h"
#include "printable.h"
#include "recovery_cli.h"
#include "recovery_volume.h"
#include "root_key_cli.h"
#include "udev_properties.h"
#include "volume.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

constexpr const char* kVersion = "envcryptctl " ENVCRYPT_VERSION;

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(unit == 0 ? 0 : 1) << value << ' ' << kUnits[unit];
  return out.str();
}

// Progress of a long write on stderr, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::ostream& err) : err_(err), enabled_(::isatty(STDERR_FILENO) == 1) {}

  ProgressFn callback() {
    if (!enabled_) {
      return {};
    }
    start_ = std::chrono::steady_clock::now();
    return [this](std::uint64_t done, std::uint64_t total) { draw(done, total); };
  }

 private:
  void draw(std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && now - last_ < std::chrono::milliseconds(200)) {
      return;
    }
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    const auto eta =
        rate > 0 ? static_cast<std::uint64_t>(static_cast<double>(total - done) / rate) : 0;
    const int percent = total != 0 ? static_cast<int>(done * 100 / total) : 100;
    char eta_text[32];
    std::snprintf(eta_text, sizeof(eta_text), "%llu:%02llu",
                  static_cast<unsigned long long>(eta / 60),
                  static_cast<unsigned long long>(eta % 60));
    err_ << "\rwipe: " << std::setw(3) << percent << "%  " << human_bytes(done) << " / "
         << human_bytes(total) << "  " << human_bytes(static_cast<std::uint64_t>(rate))
         << "/s  ETA " << eta_text << "   " << (done == total ? "\n" : "") << std::flush;
  }

  std::ostream& err_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

json key_json(const KeyInfo& key) {
  json j = {{"key_id", key.key_id},
            {"uri", key.uri},
            {"aliases", key.aliases},
            {"state", to_string(key.state)},
            {"origin", to_string(key.origin)},
            {"description", key.description},
            {"primary_version", key.primary_version},
            {"version_count", key.version_count},
            {"created_at", format_rfc3339(key.created_at)},
            {"service_key", key.service_key}};
  if (key.deletion_date) {
    j["deletion_date"] = format_rfc3339(*key.deletion_date);
  }
  return j;
}

json copy_json(const CopyReport& copy) {
  json j = {{"state", to_string(copy.state)}};
  if (copy.state == CopyState::kValid || copy.state == CopyState::kStale) {
    j["sequence"] = copy.sequence;
  }
  if (!copy.detail.empty()) {
    j["detail"] = copy.detail;
  }
  return j;
}

std::string copy_text(const CopyReport& copy) {
  std::string text(to_string(copy.state));
  if (copy.state == CopyState::kValid || copy.state == CopyState::kStale) {
    text += " (sequence " + std::to_string(copy.sequence) + ")";
  }
  if (!copy.detail.empty()) {
    text += ": " + copy.detail;
  }
  return text;
}

json header_json(const std::string& source, const HeaderSelection& selection) {
  const DiskHeader& h = selection.header;
  const Geometry& g = h.geometry;
  return {
      {"device", source},
      {"version", h.version},
      {"uuid", uuid_to_string(h.uuid)},
      {"label", h.label},
      {"sequence", h.sequence},
      {"cipher", g.cipher},
      {"sector_size", g.sector_size},
      {"key_bits", g.key_size * 8},
      {"data_offset", g.data_offset},
      {"data_size", g.data_size},
      {"cmk", h.wrapped.cmk_uri},
      {"cmk_version", h.wrapped.cmk_version},
      {"wrap_algorithm", "AES-256-GCM"},
      {"kcv_algorithm", "HMAC-SHA256-128"},
      {"recovery_key_id", h.recovery ? json(to_hex(h.recovery->key_id)) : json()},
      {"copies",
       {{"primary", copy_json(selection.primary)}, {"secondary", copy_json(selection.secondary)}}}};
}

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

// How the key of an attach was found: null when the KMS answered.
json outage_cache_json(const std::optional<CacheUse>& use) {
  if (!use) {
    return nullptr;
  }
  return {{"kms_unreachable", use->reason}, {"valid_until", format_rfc3339(use->valid_until)}};
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

Status Cli::print_key(const KeyInfo& key) {
  if (json_) {
    print_json(key_json(key));
    return OkStatus();
  }
  out_ << "key id:       " << key.key_id << '\n'
       << "state:        " << to_string(key.state) << '\n'
       << "origin:       " << to_string(key.origin) << '\n'
       << "aliases:      ";
  for (std::size_t i = 0; i < key.aliases.size(); ++i) {
    out_ << (i != 0 ? ", " : "") << key.aliases[i];
  }
  out_ << '\n'
       << "description:  " << key.description << '\n'
       << "versions:     " << key.version_count << " (primary " << key.primary_version << ")\n"
       << "created:      " << format_rfc3339(key.created_at) << '\n';
  if (key.deletion_date) {
    out_ << "deletion:     " << format_rfc3339(*key.deletion_date) << '\n';
  }
  if (key.service_key) {
    out_ << "service key:  yes (cannot be disabled or deleted)\n";
  }
  out_ << key.uri << '\n';
  return OkStatus();
}

Status Cli::create_key() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_selected("create-key"));
  CreateKeyRequest request;
  request.description = description_;
  if (!alias_.empty()) {
    request.alias = alias_;
  }
  if (origin_ == "EXTERNAL") {
    request.origin = KeyOrigin::kExternal;
  }
  if (rotation_days_ != 0) {
    request.rotation_interval_days = rotation_days_;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, kms->create_key(request));
  return print_key(key);
}

Status Cli::list_keys() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_selected("list-keys"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto keys, kms->list_keys());
  if (json_) {
    json list = json::array();
    for (const auto& key : keys) {
      list.push_back(key_json(key));
    }
    print_json(list);
    return OkStatus();
  }
  out_ << std::left << std::setw(38) << "KEY ID" << std::setw(17) << "STATE"
       << "ALIASES\n";
  for (const auto& key : keys) {
    std::string aliases;
    for (const auto& alias : key.aliases) {
      aliases += (aliases.empty() ? "" : ",") + alias;
    }
    out_ << std::left << std::setw(38) << key.key_id << std::setw(17) << to_string(key.state)
         << aliases << '\n';
  }
  return OkStatus();
}

Status Cli::describe_key() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_for(keyref_, "describe-key"));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, kms->describe_key(keyref_));
  return print_key(key);
}

Status Cli::list_aliases() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * kms, aliases_selected("list-aliases"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto aliases, kms->list_aliases());
  if (json_) {
    json j = json::object();
    for (const auto& [alias, key_id] : aliases) {
      j[alias] = key_id;
    }
    print_json(j);
    return OkStatus();
  }
  for (const auto& [alias, key_id] : aliases) {
    out_ << std::left << std::setw(32) << alias << key_id << '\n';
  }
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

void Cli::add_kms_commands(CLI::App& app) {
  auto* kms = app.add_subcommand("kms", "key management");
  kms->require_subcommand(1);
  kms->add_option("--kms", kms_selector_,
                  "kmip://<endpoint> or kmip://<host>:<port> (default: the local KMS)");

  auto on = [this](CLI::App* command, std::string verb, std::function<Status()> action,
                   bool names_key) {
    command->callback([this, verb, action, names_key] {
      what_ = "kms " + verb + (names_key ? " " + keyref_ : "");
      action_ = action;
    });
  };

  auto* create = kms->add_subcommand("create-key", "create a customer master key");
  create->add_option("--description", description_);
  create->add_option("--alias", alias_, "alias/<name> for the new key");
  create->add_option("--origin", origin_, "KMS or EXTERNAL (import your own material)")
      ->transform(CLI::IsMember({"KMS", "EXTERNAL"}, CLI::ignore_case));
  create->add_option("--rotation-interval,--rotation-interval-days", rotation_days_,
                     "rotate by itself every DAYS days (1-3650)");
  on(
      create, "create-key", [this] { return create_key(); }, false);

  on(
      kms->add_subcommand("list-keys", "list the keys"), "list-keys",
      [this] { return list_keys(); }, false);
  on(
      kms->add_subcommand("list-aliases", "list the aliases"), "list-aliases",
      [this] { return list_aliases(); }, false);

  auto keyed = [&](const char* name, const char* help) {
    auto* command = kms->add_subcommand(name, help);
    command->add_option("KEYREF", keyref_, "key id, alias/<name> or CMK URI")->required();
    return command;
  };
  on(
      keyed("describe-key", "show a key"), "describe-key", [this] { return describe_key(); }, true);
  on(
      keyed("enable-key", "allow a key's use again"), "enable-key",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend, admin_for(keyref_, "enable-key"));
        ENVCRYPT_TRY(backend->enable_key(keyref_));
        out_ << "enabled " << keyref_ << '\n';
        return OkStatus();
      },
      true);
  // Safe disable (lifecycle_cli.h): refused while the key wraps a known disk.
  auto* disable = keyed("disable-key", "refuse every use of a key");
  disable->add_flag("--force", force_, "even if it still wraps a disk of this host");
  on(
      disable, "disable-key",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend, admin_for(keyref_, "disable-key"));
        ENVCRYPT_TRY(refuse_if_key_in_use(*backend, keyref_, force_));
        ENVCRYPT_TRY(backend->disable_key(keyref_));
        out_ << "disabled " << keyref_ << '\n';
        return OkStatus();
      },
      true);
  auto* schedule = keyed("schedule-key-deletion", "delete a key after a waiting period");
  schedule->add_option("--pending-window-days", pending_window_days_, "7 to 366 (default 30)")
      ->check(CLI::Range(7, 366));
  schedule->add_flag("--force", force_, "even if it still wraps a disk of this host");
  schedule->add_flag("--destroy-now", destroy_now_,
                     "on a KMS without a pending window (KMIP): destroy the key at once");
  on(
      schedule, "schedule-key-deletion",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend,
                                  admin_for(keyref_, "schedule-key-deletion"));
        ENVCRYPT_ASSIGN_OR_RETURN(
            KeyInfo key,
            schedule_key_deletion(*backend, keyref_, pending_window_days_, force_, destroy_now_));
        return print_key(key);
      },
      true);
  on(
      keyed("cancel-key-deletion", "cancel a scheduled deletion (the key stays disabled)"),
      "cancel-key-deletion",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend,
                                  admin_for(keyref_, "cancel-key-deletion"));
        ENVCRYPT_TRY(backend->cancel_key_deletion(keyref_));
        out_ << "deletion cancelled for " << keyref_ << '\n';
        return OkStatus();
      },
      true);

  auto* create_alias = kms->add_subcommand("create-alias", "name a key");
  create_alias->add_option("ALIAS", alias_, "alias/<name>")->required();
  create_alias->add_option("KEYREF", keyref_)->required();
  on(
      create_alias, "create-alias",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * backend, aliases_for(keyref_, "create-alias"));
        ENVCRYPT_TRY(backend->create_alias(alias_, keyref_));
        out_ << "created " << alias_ << " -> " << keyref_ << '\n';
        return OkStatus();
      },
      false);
  auto* delete_alias = kms->add_subcommand("delete-alias", "remove an alias");
  delete_alias->add_option("ALIAS", alias_)->required();
  on(
      delete_alias, "delete-alias",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * backend, aliases_selected("delete-alias"));
        ENVCRYPT_TRY(backend->delete_alias(alias_));
        out_ << "deleted " << alias_ << '\n';
        return OkStatus();
      },
      false);

  // Rotation, BYOK, grants, audit, and rewrap at the top level: lifecycle_cli.cc.
  const BootCommandHooks common = command_hooks();
  const LifecycleCommandHooks hooks{common.registry, &kms_selector_, common.json,
                                    common.out,      common.err,     common.select};
  add_lifecycle_kms_commands(*kms, hooks);
  add_root_key_commands(*kms, hooks);
  add_keystore_backup_commands(*kms, hooks);
  add_rewrap_command(app, hooks);
}

BootCommandHooks Cli::command_hooks() {
  BootCommandHooks hooks;
  hooks.registry = [this] { return registry(); };
  hooks.json = &json_;
  hooks.out = &out_;
  hooks.err = &err_;
  hooks.select = [this](std::string what, std::function<Status()> action) {
    what_ = std::move(what);
    action_ = std::move(action);
  };
  return hooks;
}

// attach-all, detach-all and the udev/systemd helpers: boot_cli.cc;
// preflight and the header backup commands: ops_cli.cc.
void Cli::add_boot_commands(CLI::App& app) {
  const BootCommandHooks hooks = command_hooks();
  envcrypt::add_boot_commands(app, hooks);
  add_ops_commands(app, hooks);
  add_recovery_commands(app, hooks);
  add_image_commands(app, hooks);
}

int Cli::run(int argc, const char* const* argv) {
  CLI::App app{"envcryptctl: envelope-encrypted block devices", "envcryptctl"};
  app.fallthrough();
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  app.add_option("--config", config_path_,
                 "configuration file (default: $ENVCRYPT_CONFIG, "
                 "else /etc/envcrypt/envcrypt.conf)");
  app.add_flag("--json", json_, "machine-readable output");
  add_volume_commands(app);
  add_kms_commands(app);
  add_boot_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e, out_, err_);
  } catch (const CLI::ParseError& e) {
    err_ << "envcryptctl: " << e.what() << " (see envcryptctl --help)\n";
    return static_cast<int>(ErrorCode::kUsage);
  }
  if (!action_) {
    err_ << "envcryptctl: no command (see envcryptctl --help)\n";
    return static_cast<int>(ErrorCode::kUsage);
  }
  Status status = [this]() -> Status {
    try {
      return action_();
    } catch (const std::exception& e) {  // a library threw: keep the one-line contract
      return Error(ErrorCode::kInternal, e.what());
    }
  }();
  if (!status.ok()) {
    // Errors from below often start with the path the command already names.
    std::string_view message = status.error().message();
    for (const std::string& object : {device_, header_file_}) {
      if (!object.empty() && message.starts_with(object + ": ")) {
        message.remove_prefix(object.size() + 2);
      }
    }
    err_ << "envcryptctl: " << printable(what_) << ": " << printable(message) << '\n';
    return status.error().exit_code();
  }
  return 0;
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Cli cli(out, err);
  return cli.run(argc, argv);
}

}  // namespace envcrypt
