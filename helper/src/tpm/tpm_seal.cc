#include "tpm/tpm_seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "tpm/tss_marshal.h"
#include "util/crypto.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

using tss::marshal;
using tss::tss_text;
using tss::unmarshal;

constexpr std::size_t kPcrSelectBytes = 3;  // 24 PCRs

// The TPM's own response code without the session/parameter number of
// format-one codes, or 0 when `rc` comes from a software layer.
TSS2_RC tpm_base_code(TSS2_RC rc) {
  if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) {
    return 0;
  }
  return (rc & TPM2_RC_FMT1) != 0 ? (rc & (TPM2_RC_FMT1 | 0x3FU)) : (rc & 0xFFFU);
}

// Owns the TCTI and ESAPI contexts of one conversation with the TPM.
class Tpm {
 public:
  static Result<Tpm> open(const std::string& tcti) {
    ENVCRYPT_TRY(check_device(tcti));
    // tpm2-tss logs its own view of every failure to stderr; ours is the
    // one line the caller prints.  TSS2_LOG set by the user wins.
    (void)::setenv("TSS2_LOG", "all+NONE", 0);
    Tpm tpm;
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti.c_str(), &tpm.tcti_);
    if (rc != TSS2_RC_SUCCESS) {
      return Error(ErrorCode::kNotFound, "no TPM at " + tcti + ": " + tss_text(rc));
    }
    rc = Esys_Initialize(&tpm.esys_, tpm.tcti_, nullptr);
    if (rc != TSS2_RC_SUCCESS) {
      return Error(ErrorCode::kIo, "TPM at " + tcti + ": " + tss_text(rc));
    }
    tpm.name_ = tcti;
    return tpm;
  }

  Tpm(Tpm&& other) noexcept
      : esys_(std::exchange(other.esys_, nullptr)),
        tcti_(std::exchange(other.tcti_, nullptr)),
        name_(std::move(other.name_)) {}
  Tpm& operator=(Tpm&&) = delete;
  Tpm(const Tpm&) = delete;
  Tpm& operator=(const Tpm&) = delete;
  ~Tpm() {
    if (esys_ != nullptr) {
      Esys_Finalize(&esys_);
    }
    if (tcti_ != nullptr) {
      Tss2_TctiLdr_Finalize(&tcti_);
    }
  }

  [[nodiscard]] ESYS_CONTEXT* esys() const { return esys_; }

  // "TPM at <tcti>: <what>: <decoded rc>".
  [[nodiscard]] Error failure(ErrorCode code, const std::string& what, TSS2_RC rc) const {
    return {code, "TPM at " + name_ + ": " + what + ": " + tss_text(rc)};
  }

 private:
  Tpm() = default;

  // A missing device node is the usual "no TPM": say so before the TCTI
  // loader's generic failure.
  static Status check_device(const std::string& tcti) {
    const std::string prefix = "device:";
    if (tcti.rfind(prefix, 0) != 0) {
      return OkStatus();
    }
    const std::string path = tcti.substr(prefix.size());
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return Error(ErrorCode::kNotFound, "no TPM: " + path + " does not exist");
    }
    return OkStatus();
  }

  ESYS_CONTEXT* esys_ = nullptr;
  TSS2_TCTI_CONTEXT* tcti_ = nullptr;
  std::string name_;
};

// Flushes a transient object or session when it goes out of scope.
class Transient {
 public:
  Transient(const Tpm& tpm, ESYS_TR handle) : esys_(tpm.esys()), handle_(handle) {}
  Transient(const Transient&) = delete;
  Transient& operator=(const Transient&) = delete;
  ~Transient() {
    if (handle_ != ESYS_TR_NONE) {
      (void)Esys_FlushContext(esys_, handle_);
    }
  }
  [[nodiscard]] ESYS_TR get() const { return handle_; }

 private:
  ESYS_CONTEXT* esys_;
  ESYS_TR handle_;
};

