#include "cli/lifecycle_cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>

#include "audit/audit.h"
#include "boot/key_guard.h"
#include "boot/preflight.h"
#include "boot/rewrap.h"
#include "cli/json_records.h"
#include "config/crypttab.h"
#include "device/blockdev.h"
#include "util/file_io.h"
#include "util/joined.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

using json = nlohmann::ordered_json;

// Arguments of the lifecycle commands, shared by the callbacks that parse
// them and the action that runs later.
struct LifecycleArgs {
  std::string keyref;
  std::string principal;
  std::vector<std::string> operations;
  std::string grant_id;
  std::string public_key_file;
  std::string token_file;
  std::string material_file;
  std::string expires;
  bool allow_backup = false;
  bool force = false;
  // audit
  std::string key;
  std::string disk;
  std::string since;
  std::string until;
  bool verify = false;
  std::string anchor;                          // --anchor VALUE: check the log against it
  const CLI::Option* anchor_option = nullptr;  // --anchor given, with or without a value
};

using Args = std::shared_ptr<LifecycleArgs>;

class Commands {
 public:
  Commands(Args args, LifecycleCommandHooks hooks) : args_(std::move(args)), h_(std::move(hooks)) {}

  Status rotate_key();
  Status rotate_due();
  Status purge_due();
  Status get_parameters_for_import();
  Status import_key_material();
  Status delete_key_material();
  Status create_grant();
  Status revoke_grant();
  Status list_grants();
  Status audit();

 private:
  // The backend for a key reference: the one its URI names, or --kms's.
  Result<KmsClient*> kms_for(const std::string& keyref) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, h_.registry());
    return h_.kms_selector->empty() ? registry->for_key(keyref)
                                    : registry->for_selector(*h_.kms_selector);
  }
  Result<KmsClient*> kms_selected() {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, h_.registry());
    return registry->for_selector(
        h_.kms_selector->empty() ? std::nullopt : std::optional<std::string>(*h_.kms_selector));
  }
  // A capability of the client for `keyref` (or of --kms's), or its
  // explanation why it cannot do `operation`.
  template <typename Capability>
  Result<Capability*> capability_for(const std::string& keyref,
                                     Capability* (KmsClient::*accessor)(),
                                     std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_for(keyref));
    return offered(*client, (client->*accessor)(), operation);
  }
  template <typename Capability>
  Result<Capability*> capability_selected(Capability* (KmsClient::*accessor)(),
                                          std::string_view operation) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_selected());
    return offered(*client, (client->*accessor)(), operation);
  }
  std::ostream& out() { return *h_.out; }
  [[nodiscard]] bool json_output() const { return *h_.json; }
  void print_json(const json& j) { out() << j.dump(2) << '\n'; }

  Status audit_verify(AuditLog& log);
  Status audit_anchor(AuditLog& log);
  Status audit_query(KmsClient& client, AuditLog& log);

  Args args_;
  LifecycleCommandHooks h_;
};

// "decrypt,describe" and "decrypt describe" both name two operations.
Result<std::vector<GrantOperation>> parse_operations(const std::vector<std::string>& words) {
  std::vector<GrantOperation> operations;
  for (const std::string& word : words) {
    std::istringstream items(word);
    for (std::string item; std::getline(items, item, ',');) {
      if (item.empty()) {
        continue;
      }
      ENVCRYPT_ASSIGN_OR_RETURN(GrantOperation operation, parse_grant_operation(item));
      operations.push_back(operation);
    }
  }
  return operations;
}

Status write_file(const std::string& path, const std::string& text, mode_t mode) {
  return write_file_durably(path, text, {.mode = mode});
}

// A token or wrapped material is a few hundred bytes; a path to anything
// much larger (/dev/zero, say) is refused rather than read.
constexpr std::size_t kMaxImportFile = 64 * 1024;

Result<std::string> read_file(const std::string& path) {
  return read_file_at_most(path, kMaxImportFile);
}

std::string trimmed(std::string text) {
  const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
  text.erase(std::find_if_not(text.rbegin(), text.rend(), blank).base(), text.end());
  text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), blank));
  return text;
}

Result<std::optional<std::int64_t>> optional_time(const std::string& text) {
  if (text.empty()) {
    return std::optional<std::int64_t>();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(std::int64_t seconds, parse_rfc3339(text));
  return std::optional<std::int64_t>(seconds);
}

Status Commands::rotate_key() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyLifecycle * lifecycle,
                            capability_for(args_->keyref, &KmsClient::lifecycle, "rotate-key"));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, lifecycle->rotate_key(args_->keyref));
  if (json_output()) {
    print_json(key_json(key));
  } else {
    out() << "rotated " << key.uri << ": version " << key.primary_version << " is primary ("
          << key.version_count << " versions)\n";
  }
  return OkStatus();
}

