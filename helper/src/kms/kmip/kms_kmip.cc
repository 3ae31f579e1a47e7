#include "kms/kmip/kms_kmip.h"

#include <algorithm>
#include <ctime>
#include <string>
#include <utility>

#include "kms/kmip/kmip_client.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

using kmip::State;

constexpr std::string_view kScheme = "kmip://";
constexpr std::string_view kAliasPrefix = "alias/";
constexpr std::uint32_t kOnlyVersion = 1;  // KMIP keys are not rotated in place

const std::vector<std::string> kDescribedAttributes = {"State", "Name", "Initial Date"};

KeyState key_state(State state) {
  switch (state) {
    case State::kActive:
      return KeyState::kEnabled;
    case State::kDestroyed:
    case State::kDestroyedCompromised:
      return KeyState::kPendingDeletion;
    case State::kPreActive:
    case State::kDeactivated:
    case State::kCompromised:
      break;
  }
  return KeyState::kDisabled;
}

// A KMIP server offers envelope operations and key administration; aliases,
// lifecycle, BYOK, grants and audit it does not (unsupported() says why).
class KmipKms final : public KmsClient, public KeyAdministration {
 public:
  explicit KmipKms(const KmipEndpoint& endpoint) : endpoint_(endpoint), client_(endpoint) {
    for (const KmipServer& server : endpoint.servers()) {
      authorities_.push_back(
          kmip::endpoint_name({server.host, server.port, {}, {}, {}}).substr(kScheme.size()));
    }
  }

  [[nodiscard]] bool supports(std::string_view uri) const override {
    return uid_from_uri(uri).has_value();
  }

