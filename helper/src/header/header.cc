#include "header/header.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <limits>

#include "util/crypto.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

constexpr std::string_view kKcvLabel = "envcrypt-kcv-v1";
constexpr std::size_t kChecksumOffset = offsetof(envcrypt_header, checksum);

// Field offsets come from the uapi struct, so the layout is written once.
constexpr std::size_t kGeometry = offsetof(envcrypt_header, geometry);
constexpr std::size_t kEnvelope = offsetof(envcrypt_header, envelope);
constexpr std::size_t kRecovery = offsetof(envcrypt_header, recovery);

void put_le(HeaderBytes& out, std::size_t offset, std::uint64_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) {
    out[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

std::uint64_t get_le(std::span<const std::uint8_t> in, std::size_t offset, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) {
    value |= static_cast<std::uint64_t>(in[offset + i]) << (8 * i);
  }
  return value;
}

void put_bytes(HeaderBytes& out, std::size_t offset, std::span<const std::uint8_t> bytes) {
  std::memcpy(out.data() + offset, bytes.data(), bytes.size());
}

void put_string(HeaderBytes& out, std::size_t offset, std::string_view text) {
  std::memcpy(out.data() + offset, text.data(), text.size());
}

// A NUL-padded string field; it may fill the field without a NUL.
std::string get_string(std::span<const std::uint8_t> in, std::size_t offset, std::size_t width) {
  const char* begin = reinterpret_cast<const char*>(in.data() + offset);
  return {begin, strnlen(begin, width)};
}

std::string hex_byte(unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  return {kHex[c >> 4], kHex[c & 0xf]};
}

std::vector<std::uint8_t> get_bytes(std::span<const std::uint8_t> in, std::size_t offset,
                                    std::size_t size) {
  return {in.begin() + static_cast<std::ptrdiff_t>(offset),
          in.begin() + static_cast<std::ptrdiff_t>(offset + size)};
}

Sha256Digest checksum_of(std::span<const std::uint8_t> copy) {
  return sha256(copy.first(kChecksumOffset));
}

Error invalid(const std::string& why) { return {ErrorCode::kCorrupt, why}; }

// The characters of a URI (RFC 3986: unreserved, reserved and '%'): no
// whitespace, controls, quotes or backslashes can reach a terminal, a log or
// a udev property from a header.
bool is_uri_char(unsigned char c) {
  return std::isalnum(c) != 0 ||
         std::string_view("-._~:/?#[]@!$&'()*+,;=%").find(static_cast<char>(c)) !=
             std::string_view::npos;
}

Status check_cmk_uri(const std::string& uri) {
  if (uri.empty() || uri.size() > ENVCRYPT_CMK_URI_LEN) {
    return invalid("CMK URI empty or longer than " + std::to_string(ENVCRYPT_CMK_URI_LEN));
  }
  for (std::size_t i = 0; i < uri.size(); ++i) {
    const auto c = static_cast<unsigned char>(uri[i]);
    if (!is_uri_char(c)) {
      return invalid("CMK URI holds byte 0x" + hex_byte(c) + " at offset " + std::to_string(i) +
                     " (not a URI character)");
    }
  }
  if (uri.find("://") == std::string::npos) {
    return invalid("CMK URI has no scheme");
  }
  return OkStatus();
}

// Labels are printable ASCII, so they can be shown anywhere unescaped.
Status check_label(const std::string& label) {
  if (label.size() > ENVCRYPT_LABEL_LEN) {
    return Error(ErrorCode::kUsage,
                 "label longer than " + std::to_string(ENVCRYPT_LABEL_LEN) + " bytes");
  }
  for (std::size_t i = 0; i < label.size(); ++i) {
    const auto c = static_cast<unsigned char>(label[i]);
    if (c < 0x20 || c > 0x7e) {
      return Error(ErrorCode::kUsage, "label holds byte 0x" + hex_byte(c) + " at offset " +
                                          std::to_string(i) + " (printable ASCII only)");
    }
  }
  return OkStatus();
}

Status check_geometry(const Geometry& g) {
  if (g.cipher != ENVCRYPT_CIPHER_DEFAULT) {
    return invalid("unsupported cipher '" + printable(g.cipher) +
                   "' (only " ENVCRYPT_CIPHER_DEFAULT ")");
  }
  if (g.sector_size != 512 && g.sector_size != 4096) {
    return invalid("sector size " + std::to_string(g.sector_size) + " is not 512 or 4096");
  }
  if (g.key_size != kDataKeySize) {
    return invalid("key size " + std::to_string(g.key_size) + " is not 64 bytes");
  }
  if (g.data_offset % kDataAlign != 0) {
    return invalid("data offset " + std::to_string(g.data_offset) + " is not 1 MiB aligned");
  }
  if (g.data_size % g.sector_size != 0) {
    return invalid("data size " + std::to_string(g.data_size) + " is not a multiple of the " +
                   std::to_string(g.sector_size) + "-byte sector size");
  }
  if (g.data_size > std::numeric_limits<std::uint64_t>::max() - g.data_offset) {
    return invalid("data offset " + std::to_string(g.data_offset) + " plus data size " +
                   std::to_string(g.data_size) + " overflows 64 bits");
  }
  return OkStatus();
}

// Bytes the format leaves unused (string padding, reserved and pad fields,
// the tail of the wrapped-key field) must be zero: a copy then has exactly
// one encoding, so nothing can hide in it and re-encoding a decoded header
// reproduces it byte for byte.  Returns what is not zero, or "".
std::string check_unused_bytes(std::span<const std::uint8_t> in, std::uint64_t wrapped_len,
                               bool has_recovery, std::uint64_t recovery_len) {
  struct Span {
    const char* what;
    std::size_t offset;
    std::size_t size;
  };
  auto after_string = [&in](const char* what, std::size_t offset, std::size_t width) {
    const auto* begin = reinterpret_cast<const char*>(in.data() + offset);
    const std::size_t used = strnlen(begin, width);
    return Span{what, offset + used, width - used};
  };
  const std::size_t key_field = kEnvelope + offsetof(envcrypt_envelope, wrapped_key);
  const std::size_t recovery_key_field = kRecovery + offsetof(envcrypt_recovery, wrapped_key);
  // Without a recovery wrap (version 1, or 2 with alg 0) the whole block is unused.
  const Span recovery_unused =
      has_recovery ? Span{"recovery wrapped key field", recovery_key_field + recovery_len,
                          ENVCRYPT_WRAPPED_KEY_MAX - recovery_len}
                   : Span{"recovery block", kRecovery, sizeof(envcrypt_recovery)};
  const std::array spans = {
      after_string("label", offsetof(envcrypt_header, label), ENVCRYPT_LABEL_LEN),
      after_string("cipher", kGeometry + offsetof(envcrypt_geometry, cipher), ENVCRYPT_CIPHER_LEN),
      Span{"geometry reserved", kGeometry + offsetof(envcrypt_geometry, reserved),
           sizeof(envcrypt_geometry::reserved)},
      after_string("CMK URI", kEnvelope + offsetof(envcrypt_envelope, cmk_uri),
                   ENVCRYPT_CMK_URI_LEN),
      Span{"envelope pad", kEnvelope + offsetof(envcrypt_envelope, pad),
           sizeof(envcrypt_envelope::pad)},
      Span{"wrapped key field", key_field + wrapped_len, ENVCRYPT_WRAPPED_KEY_MAX - wrapped_len},
      Span{"recovery pad", kRecovery + offsetof(envcrypt_recovery, pad),
           sizeof(envcrypt_recovery::pad)},
      recovery_unused,
      Span{"reserved", offsetof(envcrypt_header, reserved), sizeof(envcrypt_header::reserved)},
  };
  for (const Span& span : spans) {
    const auto bytes = in.subspan(span.offset, span.size);
    const auto nonzero = std::find_if(bytes.begin(), bytes.end(), [](auto b) { return b != 0; });
    if (nonzero != bytes.end()) {
      return std::string(span.what) + " has a non-zero unused byte at offset " +
             std::to_string(span.offset + static_cast<std::size_t>(nonzero - bytes.begin()));
    }
  }
  return "";
}

Status check_recovery_wrap(const RecoveryWrap& wrap, std::uint32_t key_size) {
  if (wrap.nonce.size() != ENVCRYPT_NONCE_LEN || wrap.tag.size() != ENVCRYPT_TAG_LEN) {
    return invalid("recovery wrap nonce or tag has the wrong length");
  }
  if (wrap.ciphertext.size() != key_size) {
    return invalid("recovery wrapped key is " + std::to_string(wrap.ciphertext.size()) +
                   " bytes, not " + std::to_string(key_size));
  }
  return OkStatus();
}

void put_recovery(HeaderBytes& out, const RecoveryWrap& wrap) {
  put_le(out, kRecovery + offsetof(envcrypt_recovery, alg), ENVCRYPT_RECOVERY_X25519_AES_256_GCM,
         4);
  put_le(out, kRecovery + offsetof(envcrypt_recovery, wrapped_key_len), wrap.ciphertext.size(), 4);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, key_id), wrap.key_id);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, context_digest), wrap.context_digest);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, ephemeral_key), wrap.ephemeral_key);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, nonce), wrap.nonce);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, tag), wrap.tag);
  put_bytes(out, kRecovery + offsetof(envcrypt_recovery, wrapped_key), wrap.ciphertext);
}