// Frees what ESAPI allocated for an output.
template <typename T>
struct EsysFree {
  void operator()(T* pointer) const { Esys_Free(pointer); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree<T>>;

// The owner hierarchy's storage primary key (TCG ECC P-256 storage
// template): the same key every time from the same TPM seed.
Result<ESYS_TR> create_storage_primary(const Tpm& tpm) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in_public{};
  TPMT_PUBLIC& area = in_public.publicArea;
  area.type = TPM2_ALG_ECC;
  area.nameAlg = TPM2_ALG_SHA256;
  area.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  area.parameters.eccDetail.symmetric.keyBits.aes = 128;
  area.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  area.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  area.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  area.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  TPM2B_DATA outside_info{};
  TPML_PCR_SELECTION creation_pcrs{};
  ESYS_TR primary = ESYS_TR_NONE;
  const TSS2_RC rc = Esys_CreatePrimary(
      tpm.esys(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
      &in_public, &outside_info, &creation_pcrs, &primary, nullptr, nullptr, nullptr, nullptr);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kIo,
                       "create the storage primary key (an owner password is not supported)", rc);
  }
  return primary;
}

// A session salted by `salt_key`, encrypting the first command parameter and
// the first response parameter with AES-128-CFB.
Result<ESYS_TR> start_encrypted_session(const Tpm& tpm, ESYS_TR salt_key, TPM2_SE type) {
  TPMT_SYM_DEF symmetric{};
  symmetric.algorithm = TPM2_ALG_AES;
  symmetric.keyBits.aes = 128;
  symmetric.mode.aes = TPM2_ALG_CFB;
  ESYS_TR session = ESYS_TR_NONE;
  TSS2_RC rc =
      Esys_StartAuthSession(tpm.esys(), salt_key, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            ESYS_TR_NONE, nullptr, type, &symmetric, TPM2_ALG_SHA256, &session);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kIo, "start a session", rc);
  }
  rc = Esys_TRSess_SetAttributes(
      tpm.esys(), session,
      TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT | TPMA_SESSION_CONTINUESESSION, 0xFF);
  if (rc != TSS2_RC_SUCCESS) {
    (void)Esys_FlushContext(tpm.esys(), session);
    return tpm.failure(ErrorCode::kIo, "set the session attributes", rc);
  }
  return session;
}

Result<ESYS_TR> start_trial_session(const Tpm& tpm) {
  TPMT_SYM_DEF symmetric{};
  symmetric.algorithm = TPM2_ALG_NULL;
  ESYS_TR session = ESYS_TR_NONE;
  const TSS2_RC rc = Esys_StartAuthSession(tpm.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, ESYS_TR_NONE, nullptr, TPM2_SE_TRIAL,
                                           &symmetric, TPM2_ALG_SHA256, &session);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kIo, "start a trial session", rc);
  }
  return session;
}

TPML_PCR_SELECTION pcr_selection(const std::vector<std::uint32_t>& pcrs) {
  TPML_PCR_SELECTION selection{};
  selection.count = 1;
  selection.pcrSelections[0].hash = TPM2_ALG_SHA256;
  selection.pcrSelections[0].sizeofSelect = kPcrSelectBytes;
  for (const std::uint32_t pcr : pcrs) {
    selection.pcrSelections[0].pcrSelect[pcr / 8] |= static_cast<BYTE>(1U << (pcr % 8));
  }
  return selection;
}

Result<std::vector<std::uint8_t>> read_pcr(const Tpm& tpm, std::uint32_t pcr) {
  const TPML_PCR_SELECTION selection = pcr_selection({pcr});
  UINT32 update_counter = 0;
  TPML_PCR_SELECTION* selection_out = nullptr;
  TPML_DIGEST* values = nullptr;
  const TSS2_RC rc = Esys_PCR_Read(tpm.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &selection,
                                   &update_counter, &selection_out, &values);
  const EsysPtr<TPML_PCR_SELECTION> selection_guard(selection_out);
  const EsysPtr<TPML_DIGEST> values_guard(values);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kIo, "read PCR " + std::to_string(pcr), rc);
  }
  if (values == nullptr || values->count != 1 || values->digests[0].size != 32) {
    return Error(ErrorCode::kNotFound,
                 "the TPM has no SHA-256 value for PCR " + std::to_string(pcr));
  }
  return std::vector<std::uint8_t>(values->digests[0].buffer, values->digests[0].buffer + 32);
}

