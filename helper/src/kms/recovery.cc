#include "kms/recovery.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <memory>

#include "util/openssl_ptr.h"
#include "util/secret_io.h"

namespace envcrypt {
namespace {

constexpr std::string_view kAadLabel = "envcrypt-recovery-v1";
constexpr std::string_view kHkdfInfo = "envcrypt-recovery-v1 X25519-HKDF-SHA256-AES-256-GCM";

using ossl::Bio;
using ossl::Kdf;
using ossl::KdfCtx;
using ossl::Pkey;
using ossl::PkeyCtx;

// PEM's passphrase callback: there is none.  Without it OpenSSL would
// prompt on the terminal for an encrypted key; this way such a key is
// refused like any other key the helper cannot read.
int no_passphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

Error crypto_failure(std::string_view what) {
  ERR_clear_error();
  return {ErrorCode::kInternal, std::string(what) + " failed"};
}

Result<RecoveryPublicKey> describe_public(EVP_PKEY* key) {
  RecoveryPublicKey out;
  std::size_t length = out.raw.size();
  if (EVP_PKEY_get_raw_public_key(key, out.raw.data(), &length) != 1 || length != out.raw.size()) {
    return crypto_failure("X25519 public key export");
  }
  unsigned char* der = nullptr;
  const int der_length = i2d_PUBKEY(key, &der);
  if (der_length <= 0) {
    return crypto_failure("X25519 public key encoding");
  }
  out.id = sha256(ByteView(der, static_cast<std::size_t>(der_length)));
  OPENSSL_free(der);
  return out;
}

Result<Pkey> load_private(const SecretBytes& pem) {
  if (pem.size() > kMaxRecoveryKeyFileSize) {
    return Error(ErrorCode::kUsage, "not a recovery private key: larger than a PEM key file");
  }
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Pkey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr);
  ERR_clear_error();
  if (!key) {
    return Error(ErrorCode::kUsage,
                 "not a recovery private key: no unencrypted PEM private key in it");
  }
  if (EVP_PKEY_is_a(key.get(), "X25519") != 1) {
    return Error(ErrorCode::kUsage, "not a recovery private key: not an X25519 key");
  }
  return key;
}

Result<Pkey> x25519_public(ByteView raw) {
  Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, raw.data(), raw.size()));
  if (!key) {
    return crypto_failure("X25519 public key import");
  }
  return key;
}

// X25519(own, peer) into locked memory.  OpenSSL refuses a peer key whose
// result is all zeros (a small-order point): ErrorCode::kCorrupt.
Result<SecretBytes> x25519_shared(EVP_PKEY* own, EVP_PKEY* peer) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) {
    return crypto_failure("X25519 init");
  }
  if (EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kCorrupt, "its ephemeral key is not a usable X25519 key");
  }
  SecretBytes shared(kX25519KeySize);
  std::size_t length = shared.size();
  if (EVP_PKEY_derive(ctx.get(), shared.data(), &length) != 1 || length != shared.size()) {
    ERR_clear_error();
    return Error(ErrorCode::kCorrupt, "its ephemeral key is not a usable X25519 key");
  }
  return shared;
}

Result<SecretBytes> hkdf_wrapping_key(const SecretBytes& shared, const X25519PublicKey& ephemeral,
                                      const X25519PublicKey& recipient) {
  Bytes salt(ephemeral.begin(), ephemeral.end());
  salt.insert(salt.end(), recipient.begin(), recipient.end());
  Bytes info(kHkdfInfo.begin(), kHkdfInfo.end());
  Kdf kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  KdfCtx ctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  if (!ctx) {
    return crypto_failure("HKDF-SHA256 fetch");
  }
  std::array<char, 8> digest = {'S', 'H', 'A', '2', '5', '6', '\0', '\0'};
  const std::array params = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(shared.data()), shared.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.data(), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  SecretBytes key(kAes256KeySize);
  if (EVP_KDF_derive(ctx.get(), key.data(), key.size(), params.data()) != 1) {
    return crypto_failure("HKDF-SHA256");
  }
  return key;
}

Bytes aad_for(const RecoveryKeyId& key_id, const X25519PublicKey& ephemeral,
              const EncryptionContext& context) {
  Bytes aad(kAadLabel.begin(), kAadLabel.end());
  aad.push_back(0);
  aad.insert(aad.end(), key_id.begin(), key_id.end());
  aad.insert(aad.end(), ephemeral.begin(), ephemeral.end());
  const Bytes canonical = canonical_context(context);
  aad.insert(aad.end(), canonical.begin(), canonical.end());
  return aad;
}

Result<std::string> read_small_file(const std::filesystem::path& path, SecretBytes* secret) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    return error_from_errno(ErrorCode::kNotFound, path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(ErrorCode::kUsage, path.string() + ": not a regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0 || size > kMaxRecoveryKeyFileSize) {
    ::close(fd);
    return Error(ErrorCode::kUsage, path.string() + ": " + std::to_string(size) +
                                        " bytes is not the size of a PEM key file");
  }
  auto bytes = read_secret(fd, size, path.string());
  ::close(fd);
  if (!bytes.ok()) {
    return bytes.error();
  }
  if (secret != nullptr) {
    *secret = std::move(bytes).value();
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size());
}

}  // namespace