template <std::size_t N>
void get_array(std::span<const std::uint8_t> in, std::size_t offset,
               std::array<std::uint8_t, N>& out) {
  std::memcpy(out.data(), in.data() + offset, N);
}

// The recovery block of a version 2 copy: none (alg 0), or a wrap whose
// lengths are checked before anything is read past them.
Result<std::optional<RecoveryWrap>> get_recovery(std::span<const std::uint8_t> in,
                                                 std::uint32_t version) {
  if (version < ENVCRYPT_HDR_VERSION_RECOVERY) {
    return std::optional<RecoveryWrap>();
  }
  const auto alg = get_le(in, kRecovery + offsetof(envcrypt_recovery, alg), 4);
  if (alg == ENVCRYPT_RECOVERY_NONE) {
    return std::optional<RecoveryWrap>();
  }
  if (alg != ENVCRYPT_RECOVERY_X25519_AES_256_GCM) {
    return invalid("unknown recovery wrap algorithm " + std::to_string(alg));
  }
  const auto length = get_le(in, kRecovery + offsetof(envcrypt_recovery, wrapped_key_len), 4);
  if (length > ENVCRYPT_WRAPPED_KEY_MAX) {
    return invalid("recovery wrapped key length " + std::to_string(length));
  }
  RecoveryWrap wrap;
  get_array(in, kRecovery + offsetof(envcrypt_recovery, key_id), wrap.key_id);
  get_array(in, kRecovery + offsetof(envcrypt_recovery, context_digest), wrap.context_digest);
  get_array(in, kRecovery + offsetof(envcrypt_recovery, ephemeral_key), wrap.ephemeral_key);
  wrap.nonce = get_bytes(in, kRecovery + offsetof(envcrypt_recovery, nonce), ENVCRYPT_NONCE_LEN);
  wrap.tag = get_bytes(in, kRecovery + offsetof(envcrypt_recovery, tag), ENVCRYPT_TAG_LEN);
  wrap.ciphertext = get_bytes(in, kRecovery + offsetof(envcrypt_recovery, wrapped_key), length);
  return std::optional<RecoveryWrap>(std::move(wrap));
}

}  // namespace