Status Commands::rotate_due() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyLifecycle * lifecycle,
                            capability_selected(&KmsClient::lifecycle, "rotate-due"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto keys, lifecycle->rotate_due());
  if (json_output()) {
    json rotated = json::array();
    for (const KeyInfo& key : keys) {
      rotated.push_back(key_json(key));
    }
    print_json({{"rotated", rotated}});
    return OkStatus();
  }
  for (const KeyInfo& key : keys) {
    out() << "rotated " << key.uri << ": version " << key.primary_version << " is primary\n";
  }
  out() << "rotate-due: " << keys.size() << " rotated\n";
  return OkStatus();
}

Status Commands::purge_due() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyLifecycle * lifecycle,
                            capability_selected(&KmsClient::lifecycle, "purge-due"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto ids, lifecycle->purge_due());
  if (json_output()) {
    print_json({{"purged", ids}});
    return OkStatus();
  }
  for (const std::string& id : ids) {
    out() << "purged key " << id << '\n';
  }
  out() << "purge-due: " << ids.size() << " purged\n";
  return OkStatus();
}

Status Commands::get_parameters_for_import() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyImport * byok, capability_for(args_->keyref, &KmsClient::key_import,
                                                             "get-parameters-for-import"));
  ENVCRYPT_ASSIGN_OR_RETURN(ImportParameters parameters,
                            byok->get_parameters_for_import(args_->keyref));
  ENVCRYPT_TRY(write_file(args_->public_key_file, parameters.public_key_pem, 0644));
  ENVCRYPT_TRY(write_file(args_->token_file, parameters.import_token + "\n", 0600));
  if (json_output()) {
    print_json({{"key_id", parameters.key_id},
                {"public_key_file", args_->public_key_file},
                {"token_file", args_->token_file},
                {"wrapping_algorithm", parameters.wrapping_algorithm},
                {"expires_at", format_rfc3339(parameters.expires_at)}});
  } else {
    out() << "public key:   " << args_->public_key_file << " (RSA-2048, "
          << parameters.wrapping_algorithm << ")\n"
          << "import token: " << args_->token_file << '\n'
          << "expires:      " << format_rfc3339(parameters.expires_at) << '\n';
  }
  return OkStatus();
}

Status Commands::import_key_material() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyImport * byok, capability_for(args_->keyref, &KmsClient::key_import,
                                                             "import-key-material"));
  ImportMaterialRequest request;
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string material, read_file(args_->material_file));
  request.encrypted_material.assign(material.begin(), material.end());
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string token, read_file(args_->token_file));
  request.import_token = trimmed(token);
  ENVCRYPT_ASSIGN_OR_RETURN(request.material_expires_at, optional_time(args_->expires));
  request.allow_backup = args_->allow_backup;
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, byok->import_key_material(args_->keyref, request));
  if (json_output()) {
    json j = key_json(key);
    if (request.material_expires_at) {
      j["material_expires_at"] = format_rfc3339(*request.material_expires_at);
    }
    print_json(j);
    return OkStatus();
  }
  out() << "imported key material into " << key.uri << ": " << to_string(key.state);
  if (request.material_expires_at) {
    out() << ", material expires " << format_rfc3339(*request.material_expires_at);
  }
  out() << '\n';
  return OkStatus();
}

Status Commands::delete_key_material() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_for(args_->keyref));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyImport * byok,
                            offered(*client, client->key_import(), "delete-key-material"));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * admin,
                            offered(*client, client->administration(), "delete-key-material"));
  ENVCRYPT_TRY(refuse_if_key_in_use(*admin, args_->keyref, args_->force));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, byok->delete_key_material(args_->keyref));
  if (json_output()) {
    print_json(key_json(key));
  } else {
    out() << "deleted the key material of " << key.uri << ": " << to_string(key.state) << '\n';
  }
  return OkStatus();
}

Status Commands::create_grant() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyGrants * grants,
                            capability_for(args_->keyref, &KmsClient::grants, "create-grant"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto operations, parse_operations(args_->operations));
  ENVCRYPT_ASSIGN_OR_RETURN(Grant grant,
                            grants->create_grant(args_->keyref, args_->principal, operations));
  const auto names = grant_operation_names(grant.operations);
  if (json_output()) {
    print_json(grant_json(grant));
  } else {
    out() << "grant " << grant.grant_id << ": " << grant.principal << " may " << joined(names, ", ")
          << " on key " << grant.key_id << '\n';
  }
  return OkStatus();
}