Result<PcrValues> read_pcrs(const Tpm& tpm, const std::vector<std::uint32_t>& pcrs) {
  PcrValues values;
  for (const std::uint32_t pcr : pcrs) {
    ENVCRYPT_ASSIGN_OR_RETURN(values[pcr], read_pcr(tpm, pcr));
  }
  return values;
}

// PolicyPCR's pcrDigest: SHA-256 over the selected values, lowest PCR first.
TPM2B_DIGEST pcr_digest(const PcrValues& values) {
  TPM2B_DIGEST digest{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int size = 0;
  if (ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1) {
    for (const auto& [pcr, value] : values) {
      (void)EVP_DigestUpdate(ctx, value.data(), value.size());
    }
    if (EVP_DigestFinal_ex(ctx, digest.buffer, &size) != 1) {
      size = 0;
    }
  }
  EVP_MD_CTX_free(ctx);
  digest.size = static_cast<UINT16>(size);
  return digest;
}

// The object's auth value: SHA-256 of the PIN, so any PIN length fits.
TPM2B_AUTH pin_auth(const SecretBytes& pin) {
  TPM2B_AUTH auth{};
  unsigned int size = 0;
  if (EVP_Digest(pin.data(), pin.size(), auth.buffer, &size, EVP_sha256(), nullptr) == 1) {
    auth.size = static_cast<UINT16>(size);
  }
  return auth;
}

// Runs PolicyPCR (and PolicyAuthValue) in `session`.
Status apply_policy(const Tpm& tpm, ESYS_TR session, const TpmSealPolicy& policy,
                    const PcrValues& values) {
  if (!policy.pcrs.empty()) {
    const TPM2B_DIGEST digest = pcr_digest(values);
    const TPML_PCR_SELECTION selection = pcr_selection(policy.pcrs);
    const TSS2_RC rc = Esys_PolicyPCR(tpm.esys(), session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      &digest, &selection);
    if (rc != TSS2_RC_SUCCESS) {
      return tpm.failure(ErrorCode::kIo, "PolicyPCR", rc);
    }
  }
  if (policy.pin) {
    const TSS2_RC rc =
        Esys_PolicyAuthValue(tpm.esys(), session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE);
    if (rc != TSS2_RC_SUCCESS) {
      return tpm.failure(ErrorCode::kIo, "PolicyAuthValue", rc);
    }
  }
  return OkStatus();
}

Result<TPM2B_DIGEST> policy_digest(const Tpm& tpm, const TpmSealPolicy& policy,
                                   const PcrValues& values) {
  ENVCRYPT_ASSIGN_OR_RETURN(const ESYS_TR trial_handle, start_trial_session(tpm));
  const Transient trial(tpm, trial_handle);
  ENVCRYPT_TRY(apply_policy(tpm, trial.get(), policy, values));
  TPM2B_DIGEST* digest = nullptr;
  const TSS2_RC rc = Esys_PolicyGetDigest(tpm.esys(), trial.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                          ESYS_TR_NONE, &digest);
  const EsysPtr<TPM2B_DIGEST> guard(digest);
  if (rc != TSS2_RC_SUCCESS || digest == nullptr) {
    return tpm.failure(ErrorCode::kIo, "PolicyGetDigest", rc);
  }
  return *digest;
}

TPM2B_PUBLIC sealed_object_template(const TpmSealPolicy& policy, const TPM2B_DIGEST& auth_policy) {
  const bool has_policy = !policy.pcrs.empty() || policy.pin;
  TPM2B_PUBLIC in_public{};
  TPMT_PUBLIC& area = in_public.publicArea;
  area.type = TPM2_ALG_KEYEDHASH;
  area.nameAlg = TPM2_ALG_SHA256;
  area.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT;
  if (!has_policy) {
    area.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
  }
  if (!policy.pin) {
    // Nothing to guess without a PIN: lockout would only deny service.
    area.objectAttributes |= TPMA_OBJECT_NODA;
  }
  if (has_policy) {
    area.authPolicy = auth_policy;
  }
  area.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
  return in_public;
}

// Names every PCR whose value moved since sealing.
Status check_pcrs_unchanged(const TpmSealedBlob& blob, const PcrValues& now) {
  std::string changed;
  for (const auto& [pcr, value] : now) {
    const auto sealed = blob.pcr_values.find(pcr);
    if (sealed == blob.pcr_values.end() || sealed->second != value) {
      changed += (changed.empty() ? "" : ", ") + std::to_string(pcr);
    }
  }
  if (!changed.empty()) {
    return Error(ErrorCode::kDenied, "PCR " + changed +
                                         " (sha256) changed since the key was sealed: the TPM "
                                         "refuses to unseal it");
  }
  return OkStatus();
}

Error unseal_failure(const Tpm& tpm, TSS2_RC rc) {
  const TSS2_RC base = tpm_base_code(rc);
  if (base == TPM2_RC_AUTH_FAIL || base == TPM2_RC_BAD_AUTH) {
    return tpm.failure(ErrorCode::kDenied, "unseal: wrong PIN", rc);
  }
  if (base == TPM2_RC_LOCKOUT) {
    return tpm.failure(ErrorCode::kDenied,
                       "unseal: the TPM is in dictionary-attack lockout after wrong PINs", rc);
  }
  if (base == TPM2_RC_POLICY_FAIL) {
    return tpm.failure(ErrorCode::kDenied, "unseal: the TPM policy (PCRs or PIN) is not met", rc);
  }
  return tpm.failure(ErrorCode::kIo, "unseal", rc);
}

}  // namespace