std::string_view to_string(CopyState state) {
  switch (state) {
    case CopyState::kValid:
      return "valid";
    case CopyState::kStale:
      return "stale";
    case CopyState::kAbsent:
      return "absent";
    case CopyState::kBadChecksum:
      return "bad checksum";
    case CopyState::kUnsupportedVersion:
      return "unsupported version";
    case CopyState::kInvalid:
      return "invalid";
  }
  return "unknown";
}

Status validate(const DiskHeader& header) {
  if (header.version != ENVCRYPT_HDR_VERSION && header.version != ENVCRYPT_HDR_VERSION_RECOVERY) {
    return invalid("header version " + std::to_string(header.version) + " is not 1 or 2");
  }
  if (header.recovery && header.version < ENVCRYPT_HDR_VERSION_RECOVERY) {
    return invalid("a version 1 header cannot carry a recovery wrap");
  }
  if (header.recovery) {
    ENVCRYPT_TRY(check_recovery_wrap(*header.recovery, header.geometry.key_size));
  }
  if (header.sequence == 0 || header.sequence > kMaxSequence) {
    return invalid("sequence number " + std::to_string(header.sequence) +
                   " is out of range (1 to " + std::to_string(kMaxSequence) + ")");
  }
  ENVCRYPT_TRY(check_geometry(header.geometry));
  ENVCRYPT_TRY(check_label(header.label));
  const WrappedKey& w = header.wrapped;
  ENVCRYPT_TRY(check_cmk_uri(w.cmk_uri));
  if (w.nonce.size() != ENVCRYPT_NONCE_LEN || w.tag.size() != ENVCRYPT_TAG_LEN) {
    return invalid("wrap nonce or tag has the wrong length");
  }
  if (w.ciphertext.size() != header.geometry.key_size) {
    return invalid("wrapped key is " + std::to_string(w.ciphertext.size()) + " bytes, not " +
                   std::to_string(header.geometry.key_size));
  }
  return OkStatus();
}