Result<RecoveryPublicKey> parse_recovery_public_key(std::string_view pem) {
  if (pem.size() > kMaxRecoveryKeyFileSize) {
    return Error(ErrorCode::kUsage, "not a recovery public key: larger than a PEM key file");
  }
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Pkey key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr) : nullptr);
  ERR_clear_error();
  if (!key) {
    return Error(ErrorCode::kUsage, "not a recovery public key: no PEM public key in it");
  }
  if (EVP_PKEY_is_a(key.get(), "X25519") != 1) {
    return Error(ErrorCode::kUsage, "not a recovery public key: not an X25519 key");
  }
  return describe_public(key.get());
}

Result<RecoveryPrivateKey> parse_recovery_private_key(SecretBytes pem) {
  ENVCRYPT_ASSIGN_OR_RETURN(Pkey key, load_private(pem));
  ENVCRYPT_ASSIGN_OR_RETURN(RecoveryPublicKey public_key, describe_public(key.get()));
  return RecoveryPrivateKey{std::move(pem), public_key};
}

Result<RecoveryPublicKey> read_recovery_public_key(const std::filesystem::path& path) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::string pem, read_small_file(path, nullptr));
  auto key = parse_recovery_public_key(pem);
  if (!key.ok()) {
    return key.error().with_context(path.string());
  }
  return key;
}

Result<RecoveryPrivateKey> read_recovery_private_key(const std::filesystem::path& path) {
  SecretBytes pem;
  ENVCRYPT_TRY(read_small_file(path, &pem));
  auto key = parse_recovery_private_key(std::move(pem));
  if (!key.ok()) {
    return key.error().with_context(path.string());
  }
  return key;
}

Result<RecoveryKeyPair> generate_recovery_key_pair() {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  Bio private_bio(BIO_new(BIO_s_secmem()));
  Bio public_bio(BIO_new(BIO_s_mem()));
  if (!key || !private_bio || !public_bio ||
      PEM_write_bio_PrivateKey(private_bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                               nullptr) != 1 ||
      PEM_write_bio_PUBKEY(public_bio.get(), key.get()) != 1) {
    return crypto_failure("X25519 key generation");
  }
  char* data = nullptr;
  const long private_length = BIO_get_mem_data(private_bio.get(), &data);
  RecoveryKeyPair pair;
  pair.private_pem = SecretBytes(reinterpret_cast<const std::uint8_t*>(data),
                                 static_cast<std::size_t>(private_length));
  const long public_length = BIO_get_mem_data(public_bio.get(), &data);
  pair.public_pem.assign(data, static_cast<std::size_t>(public_length));
  return pair;
}

std::string short_key_id(const RecoveryKeyId& id) { return to_hex(id).substr(0, 16); }

Result<RecoveryWrap> wrap_for_recovery(const RecoveryPublicKey& key, const SecretBytes& data_key,
                                       const EncryptionContext& context) {
  Pkey ephemeral(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!ephemeral) {
    return crypto_failure("X25519 ephemeral key generation");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(RecoveryPublicKey ephemeral_public, describe_public(ephemeral.get()));
  ENVCRYPT_ASSIGN_OR_RETURN(Pkey recipient, x25519_public(key.raw));
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes shared, x25519_shared(ephemeral.get(), recipient.get()));
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes wrapping_key,
                            hkdf_wrapping_key(shared, ephemeral_public.raw, key.raw));

  RecoveryWrap wrap;
  wrap.key_id = key.id;
  wrap.context_digest = sha256(canonical_context(context));
  wrap.ephemeral_key = ephemeral_public.raw;
  ENVCRYPT_ASSIGN_OR_RETURN(GcmSealed sealed,
                            aes256_gcm_seal(wrapping_key.span(), data_key.span(),
                                            aad_for(wrap.key_id, wrap.ephemeral_key, context)));
  wrap.nonce = std::move(sealed.nonce);
  wrap.tag = std::move(sealed.tag);
  wrap.ciphertext = std::move(sealed.ciphertext);
  return wrap;
}

Result<SecretBytes> unwrap_recovery(const RecoveryPrivateKey& key, const RecoveryWrap& wrap,
                                    const EncryptionContext& context) {
  if (CRYPTO_memcmp(key.public_key.id.data(), wrap.key_id.data(), wrap.key_id.size()) != 0) {
    return Error(ErrorCode::kDenied, "wrong recovery key: the recovery wrap is for key " +
                                         short_key_id(wrap.key_id) + ", not " +
                                         short_key_id(key.public_key.id));
  }
  const Sha256Digest context_digest = sha256(canonical_context(context));
  if (CRYPTO_memcmp(context_digest.data(), wrap.context_digest.data(), context_digest.size()) !=
      0) {
    return Error(ErrorCode::kCorrupt,
                 "the recovery wrap was made for another disk (its encryption context is not "
                 "this disk's uuid and geometry)");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(Pkey own, load_private(key.pem));
  ENVCRYPT_ASSIGN_OR_RETURN(Pkey peer, x25519_public(wrap.ephemeral_key));
  auto shared = x25519_shared(own.get(), peer.get());
  if (!shared.ok()) {
    return shared.error().with_context("the recovery wrap is damaged");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes wrapping_key,
                            hkdf_wrapping_key(*shared, wrap.ephemeral_key, key.public_key.raw));
  auto data_key = aes256_gcm_open(wrapping_key.span(), wrap.nonce, wrap.ciphertext, wrap.tag,
                                  aad_for(wrap.key_id, wrap.ephemeral_key, context));
  if (!data_key.ok() && data_key.error().code() == ErrorCode::kCorrupt) {
    return Error(ErrorCode::kCorrupt,
                 "the recovery wrap failed authentication (its ciphertext, tag, nonce or "
                 "ephemeral key was altered)");
  }
  return data_key;
}

}  // namespace envcrypt