Result<TpmSealedBlob> tpm_seal(const std::string& tcti, const SecretBytes& secret,
                               const TpmSealPolicy& policy, const SecretBytes& pin) {
  ENVCRYPT_TRY(check_seal_policy(policy));
  if (secret.empty() || secret.size() > TPM2_MAX_SYM_DATA) {
    return Error(ErrorCode::kInternal, "a sealed secret must have 1 to 128 bytes");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(Tpm tpm, Tpm::open(tcti));
  ENVCRYPT_ASSIGN_OR_RETURN(const ESYS_TR primary_handle, create_storage_primary(tpm));
  const Transient primary(tpm, primary_handle);
  TpmSealedBlob blob;
  blob.policy = policy;
  ENVCRYPT_ASSIGN_OR_RETURN(blob.pcr_values, read_pcrs(tpm, policy.pcrs));
  TPM2B_DIGEST auth_policy{};
  if (!policy.pcrs.empty() || policy.pin) {
    ENVCRYPT_ASSIGN_OR_RETURN(auth_policy, policy_digest(tpm, policy, blob.pcr_values));
  }
  const TPM2B_PUBLIC in_public = sealed_object_template(policy, auth_policy);
  TPM2B_SENSITIVE_CREATE sensitive{};
  sensitive.sensitive.data.size = static_cast<UINT16>(secret.size());
  std::memcpy(sensitive.sensitive.data.buffer, secret.data(), secret.size());
  if (policy.pin) {
    sensitive.sensitive.userAuth = pin_auth(pin);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const ESYS_TR session_handle,
                            start_encrypted_session(tpm, primary.get(), TPM2_SE_HMAC));
  const Transient session(tpm, session_handle);
  TPM2B_DATA outside_info{};
  TPML_PCR_SELECTION creation_pcrs{};
  TPM2B_PRIVATE* out_private = nullptr;
  TPM2B_PUBLIC* out_public = nullptr;
  const TSS2_RC rc = Esys_Create(
      tpm.esys(), primary.get(), session.get(), ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &in_public,
      &outside_info, &creation_pcrs, &out_private, &out_public, nullptr, nullptr, nullptr);
  OPENSSL_cleanse(&sensitive, sizeof(sensitive));
  const EsysPtr<TPM2B_PRIVATE> private_guard(out_private);
  const EsysPtr<TPM2B_PUBLIC> public_guard(out_public);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kIo, "create the sealed object", rc);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(blob.public_area,
                            marshal(*out_public, Tss2_MU_TPM2B_PUBLIC_Marshal, "public area"));
  ENVCRYPT_ASSIGN_OR_RETURN(blob.private_area,
                            marshal(*out_private, Tss2_MU_TPM2B_PRIVATE_Marshal, "private area"));
  return blob;
}