Status check_on_device_geometry(const DiskHeader& header) {
  if (header.geometry.data_offset < kHeaderAreaSize) {
    return invalid("data offset " + std::to_string(header.geometry.data_offset) +
                   " lies inside the header area (" + std::to_string(kHeaderAreaSize) +
                   " bytes) of a header kept on the device");
  }
  return OkStatus();
}

Result<HeaderBytes> encode_header(const DiskHeader& header, std::uint64_t copy_offset) {
  ENVCRYPT_TRY(validate(header));
  HeaderBytes out{};
  put_string(out, offsetof(envcrypt_header, magic), ENVCRYPT_HDR_MAGIC);
  put_le(out, offsetof(envcrypt_header, version), header.version, 4);
  put_le(out, offsetof(envcrypt_header, header_size), kHeaderSize, 4);
  put_le(out, offsetof(envcrypt_header, sequence), header.sequence, 8);
  put_le(out, offsetof(envcrypt_header, copy_offset), copy_offset, 8);
  put_bytes(out, offsetof(envcrypt_header, uuid), header.uuid);
  put_string(out, offsetof(envcrypt_header, label), header.label);

  const Geometry& g = header.geometry;
  put_string(out, kGeometry + offsetof(envcrypt_geometry, cipher), g.cipher);
  put_le(out, kGeometry + offsetof(envcrypt_geometry, sector_size), g.sector_size, 4);
  put_le(out, kGeometry + offsetof(envcrypt_geometry, key_size), g.key_size, 4);
  put_le(out, kGeometry + offsetof(envcrypt_geometry, data_offset), g.data_offset, 8);
  put_le(out, kGeometry + offsetof(envcrypt_geometry, data_size), g.data_size, 8);

  const WrappedKey& w = header.wrapped;
  put_string(out, kEnvelope + offsetof(envcrypt_envelope, cmk_uri), w.cmk_uri);
  put_le(out, kEnvelope + offsetof(envcrypt_envelope, cmk_version), w.cmk_version, 4);
  put_le(out, kEnvelope + offsetof(envcrypt_envelope, wrap_alg), ENVCRYPT_WRAP_AES_256_GCM, 4);
  put_le(out, kEnvelope + offsetof(envcrypt_envelope, wrapped_key_len), w.ciphertext.size(), 4);
  put_le(out, kEnvelope + offsetof(envcrypt_envelope, kcv_alg), ENVCRYPT_KCV_HMAC_SHA256_128, 4);
  put_bytes(out, kEnvelope + offsetof(envcrypt_envelope, nonce), w.nonce);
  put_bytes(out, kEnvelope + offsetof(envcrypt_envelope, tag), w.tag);
  put_bytes(out, kEnvelope + offsetof(envcrypt_envelope, wrapped_key), w.ciphertext);
  put_bytes(out, kEnvelope + offsetof(envcrypt_envelope, kcv), header.kcv);
  if (header.recovery) {
    put_recovery(out, *header.recovery);
  }

  put_bytes(out, kChecksumOffset, checksum_of(out));
  return out;
}

