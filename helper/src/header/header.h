// The on-disk header codec (uapi/linux/dm-envcrypt.h,
// Documentation/format/on-disk.rst): bytes <-> DiskHeader, choosing between
// the two copies, the encryption context that binds the wrap to the disk, and
// the key check value.  No I/O here; header_io.* reads and writes devices.
#pragma once

#include <linux/dm-envcrypt.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "kms/kms.h"
#include "kms/recovery.h"
#include "util/result.h"
#include "util/secret.h"
#include "util/uuid.h"

namespace envcrypt {

inline constexpr std::size_t kHeaderSize = ENVCRYPT_HDR_SIZE;
inline constexpr std::uint64_t kPrimaryOffset = ENVCRYPT_HDR_PRIMARY_OFFSET;
inline constexpr std::uint64_t kSecondaryOffset = ENVCRYPT_HDR_SECONDARY_OFFSET;
inline constexpr std::uint64_t kHeaderAreaSize = ENVCRYPT_HDR_AREA_SIZE;
inline constexpr std::uint64_t kDataAlign = ENVCRYPT_DATA_ALIGN;
inline constexpr std::uint64_t kDefaultDataOffset = ENVCRYPT_DEFAULT_DATA_OFFSET;
inline constexpr std::size_t kDataKeySize = ENVCRYPT_DATA_KEY_LEN;

static_assert(kUuidSize == ENVCRYPT_UUID_LEN);
using KeyCheckValue = std::array<std::uint8_t, ENVCRYPT_KCV_LEN>;
using HeaderBytes = std::array<std::uint8_t, kHeaderSize>;

struct Geometry {
  std::string cipher = ENVCRYPT_CIPHER_DEFAULT;
  std::uint32_t sector_size = 4096;
  std::uint32_t key_size = kDataKeySize;
  std::uint64_t data_offset = kDefaultDataOffset;  // bytes
  std::uint64_t data_size = 0;                     // bytes; 0 = to the end of the device
};

struct DiskHeader {
  // ENVCRYPT_HDR_VERSION (1) or ENVCRYPT_HDR_VERSION_RECOVERY (2): only a
  // version 2 header can carry a recovery wrap; it may also carry none.
  std::uint32_t version = ENVCRYPT_HDR_VERSION;
  std::uint64_t sequence = 1;
  Uuid uuid{};
  std::string label;
  Geometry geometry;
  WrappedKey wrapped;  // AES-256-GCM under wrapped.cmk_uri, version wrapped.cmk_version
  KeyCheckValue kcv{};
  std::optional<RecoveryWrap> recovery;  // the DK under an offline recovery public key
};

// Sequence numbers stay below 2^63: a header update that would pass it is
// refused, so the number never wraps and the newer copy always wins.
inline constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 63) - 1;

// Checks every field (lengths, alignment, algorithms, sequence range, that
// data offset plus size fits 64 bits, that the CMK URI holds only URI
// characters and the label only printable ASCII).  decode_header applies it
// to every copy read, so nothing else has to re-check a decoded header.
Status validate(const DiskHeader& header);

// A header kept on the disk it describes must place the data after its own
// copies; a detached header may start the data at 0.
Status check_on_device_geometry(const DiskHeader& header);

// One copy, for the given place on the device, checksum included.
Result<HeaderBytes> encode_header(const DiskHeader& header, std::uint64_t copy_offset);

// What reading one copy found.
enum class CopyState {
  kValid,
  kStale,               // valid, but the other copy has a higher sequence number
  kAbsent,              // no magic (never written, or overwritten)
  kBadChecksum,         // magic present, checksum mismatch (torn write, bit rot)
  kUnsupportedVersion,  // a newer format than this envcryptctl reads
  kInvalid,             // checksum right, but a field is impossible
};
std::string_view to_string(CopyState state);

struct CopyReport {
  CopyState state = CopyState::kAbsent;
  std::string detail;  // why, for anything but kValid
  std::uint64_t sequence = 0;
};

// Decodes one copy found at `copy_offset`.
Result<DiskHeader> decode_header(std::span<const std::uint8_t> bytes, std::uint64_t copy_offset,
                                 CopyReport* report = nullptr);

struct HeaderSelection {
  DiskHeader header;  // from the valid copy with the highest sequence number
  CopyReport primary;
  CopyReport secondary;
  // True when a copy is not valid and current: worth a warning and a rewrite.
  [[nodiscard]] bool degraded() const {
    return primary.state != CopyState::kValid || secondary.state != CopyState::kValid;
  }
};

// Picks the header from the two copies.  Neither copy carrying the magic is
// ErrorCode::kNotFound ("not an envcrypt disk"); no usable copy otherwise is
// ErrorCode::kCorrupt naming what is wrong with each.
Result<HeaderSelection> select_header(std::span<const std::uint8_t> primary,
                                      std::span<const std::uint8_t> secondary);

// The encryption context given to the KMS with every wrap and unwrap: it
// binds the disk uuid and its geometry, so a header whose geometry was edited
// (and its checksum recomputed) fails to unwrap instead of mapping garbage.
// Its header_version is "1" in both header versions: version 2 left the
// envelope as it was, so the upgrade needs no KMS call.
EncryptionContext encryption_context(const DiskHeader& header);

// The context a recovery wrap is bound to (recovery.h): the same entries,
// with header_version "2", the version of the header that carries the wrap.
EncryptionContext recovery_context(const DiskHeader& header);

// HMAC-SHA256(DK, "envcrypt-kcv-v1" || uuid), first 16 bytes.  Keyed by the
// DK, so it says nothing about the DK without it; bound to the uuid, so two
// disks' values never reveal that they share a DK.
Result<KeyCheckValue> key_check_value(const SecretBytes& data_key, const Uuid& uuid);

// Constant-time check of an unwrapped DK against the header's KCV.
Status check_data_key(const DiskHeader& header, const SecretBytes& data_key);

}  // namespace envcrypt