  KeyAdministration* administration() override { return this; }

  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& context, const CallContext& call) override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, resolve(keyref, call));
    ENVCRYPT_ASSIGN_OR_RETURN(const Bytes nonce, random_bytes(kGcmNonceSize));
    const Bytes aad = canonical_context(context);
    ENVCRYPT_ASSIGN_OR_RETURN(kmip::Ciphertext sealed,
                              client_.encrypt(uid, plaintext.span(), {nonce, aad}, call));
    if (sealed.data.size() != plaintext.size()) {
      return Error(ErrorCode::kKmsUnreachable,
                   uri_for(uid) + ": KMIP Encrypt returned " + std::to_string(sealed.data.size()) +
                       " bytes of ciphertext for " + std::to_string(plaintext.size()) +
                       " bytes of plaintext");
    }
    auto used_nonce = kmip::wrap_nonce(nonce, sealed);
    if (!used_nonce.ok()) {
      return used_nonce.error().with_context(uri_for(uid));
    }
    WrappedKey wrapped;
    wrapped.cmk_uri = uri_for(uid);
    wrapped.cmk_version = kOnlyVersion;
    wrapped.nonce = std::move(used_nonce).value();
    wrapped.tag = std::move(sealed.tag);
    wrapped.ciphertext = std::move(sealed.data);
    return wrapped;
  }

  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& context,
                                 const CallContext& call) override {
    const auto uid = uid_from_uri(wrapped.cmk_uri);
    if (!uid.has_value()) {
      return Error(ErrorCode::kUsage,
                   wrapped.cmk_uri + ": not a key of KMIP server " + client_.endpoint());
    }
    if (wrapped.cmk_version != kOnlyVersion || wrapped.nonce.size() != kGcmNonceSize ||
        wrapped.tag.size() != kGcmTagSize) {
      return Error(ErrorCode::kCorrupt, wrapped.cmk_uri + ": wrapped key has version " +
                                            std::to_string(wrapped.cmk_version) + ", a " +
                                            std::to_string(wrapped.nonce.size()) +
                                            "-byte nonce and a " +
                                            std::to_string(wrapped.tag.size()) +
                                            "-byte tag; a KMIP wrap has version 1, 12 and 16");
    }
    const Bytes aad = canonical_context(context);
    ENVCRYPT_ASSIGN_OR_RETURN(
        SecretBytes plaintext,
        client_.decrypt(*uid, wrapped.ciphertext, {wrapped.nonce, aad}, wrapped.tag, call));
    if (plaintext.size() != wrapped.ciphertext.size()) {
      return Error(ErrorCode::kKmsUnreachable,
                   wrapped.cmk_uri + ": KMIP Decrypt returned " + std::to_string(plaintext.size()) +
                       " bytes for " + std::to_string(wrapped.ciphertext.size()) +
                       " bytes of ciphertext");
    }
    return plaintext;
  }

  Result<KeyInfo> create_key(const CreateKeyRequest& request) override {
    if (request.origin == KeyOrigin::kExternal) {
      return unsupported_because("create-key --origin EXTERNAL",
                                 "key material import is not offered over KMIP");
    }
    if (request.rotation_interval_days.has_value()) {
      return unsupported_because("automatic key rotation",
                                 "KMIP keys have one version; create a new key and rewrap");
    }
    // The Name attribute carries the alias; without one, the description,
    // so the key can still be found by Locate.
    std::optional<std::string> name = request.alias;
    if (!name.has_value() && !request.description.empty()) {
      name = request.description;
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, client_.create_aes256(name));
    ENVCRYPT_TRY(client_.activate(uid));
    ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo info, describe_uid(uid));
    info.description = request.description;
    return info;
  }

  Result<KeyInfo> describe_key(std::string_view keyref) override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, resolve(keyref));
    return describe_uid(uid);
  }

  // A KMIP key has one version and no owner this host knows of.
  Result<KeyDetails> describe_key_details(std::string_view keyref) override {
    ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo info, describe_key(keyref));
    KeyDetails details;
    details.last_rotated_at = info.created_at;
    details.versions.push_back({kOnlyVersion, info.created_at});
    details.info = std::move(info);
    return details;
  }

  Result<std::vector<KeyInfo>> list_keys() override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::vector<std::string> uids, client_.locate(std::nullopt));
    std::vector<KeyInfo> keys;
    for (const std::string& uid : uids) {
      ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo info, describe_uid(uid));
      keys.push_back(std::move(info));
    }
    return keys;
  }

  Status enable_key(std::string_view keyref) override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, resolve(keyref));
    ENVCRYPT_ASSIGN_OR_RETURN(const State state, state_of(uid));
    if (state == State::kActive) {
      return OkStatus();
    }
    if (state == State::kPreActive) {
      return client_.activate(uid);
    }
    return unsupported_because("enable-key",
                               uri_for(uid) + " is " + std::string(kmip::to_string(state)) +
                                   ", and KMIP never returns a revoked key to Active");
  }

  Status disable_key(std::string_view keyref) override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, resolve(keyref));
    ENVCRYPT_ASSIGN_OR_RETURN(const State state, state_of(uid));
    // Only an Active key needs revoking; any other state already refuses
    // Encrypt and Decrypt, so disabling it again succeeds without a change.
    return state == State::kActive ? client_.revoke(uid) : OkStatus();
  }

  Result<KeyInfo> schedule_key_deletion(std::string_view keyref,
                                        std::uint32_t pending_window_days) override {
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string uid, resolve(keyref));
    ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo info, describe_uid(uid));
    // KMIP has no deletion window: Destroy is immediate and final.  Asking
    // for a disable-key first makes the operator take that step knowingly;
    // a revoked key could never be used again anyway.
    if (info.state == KeyState::kEnabled) {
      return unsupported_because(
          "schedule-key-deletion with a " + std::to_string(pending_window_days) + "-day window",
          "KMIP has no pending-deletion window and Destroy is immediate; run disable-key first "
          "(KMIP Revoke), then schedule-key-deletion destroys the key at once");
    }
    ENVCRYPT_TRY(client_.destroy(uid));
    info.state = KeyState::kPendingDeletion;
    info.deletion_date = static_cast<std::int64_t>(std::time(nullptr));
    return info;
  }

  [[nodiscard]] std::optional<std::string> immediate_deletion() const override {
    return "KMIP server " + client_.endpoint() +
           " has no pending-deletion window: schedule-key-deletion is KMIP Destroy, immediate "
           "and final";
  }

  Status cancel_key_deletion(std::string_view keyref) override {
    return unsupported_because("cancel-key-deletion on " + std::string(keyref),
                               "KMIP Destroy is immediate, so there is no deletion to cancel");
  }

  [[nodiscard]] Error unsupported(std::string_view operation) const override {
    if (operation.ends_with("alias") || operation.ends_with("aliases")) {
      return unsupported_because(operation,
                                 "KMIP keys carry their Name from create-key --alias; aliases "
                                 "cannot be added, moved or listed separately");
    }
    // The lifecycle operations of kms.h: PyKMIP 0.10 serves no ReKey, no
    // import under a wrapping key, no grants and no audit trail.  rewrap
    // works (KmsClient::reencrypt: Decrypt, then Encrypt).
    return unsupported_because(operation, "PyKMIP 0.10 offers no such operation");
  }

 private:
  [[nodiscard]] Error unsupported_because(std::string_view operation,
                                          const std::string& why) const {
    return {ErrorCode::kUsage, std::string(operation) + ": not supported by KMIP server " +
                                   client_.endpoint() + ": " + why};
  }

  [[nodiscard]] std::string uri_for(std::string_view uid) const {
    return client_.endpoint() + "/" + std::string(uid);
  }

  // The uid of kmip://<host>:<port>/<uid> or kmip://<endpoint name>/<uid>
  // when it names this endpoint.
  [[nodiscard]] std::optional<std::string> uid_from_uri(std::string_view uri) const {
    if (!uri.starts_with(kScheme)) {
      return std::nullopt;
    }
    uri.remove_prefix(kScheme.size());
    const auto slash = uri.find('/');
    if (slash == std::string_view::npos || slash + 1 == uri.size()) {
      return std::nullopt;
    }
    const std::string_view authority = uri.substr(0, slash);
    // Any server of the endpoint: they hold the same keys.
    if (authority != endpoint_.name &&
        std::find(authorities_.begin(), authorities_.end(), authority) == authorities_.end()) {
      return std::nullopt;
    }
    const std::string_view uid = uri.substr(slash + 1);
    if (uid.find('/') != std::string_view::npos) {
      return std::nullopt;
    }
    return std::string(uid);
  }

  // A key reference: a kmip:// URI of this endpoint, alias/<Name>, or a
  // bare KMIP unique identifier.
  Result<std::string> resolve(std::string_view keyref, const CallContext& call = {}) {
    if (keyref.starts_with(kScheme)) {
      auto uid = uid_from_uri(keyref);
      if (!uid.has_value()) {
        return Error(ErrorCode::kUsage, std::string(keyref) + ": not a key of KMIP server " +
                                            client_.endpoint() + " (expected " +
                                            client_.endpoint() + "/<uid>)");
      }
      return *uid;
    }
    if (keyref.starts_with(kAliasPrefix)) {
      const std::string name(keyref.substr(kAliasPrefix.size()));
      ENVCRYPT_ASSIGN_OR_RETURN(const std::vector<std::string> uids, client_.locate(name, call));
      if (uids.empty()) {
        return Error(ErrorCode::kNotFound, std::string(keyref) + ": no key named " + name +
                                               " on KMIP server " + client_.endpoint());
      }
      if (uids.size() > 1) {
        return Error(ErrorCode::kConflict,
                     std::string(keyref) + ": " + std::to_string(uids.size()) + " keys are named " +
                         name + " on KMIP server " + client_.endpoint() + "; use the key's URI");
      }
      return uids.front();
    }
    if (keyref.empty() || keyref.find("://") != std::string_view::npos) {
      return Error(ErrorCode::kUsage, "'" + std::string(keyref) +
                                          "': not a key reference for KMIP server " +
                                          client_.endpoint());
    }
    return std::string(keyref);
  }

  Result<State> state_of(std::string_view uid) {
    ENVCRYPT_ASSIGN_OR_RETURN(const kmip::Attributes attributes,
                              client_.get_attributes(uid, {"State"}));
    const kmip::Ttlv* state = attributes.first("State");
    if (state == nullptr || state->type() != kmip::ItemType::kEnumeration) {
      return Error(ErrorCode::kKmsUnreachable,
                   uri_for(uid) + ": malformed KMIP response: no State attribute");
    }
    return static_cast<State>(state->number());
  }

  Result<KeyInfo> describe_uid(std::string_view uid) {
    ENVCRYPT_ASSIGN_OR_RETURN(const kmip::Attributes attributes,
                              client_.get_attributes(uid, kDescribedAttributes));
    KeyInfo info;
    info.key_id = std::string(uid);
    info.uri = uri_for(uid);
    info.origin = KeyOrigin::kKms;
    info.primary_version = kOnlyVersion;
    info.version_count = 1;
    const kmip::Ttlv* state = attributes.first("State");
    if (state == nullptr || state->type() != kmip::ItemType::kEnumeration) {
      return Error(ErrorCode::kKmsUnreachable,
                   info.uri + ": malformed KMIP response: no State attribute");
    }
    info.state = key_state(static_cast<State>(state->number()));
    for (const kmip::Ttlv* name : attributes.all("Name")) {
      if (const kmip::Ttlv* value = name->find(kmip::tag::kNameValue);
          value != nullptr && value->type() == kmip::ItemType::kTextString) {
        info.aliases.emplace_back(value->text_value());
      }
    }
    if (const kmip::Ttlv* created = attributes.first("Initial Date");
        created != nullptr && created->type() == kmip::ItemType::kDateTime) {
      info.created_at = created->number();
    }
    return info;
  }

  KmipEndpoint endpoint_;
  kmip::KmipClient client_;
  std::vector<std::string> authorities_;  // host:port of each server
};

}  // namespace

Result<std::unique_ptr<KmsClient>> open_kmip_kms(const KmipEndpoint& endpoint) {
  if (endpoint.host.empty()) {
    return Error(ErrorCode::kUsage, "KMIP endpoint " + endpoint.name + ": no host configured");
  }
  if (endpoint.timeout_ms == 0) {
    return Error(ErrorCode::kUsage, "KMIP endpoint " + endpoint.name + ": timeout_ms must be > 0");
  }
  return std::unique_ptr<KmsClient>(std::make_unique<KmipKms>(endpoint));
}

}  // namespace envcrypt