Result<DiskHeader> decode_header(std::span<const std::uint8_t> in, std::uint64_t copy_offset,
                                 CopyReport* report) {
  CopyReport local;
  CopyReport& r = report != nullptr ? *report : local;
  auto fail = [&r](CopyState state, const std::string& why) -> Error {
    r.state = state;
    r.detail = why;
    return {state == CopyState::kAbsent ? ErrorCode::kNotFound : ErrorCode::kCorrupt, why};
  };

  if (in.size() < kHeaderSize) {
    return fail(CopyState::kAbsent, "device too small for a header copy");
  }
  in = in.first(kHeaderSize);
  if (std::memcmp(in.data(), ENVCRYPT_HDR_MAGIC, ENVCRYPT_HDR_MAGIC_LEN) != 0) {
    return fail(CopyState::kAbsent, "no envcrypt magic");
  }
  const Sha256Digest sum = checksum_of(in);
  const bool checksum_ok = CRYPTO_memcmp(sum.data(), in.data() + kChecksumOffset, sum.size()) == 0;
  const auto version =
      static_cast<std::uint32_t>(get_le(in, offsetof(envcrypt_header, version), 4));
  // The checksum's definition belongs to the version, so a newer version is
  // reported as such whether or not our checksum matches.
  if (version < ENVCRYPT_HDR_VERSION || version > ENVCRYPT_HDR_VERSION_MAX) {
    return fail(CopyState::kUnsupportedVersion, "header version " + std::to_string(version) +
                                                    " (this envcryptctl reads versions " +
                                                    std::to_string(ENVCRYPT_HDR_VERSION) + " to " +
                                                    std::to_string(ENVCRYPT_HDR_VERSION_MAX) + ")");
  }
  if (!checksum_ok) {
    return fail(CopyState::kBadChecksum, "checksum mismatch");
  }

  DiskHeader h;
  h.version = version;
  h.sequence = get_le(in, offsetof(envcrypt_header, sequence), 8);
  r.sequence = h.sequence;
  const std::uint64_t header_size = get_le(in, offsetof(envcrypt_header, header_size), 4);
  const std::uint64_t stored_offset = get_le(in, offsetof(envcrypt_header, copy_offset), 8);
  if (header_size != kHeaderSize) {
    return fail(CopyState::kInvalid, "header size " + std::to_string(header_size));
  }
  if (stored_offset != copy_offset) {
    return fail(CopyState::kInvalid, "copy written for offset " + std::to_string(stored_offset) +
                                         " found at " + std::to_string(copy_offset));
  }
  if (get_le(in, offsetof(envcrypt_header, flags), 8) != 0) {
    return fail(CopyState::kInvalid, "unknown flags set");
  }
  std::memcpy(h.uuid.data(), in.data() + offsetof(envcrypt_header, uuid), h.uuid.size());
  h.label = get_string(in, offsetof(envcrypt_header, label), ENVCRYPT_LABEL_LEN);

  Geometry& g = h.geometry;
  g.cipher = get_string(in, kGeometry + offsetof(envcrypt_geometry, cipher), ENVCRYPT_CIPHER_LEN);
  g.sector_size = static_cast<std::uint32_t>(
      get_le(in, kGeometry + offsetof(envcrypt_geometry, sector_size), 4));
  g.key_size =
      static_cast<std::uint32_t>(get_le(in, kGeometry + offsetof(envcrypt_geometry, key_size), 4));
  g.data_offset = get_le(in, kGeometry + offsetof(envcrypt_geometry, data_offset), 8);
  g.data_size = get_le(in, kGeometry + offsetof(envcrypt_geometry, data_size), 8);

  WrappedKey& w = h.wrapped;
  w.cmk_uri =
      get_string(in, kEnvelope + offsetof(envcrypt_envelope, cmk_uri), ENVCRYPT_CMK_URI_LEN);
  w.cmk_version = static_cast<std::uint32_t>(
      get_le(in, kEnvelope + offsetof(envcrypt_envelope, cmk_version), 4));
  const auto wrap_alg = get_le(in, kEnvelope + offsetof(envcrypt_envelope, wrap_alg), 4);
  const auto kcv_alg = get_le(in, kEnvelope + offsetof(envcrypt_envelope, kcv_alg), 4);
  const auto wrapped_len = get_le(in, kEnvelope + offsetof(envcrypt_envelope, wrapped_key_len), 4);
  if (wrap_alg != ENVCRYPT_WRAP_AES_256_GCM) {
    return fail(CopyState::kInvalid, "unknown wrap algorithm " + std::to_string(wrap_alg));
  }
  if (kcv_alg != ENVCRYPT_KCV_HMAC_SHA256_128) {
    return fail(CopyState::kInvalid, "unknown key check algorithm " + std::to_string(kcv_alg));
  }
  if (wrapped_len > ENVCRYPT_WRAPPED_KEY_MAX) {
    return fail(CopyState::kInvalid, "wrapped key length " + std::to_string(wrapped_len));
  }
  w.nonce = get_bytes(in, kEnvelope + offsetof(envcrypt_envelope, nonce), ENVCRYPT_NONCE_LEN);
  w.tag = get_bytes(in, kEnvelope + offsetof(envcrypt_envelope, tag), ENVCRYPT_TAG_LEN);
  w.ciphertext = get_bytes(in, kEnvelope + offsetof(envcrypt_envelope, wrapped_key), wrapped_len);
  std::memcpy(h.kcv.data(), in.data() + kEnvelope + offsetof(envcrypt_envelope, kcv), h.kcv.size());

  auto recovery = get_recovery(in, version);
  if (!recovery.ok()) {
    return fail(CopyState::kInvalid, recovery.error().message());
  }
  h.recovery = std::move(recovery).value();
  const std::size_t recovery_len = h.recovery ? h.recovery->ciphertext.size() : 0;
  if (auto canonical = check_unused_bytes(in, wrapped_len, h.recovery.has_value(), recovery_len);
      !canonical.empty()) {
    return fail(CopyState::kInvalid, canonical);
  }
  if (auto valid = validate(h); !valid.ok()) {
    return fail(CopyState::kInvalid, valid.error().message());
  }
  r.state = CopyState::kValid;
  r.detail.clear();
  return h;
}

