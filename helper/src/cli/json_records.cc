#include "cli/json_records.h"

#include "audit/audit.h"
#include "util/printable.h"
#include "util/uuid.h"

namespace envcrypt {

using json = nlohmann::ordered_json;

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

json outage_cache_json(const std::optional<CacheUse>& use) {
  if (!use) {
    return nullptr;
  }
  return {{"kms_unreachable", use->reason}, {"valid_until", format_rfc3339(use->valid_until)}};
}

json grant_json(const Grant& grant) {
  return {{"grant_id", grant.grant_id},     {"key_id", grant.key_id},
          {"principal", grant.principal},   {"operations", grant_operation_names(grant.operations)},
          {"created_by", grant.created_by}, {"created_at", format_rfc3339(grant.created_at)}};
}

}  // namespace envcrypt
