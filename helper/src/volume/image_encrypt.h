// `envcryptctl image encrypt SRC DST`: copies a plaintext raw image or block
// device into a new envcrypt disk, encrypting in userspace (xts_cipher.h),
// so it runs where dm-envcrypt cannot load (an image-build pipeline, a CI
// runner).  With a partition number, DST is a copy of SRC whose partition
// holds an envcrypt volume instead of the plaintext.
// Documentation/admin-guide/image-encrypt.rst.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "device/partition_table.h"
#include "header/header.h"
#include "kms/kms_registry.h"
#include "util/result.h"
#include "volume/volume.h"

namespace envcrypt {

struct ImageEncryptOptions {
  std::filesystem::path src;
  std::filesystem::path dst;
  std::string cmk;  // key reference
  std::string label;
  std::uint32_t sector_size = 4096;
  std::optional<std::uint32_t> partition;  // 1-based, as Linux numbers them
  unsigned threads = 0;                    // 0: one per CPU
  std::filesystem::path sysfs = "/sys";    // for the in-place checks (tests)
};

// Where the plaintext goes: SRC bytes [src_start, src_start + plaintext)
// become the data area of a volume whose header is at DST byte volume_start.
struct ImageLayout {
  std::uint64_t src_size = 0;
  std::uint64_t dst_size = 0;      // what DST must hold
  std::uint64_t volume_start = 0;  // the header's place in DST (the partition's start)
  std::uint64_t volume_size = 0;   // bytes of DST the volume owns
  std::uint64_t src_start = 0;     // where the plaintext starts in SRC
  std::uint64_t plaintext = 0;     // plaintext bytes encrypted (the rest of the data area is zeros)
  std::uint64_t data_size = 0;     // the header's data_size (0: to the end)
  std::optional<PartitionTable> table;  // --partition: SRC's table, copied last
};

struct ImageEncrypted {
  DiskHeader header;
  ImageLayout layout;
  bool created = false;  // DST was created as a new file
  unsigned threads = 0;
};

// Plans the layout (no KMS, no writes): whole disk, or partition `number`
// of the table at SRC's start.  Refuses a partition whose last
// data-offset bytes hold data (they have no room in the volume).
Result<ImageLayout> plan_image_layout(const Device& src, std::uint32_t sector_size,
                                      std::optional<std::uint32_t> partition);

// Does it: refuses in-place and overlapping SRC/DST, a DST in use or holding
// data (format's rules); then erases DST's header area (and table areas),
// encrypts with every CPU, flushes, and writes the header last (the table
// after it), so a failure or kill at any earlier point leaves no DST that
// reads as an envcrypt disk (or, with a partition, as a partitioned disk).
// A DST file it created is removed again on a failure it sees.
Result<ImageEncrypted> image_encrypt(KmsRegistry& kms, const ImageEncryptOptions& options,
                                     const ProgressFn& progress);

}  // namespace envcrypt