Result<HeaderSelection> select_header(std::span<const std::uint8_t> primary,
                                      std::span<const std::uint8_t> secondary) {
  HeaderSelection s;
  auto from_primary = decode_header(primary, kPrimaryOffset, &s.primary);
  auto from_secondary = decode_header(secondary, kSecondaryOffset, &s.secondary);

  if (from_primary.ok() && from_secondary.ok()) {
    const bool primary_newer = s.primary.sequence >= s.secondary.sequence;
    CopyReport& older = primary_newer ? s.secondary : s.primary;
    if (from_primary->uuid != from_secondary->uuid) {
      // Different disks, whatever the sequence numbers: a header copied over
      // part of another.  Neither copy can be trusted to be this disk's.
      return Error(ErrorCode::kCorrupt, "the two header copies belong to different disks (uuid " +
                                            uuid_to_string(from_primary->uuid) + " vs " +
                                            uuid_to_string(from_secondary->uuid) + ")");
    }
    if (s.primary.sequence != s.secondary.sequence) {
      older.state = CopyState::kStale;
      older.detail = "sequence " + std::to_string(older.sequence) + " behind the other copy";
    }
    s.header = primary_newer ? std::move(from_primary).value() : std::move(from_secondary).value();
    return s;
  }
  if (from_primary.ok()) {
    s.header = std::move(from_primary).value();
    return s;
  }
  if (from_secondary.ok()) {
    s.header = std::move(from_secondary).value();
    return s;
  }
  if (s.primary.state == CopyState::kAbsent && s.secondary.state == CopyState::kAbsent) {
    return Error(ErrorCode::kNotFound, "not an envcrypt disk (no header magic in either copy)");
  }
  return Error(ErrorCode::kCorrupt, "no valid header copy (primary: " + s.primary.detail +
                                        "; secondary: " + s.secondary.detail + ")");
}

EncryptionContext encryption_context(const DiskHeader& header) {
  const Geometry& g = header.geometry;
  return {
      {"disk_uuid", uuid_to_string(header.uuid)},
      {"cipher", g.cipher},
      {"sector_size", std::to_string(g.sector_size)},
      {"key_size", std::to_string(g.key_size)},
      {"data_offset", std::to_string(g.data_offset)},
      {"data_size", std::to_string(g.data_size)},
      {"header_version", std::to_string(ENVCRYPT_HDR_VERSION)},
  };
}

EncryptionContext recovery_context(const DiskHeader& header) {
  EncryptionContext context = encryption_context(header);
  context["header_version"] = std::to_string(ENVCRYPT_HDR_VERSION_RECOVERY);
  return context;
}

Result<KeyCheckValue> key_check_value(const SecretBytes& data_key, const Uuid& uuid) {
  std::vector<std::uint8_t> message(kKcvLabel.begin(), kKcvLabel.end());
  message.insert(message.end(), uuid.begin(), uuid.end());
  std::array<std::uint8_t, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), data_key.data(), static_cast<int>(data_key.size()), message.data(),
           message.size(), mac.data(), &mac_len) == nullptr ||
      mac_len < ENVCRYPT_KCV_LEN) {
    return Error(ErrorCode::kInternal, "HMAC-SHA256 failed");
  }
  KeyCheckValue kcv;
  std::memcpy(kcv.data(), mac.data(), kcv.size());
  OPENSSL_cleanse(mac.data(), mac.size());
  return kcv;
}

Status check_data_key(const DiskHeader& header, const SecretBytes& data_key) {
  if (data_key.size() != header.geometry.key_size) {
    return Error(ErrorCode::kCorrupt, "KMS returned a " + std::to_string(data_key.size()) +
                                          "-byte key, header says " +
                                          std::to_string(header.geometry.key_size));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeyCheckValue kcv, key_check_value(data_key, header.uuid));
  if (CRYPTO_memcmp(kcv.data(), header.kcv.data(), kcv.size()) != 0) {
    return Error(ErrorCode::kCorrupt, "key check value mismatch (wrong data key)");
  }
  return OkStatus();
}

}  // namespace envcrypt