Status Commands::revoke_grant() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyGrants * grants,
                            capability_for(args_->keyref, &KmsClient::grants, "revoke-grant"));
  ENVCRYPT_TRY(grants->revoke_grant(args_->keyref, args_->grant_id));
  if (json_output()) {
    print_json({{"grant_id", args_->grant_id}, {"revoked", true}});
  } else {
    out() << "revoked grant " << args_->grant_id << '\n';
  }
  return OkStatus();
}

Status Commands::list_grants() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyGrants * capability,
                            capability_for(args_->keyref, &KmsClient::grants, "list-grants"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto grants, capability->list_grants(args_->keyref));
  if (json_output()) {
    json list = json::array();
    for (const Grant& grant : grants) {
      list.push_back(grant_json(grant));
    }
    print_json(list);
    return OkStatus();
  }
  out() << std::left << std::setw(34) << "GRANT ID" << std::setw(20) << "PRINCIPAL" << std::setw(28)
        << "OPERATIONS"
        << "CREATED\n";
  for (const Grant& grant : grants) {
    out() << std::left << std::setw(34) << grant.grant_id << std::setw(20) << grant.principal
          << std::setw(28) << joined(grant_operation_names(grant.operations), ",")
          << format_rfc3339(grant.created_at) << '\n';
  }
  return OkStatus();
}

Status Commands::audit() {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, kms_selected());
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAudit * trail, offered(*client, client->audit_trail(), "audit"));
  AuditLog* log = &trail->audit_log();
  if (args_->anchor_option != nullptr && args_->anchor_option->count() > 0) {
    return args_->anchor.empty() && !args_->verify ? audit_anchor(*log) : audit_verify(*log);
  }
  return args_->verify ? audit_verify(*log) : audit_query(*client, *log);
}

// A tampered log is ErrorCode::kCorrupt: the stored record is corrupt.
Status Commands::audit_verify(AuditLog& log) {
  std::optional<AuditAnchor> anchor;
  if (!args_->anchor.empty()) {
    ENVCRYPT_ASSIGN_OR_RETURN(anchor, parse_audit_anchor(args_->anchor));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(AuditVerification check, log.verify(anchor));
  if (json_output()) {
    json j = {{"path", log.path().string()}, {"lines", check.lines}, {"intact", check.intact}};
    if (check.intact) {
      j["anchor"] = check.lines == 0 ? "" : format_audit_anchor(check.head);
      if (anchor) {
        j["checked_anchor"] = format_audit_anchor(*anchor);
      }
    } else {
      j["first_bad_line"] = check.first_bad_line;
      j["problem"] = check.problem;
    }
    print_json(j);
  } else if (check.intact) {
    out() << log.path().string() << ": " << check.lines << " lines, MAC chain intact"
          << (anchor ? ", matches anchor " + format_audit_anchor(*anchor) : "")
          << (check.lines == 0 ? "" : "; head " + format_audit_anchor(check.head)) << '\n';
  }
  if (!check.intact) {
    return Error(ErrorCode::kCorrupt, log.path().string() + ": " + check.problem);
  }
  return OkStatus();
}

// Prints the head of a verified log, for storage off the host.
Status Commands::audit_anchor(AuditLog& log) {
  ENVCRYPT_ASSIGN_OR_RETURN(AuditVerification check, log.verify());
  if (!check.intact) {
    return Error(ErrorCode::kCorrupt, log.path().string() + ": " + check.problem);
  }
  if (check.lines == 0) {
    return Error(ErrorCode::kNotFound, log.path().string() + " is empty: nothing to anchor yet");
  }
  if (json_output()) {
    print_json({{"path", log.path().string()}, {"anchor", format_audit_anchor(check.head)}});
  } else {
    out() << format_audit_anchor(check.head) << '\n';
  }
  return OkStatus();
}

Status Commands::audit_query(KmsClient& client, AuditLog& log) {
  AuditFilter filter;
  if (!args_->key.empty()) {
    // Ids are taken as they are, so lines of purged keys stay findable.
    const bool is_reference =
        args_->key.starts_with("alias/") || args_->key.find("://") != std::string::npos;
    if (is_reference) {
      ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * admin,
                                offered(client, client.administration(), "describe-key"));
      ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, admin->describe_key(args_->key));
      filter.key_id = key.key_id;
    } else {
      filter.key_id = args_->key;
    }
  }
  if (!args_->disk.empty()) {
    filter.disk = args_->disk;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(filter.since, optional_time(args_->since));
  ENVCRYPT_ASSIGN_OR_RETURN(filter.until, optional_time(args_->until));
  ENVCRYPT_ASSIGN_OR_RETURN(auto records, log.query(filter));
  if (json_output()) {
    json list = json::array();
    for (const AuditRecord& record : records) {
      list.push_back(json::parse(record.line));
    }
    print_json(list);
    return OkStatus();
  }
  // Every field comes from the log, and a result may quote a key server:
  // printed escaped, one line per record.
  for (const AuditRecord& record : records) {
    out() << printable(record.time) << ' ' << printable(record.principal) << ' '
          << printable(record.operation) << ' '
          << (record.key_id.empty() ? "-" : printable(record.key_id));
    if (record.key_version) {
      out() << " v" << *record.key_version;
    }
    if (!record.disk.empty()) {
      out() << " disk " << printable(record.disk);
    }
    out() << ": " << printable(record.result) << '\n';
  }
  return OkStatus();
}

}  // namespace

