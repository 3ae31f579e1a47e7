// The sealed key file (Documentation/kms/local.rst, "Root key in a TPM"):
// encoding, and decoding with every field checked, since the file is
// read from a disk an attacker may have written.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tpm/tpm_seal.h"
#include "tpm/tss_marshal.h"
#include "util/crypto.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

using tss::unmarshal;

constexpr std::size_t kMaxSealedFileSize = 64 * 1024;
constexpr const char* kSealedFormat = "envcrypt-tpm-sealed";

Error bad_sealed(const std::string& what) {
  return {ErrorCode::kCorrupt, "sealed key file: " + what};
}

Result<Bytes> hex_field(const nlohmann::json& object, const char* name, std::size_t max_size) {
  const auto field = object.find(name);
  if (field == object.end() || !field->is_string()) {
    return bad_sealed(std::string("\"") + name + "\" is missing or not a string");
  }
  const auto& text = field->get_ref<const std::string&>();
  if (text.size() > 2 * max_size) {
    return bad_sealed(std::string("\"") + name + "\" is too long");
  }
  Result<Bytes> bytes = from_hex(text);
  if (!bytes.ok()) {
    return bad_sealed(std::string("\"") + name + "\" is not hex");
  }
  return bytes;
}

Result<std::vector<std::uint32_t>> pcr_list_field(const nlohmann::json& object) {
  const auto field = object.find("pcrs");
  if (field == object.end() || !field->is_array() || field->size() > kMaxPcr + 1) {
    return bad_sealed("\"pcrs\" is missing or not a list of PCRs");
  }
  std::vector<std::uint32_t> pcrs;
  for (const auto& item : *field) {
    if (!item.is_number_unsigned() || item.get<std::uint64_t>() > kMaxPcr) {
      return bad_sealed("\"pcrs\" holds something other than a PCR number 0 to 23");
    }
    pcrs.push_back(item.get<std::uint32_t>());
  }
  TpmSealPolicy policy;
  policy.pcrs = pcrs;
  if (!check_seal_policy(policy).ok()) {
    return bad_sealed("\"pcrs\" is not in ascending order without repeats");
  }
  return pcrs;
}

Result<PcrValues> pcr_values_field(const nlohmann::json& object,
                                   const std::vector<std::uint32_t>& pcrs) {
  const auto field = object.find("pcr_values");
  if (field == object.end() || !field->is_object() || field->size() != pcrs.size()) {
    return bad_sealed("\"pcr_values\" must hold one value for each PCR of \"pcrs\"");
  }
  PcrValues values;
  for (const std::uint32_t pcr : pcrs) {
    ENVCRYPT_ASSIGN_OR_RETURN(Bytes value, hex_field(*field, std::to_string(pcr).c_str(), 32));
    if (value.size() != 32) {
      return bad_sealed("the value of PCR " + std::to_string(pcr) + " is not 32 bytes");
    }
    values.emplace(pcr, std::move(value));
  }
  return values;
}

}  // namespace

Status check_seal_policy(const TpmSealPolicy& policy) {
  for (std::size_t i = 0; i < policy.pcrs.size(); ++i) {
    if (policy.pcrs[i] > kMaxPcr || (i > 0 && policy.pcrs[i] <= policy.pcrs[i - 1])) {
      return Error(ErrorCode::kUsage, "PCR list must be ascending, each 0 to 23");
    }
  }
  return OkStatus();
}

std::string encode_sealed_blob(const TpmSealedBlob& blob) {
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [pcr, value] : blob.pcr_values) {
    values[std::to_string(pcr)] = to_hex(value);
  }
  const nlohmann::json object = {
      {"format", kSealedFormat},
      {"version", 1},
      {"pcr_bank", "sha256"},
      {"pcrs", blob.policy.pcrs},
      {"pcr_values", values},
      {"pin", blob.policy.pin},
      {"public", to_hex(blob.public_area)},
      {"private", to_hex(blob.private_area)},
  };
  return object.dump(2) + "\n";
}

Result<TpmSealedBlob> decode_sealed_blob(std::string_view text) {
  if (text.size() > kMaxSealedFileSize) {
    return bad_sealed("larger than 64 KiB");
  }
  const nlohmann::json object = nlohmann::json::parse(text, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return bad_sealed("not a JSON object");
  }
  static const std::set<std::string> kKnown = {"format",     "version", "pcr_bank", "pcrs",
                                               "pcr_values", "pin",     "public",   "private"};
  for (const auto& [key, value] : object.items()) {
    if (kKnown.count(key) == 0) {
      return bad_sealed("unknown field \"" + printable(key) + "\"");
    }
  }
  if (object.value("format", nlohmann::json()) != kSealedFormat) {
    return bad_sealed("\"format\" is not \"" + std::string(kSealedFormat) + "\"");
  }
  if (object.value("version", nlohmann::json()) != 1) {
    return bad_sealed("\"version\" is not 1");
  }
  if (object.value("pcr_bank", nlohmann::json()) != "sha256") {
    return bad_sealed("\"pcr_bank\" is not \"sha256\"");
  }
  const auto pin = object.find("pin");
  if (pin == object.end() || !pin->is_boolean()) {
    return bad_sealed("\"pin\" is missing or not true/false");
  }
  TpmSealedBlob blob;
  blob.policy.pin = pin->get<bool>();
  ENVCRYPT_ASSIGN_OR_RETURN(blob.policy.pcrs, pcr_list_field(object));
  ENVCRYPT_ASSIGN_OR_RETURN(blob.pcr_values, pcr_values_field(object, blob.policy.pcrs));
  ENVCRYPT_ASSIGN_OR_RETURN(blob.public_area, hex_field(object, "public", sizeof(TPM2B_PUBLIC)));
  ENVCRYPT_ASSIGN_OR_RETURN(blob.private_area, hex_field(object, "private", sizeof(TPM2B_PRIVATE)));
  ENVCRYPT_TRY(
      unmarshal<TPM2B_PUBLIC>(blob.public_area, Tss2_MU_TPM2B_PUBLIC_Unmarshal, "public area"));
  ENVCRYPT_TRY(
      unmarshal<TPM2B_PRIVATE>(blob.private_area, Tss2_MU_TPM2B_PRIVATE_Unmarshal, "private area"));
  return blob;
}

Result<std::vector<std::uint32_t>> parse_pcr_list(const std::string& text) {
  std::set<std::uint32_t> pcrs;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    if (item.empty() || item.size() > 2 ||
        !std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return Error(ErrorCode::kUsage, "PCR list '" + text + "': each entry is a number 0 to 23");
    }
    const auto pcr = static_cast<std::uint32_t>(std::stoul(item));
    if (pcr > kMaxPcr || !pcrs.insert(pcr).second) {
      return Error(ErrorCode::kUsage, "PCR list '" + text + "': " + item +
                                          (pcr > kMaxPcr ? " is above 23" : " appears twice"));
    }
    start = end + 1;
  }
  return std::vector<std::uint32_t>(pcrs.begin(), pcrs.end());
}

}  // namespace envcrypt