Result<SecretBytes> tpm_unseal(const std::string& tcti, const TpmSealedBlob& blob,
                               const SecretBytes& pin) {
  ENVCRYPT_TRY(check_seal_policy(blob.policy));
  ENVCRYPT_ASSIGN_OR_RETURN(
      const TPM2B_PUBLIC in_public,
      unmarshal<TPM2B_PUBLIC>(blob.public_area, Tss2_MU_TPM2B_PUBLIC_Unmarshal, "public area"));
  ENVCRYPT_ASSIGN_OR_RETURN(
      const TPM2B_PRIVATE in_private,
      unmarshal<TPM2B_PRIVATE>(blob.private_area, Tss2_MU_TPM2B_PRIVATE_Unmarshal, "private area"));
  ENVCRYPT_ASSIGN_OR_RETURN(Tpm tpm, Tpm::open(tcti));
  ENVCRYPT_ASSIGN_OR_RETURN(const PcrValues now, read_pcrs(tpm, blob.policy.pcrs));
  ENVCRYPT_TRY(check_pcrs_unchanged(blob, now));
  ENVCRYPT_ASSIGN_OR_RETURN(const ESYS_TR primary_handle, create_storage_primary(tpm));
  const Transient primary(tpm, primary_handle);
  ESYS_TR object_handle = ESYS_TR_NONE;
  TSS2_RC rc = Esys_Load(tpm.esys(), primary.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                         &in_private, &in_public, &object_handle);
  if (rc != TSS2_RC_SUCCESS) {
    return tpm.failure(ErrorCode::kCorrupt,
                       "the sealed key does not load (sealed on another TPM, the TPM was "
                       "cleared, or the file is damaged)",
                       rc);
  }
  const Transient object(tpm, object_handle);
  const bool has_policy = !blob.policy.pcrs.empty() || blob.policy.pin;
  ENVCRYPT_ASSIGN_OR_RETURN(
      const ESYS_TR session_handle,
      start_encrypted_session(tpm, primary.get(), has_policy ? TPM2_SE_POLICY : TPM2_SE_HMAC));
  const Transient session(tpm, session_handle);
  if (has_policy) {
    ENVCRYPT_TRY(apply_policy(tpm, session.get(), blob.policy, now));
  }
  if (blob.policy.pin) {
    const TPM2B_AUTH auth = pin_auth(pin);
    rc = Esys_TR_SetAuth(tpm.esys(), object.get(), &auth);
    if (rc != TSS2_RC_SUCCESS) {
      return tpm.failure(ErrorCode::kIo, "set the PIN", rc);
    }
  }
  TPM2B_SENSITIVE_DATA* out = nullptr;
  rc = Esys_Unseal(tpm.esys(), object.get(), session.get(), ESYS_TR_NONE, ESYS_TR_NONE, &out);
  if (rc != TSS2_RC_SUCCESS) {
    return unseal_failure(tpm, rc);
  }
  SecretBytes secret(out->buffer, out->size);
  OPENSSL_cleanse(out, sizeof(*out));
  Esys_Free(out);
  return secret;
}

}  // namespace envcrypt