void add_lifecycle_kms_commands(CLI::App& kms, const LifecycleCommandHooks& hooks) {
  auto args = std::make_shared<LifecycleArgs>();
  auto commands = std::make_shared<Commands>(args, hooks);
  auto on = [args, commands, hooks](CLI::App* command, std::string verb, bool names_key,
                                    Status (Commands::*method)()) {
    command->callback([args, commands, hooks, verb, names_key, method] {
      hooks.select("kms " + verb + (names_key ? " " + args->keyref : ""),
                   [commands, method] { return ((*commands).*method)(); });
    });
  };
  auto keyed = [&](const char* name, const char* help) {
    auto* command = kms.add_subcommand(name, help);
    command->add_option("KEYREF", args->keyref, "key id, alias/<name> or CMK URI")->required();
    return command;
  };

  on(keyed("rotate-key", "add a key version and make it primary"), "rotate-key", true,
     &Commands::rotate_key);
  on(kms.add_subcommand("rotate-due", "rotate every key whose rotation interval has elapsed"),
     "rotate-due", false, &Commands::rotate_due);
  on(kms.add_subcommand("purge-due", "destroy every key whose deletion date has passed"),
     "purge-due", false, &Commands::purge_due);

  auto* parameters = keyed("get-parameters-for-import",
                           "write an RSA-2048 wrapping public key and an import token (BYOK)");
  parameters->add_option("--public-key", args->public_key_file, "PEM file to write")->required();
  parameters->add_option("--token", args->token_file, "import token file to write")->required();
  on(parameters, "get-parameters-for-import", true, &Commands::get_parameters_for_import);

  auto* import = keyed("import-key-material", "import 32 bytes of wrapped key material (BYOK)");
  import
      ->add_option("--material", args->material_file,
                   "the material wrapped with RSAES_OAEP_SHA_256 under the public key")
      ->required();
  import->add_option("--token", args->token_file, "the import token file")->required();
  import->add_option("--expires", args->expires, "material expiry, RFC 3339 UTC");
  import->add_flag("--allow-backup", args->allow_backup,
                   "let kms backup copy this material (default: left out of backups)");
  on(import, "import-key-material", true, &Commands::import_key_material);

  auto* delete_material =
      keyed("delete-key-material", "destroy imported material; the key returns to PendingImport");
  delete_material->add_flag("--force", args->force, "even if it still wraps a disk of this host");
  on(delete_material, "delete-key-material", true, &Commands::delete_key_material);

  auto* grant = keyed("create-grant", "allow a principal operations on a key");
  grant->alias("grant");
  grant->add_option("PRINCIPAL", args->principal, "host/<name>, user/<name> or service/<name>")
      ->required();
  grant
      ->add_option("OPERATION", args->operations,
                   "generate, decrypt, reencrypt, describe, admin (several, or comma-separated)")
      ->required();
  on(grant, "create-grant", true, &Commands::create_grant);

  auto* revoke = keyed("revoke-grant", "remove a grant");
  revoke->add_option("GRANT_ID", args->grant_id)->required();
  on(revoke, "revoke-grant", true, &Commands::revoke_grant);
  on(keyed("list-grants", "list a key's grants"), "list-grants", true, &Commands::list_grants);

  auto* audit = kms.add_subcommand("audit", "print or verify the audit trail");
  audit->add_option("--key", args->key, "only this key (id, alias/<name> or CMK URI)");
  audit->add_option("--disk", args->disk, "only this disk uuid");
  audit->add_option("--since", args->since, "from this time, RFC 3339 UTC, inclusive");
  audit->add_option("--until", args->until, "up to this time, RFC 3339 UTC, inclusive");
  audit->add_flag("--verify", args->verify,
                  "check the MAC chain and sealed head; report the first altered, removed or "
                  "reordered line");
  args->anchor_option = audit
                            ->add_option("--anchor", args->anchor,
                                         "alone: print the head (audit-v1:SEQ:MAC) to keep off "
                                         "the host; with a value: check the log against it")
                            ->expected(0, 1);
  on(audit, "audit", false, &Commands::audit);
}

}  // namespace envcrypt
