// What the initramfs-tools hook (helper/initramfs/hooks/envcrypt) puts in
// the initramfs, answered by `envcryptctl initramfs-plan`: the envcrypttab
// lines attached before the root is mounted (those with the option
// `initramfs`, and the line of the disk that holds / or /usr in fstab),
// the files their KMS needs, whether the network must come up (a KMIP CMK)
// and whether the TPM must (a sealed local root key).  A local-KMS line
// whose root key is plaintext is refused: in an initramfs on a plaintext
// /boot the key would lie next to the disk it opens.
// Documentation/admin-guide/system-disk.rst.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/crypttab.h"
#include "util/result.h"

namespace envcrypt {

// The device-mapper names a file system of fstab may sit on: for
// /dev/mapper/<name>, <name>; for another spec (UUID=, LABEL=, a path), the
// names of the device-mapper devices it resolves to and of those below it.
using FstabMappingNames = std::function<std::vector<std::string>(const std::string& spec)>;

// The devices fstab mounts on / and /usr, as written there (first field).
std::vector<std::string> fstab_system_specs(const std::string& fstab_text);

// An envcrypttab line as written into the initramfs: its options, without
// noauto (the initramfs attaches every line it holds) and with a device
// time-out of `default_device_timeout` when the line has none (the disk may
// appear after the initramfs starts looking).
std::string initramfs_tab_line(const TabEntry& entry,
                               std::chrono::milliseconds default_device_timeout);

// What the initramfs needs.
struct InitramfsPlan {
  struct Disk {
    std::string name;
    std::string why;       // "option initramfs", "fstab /", "fstab /usr"
    std::string cmk_uri;   // from the disk's header, else default_cmk
    std::string cmk_from;  // "header" or "default_cmk"
    std::string kms;       // "local" or "kmip:<endpoint name>"
    std::string tab_line;
  };
  std::vector<Disk> disks;
  std::filesystem::path config;                    // envcrypt.conf read, empty: defaults
  std::vector<std::filesystem::path> files;        // copied as they are (same path)
  std::vector<std::filesystem::path> directories;  // copied with what they hold
  bool network = false;                            // a KMIP CMK
  bool tpm = false;                                // a sealed local root key
  // One line per disk whose header could not be read (planned for the
  // configuration's default_cmk), for stderr.
  std::vector<std::string> warnings;
};

struct InitramfsPlanInputs {
  std::vector<TabEntry> table;
  std::string fstab_text;
  Config config;
  // The CMK URI in the header of the line's disk (or header= file).
  std::function<Result<std::string>(const TabEntry&)> cmk_of;
  FstabMappingNames mapping_names;
  std::function<bool(const std::filesystem::path&)> exists;
};

// The lines that go into the initramfs, each with why ("fstab /", "fstab
// /usr", "option initramfs"), in table order.
struct InitramfsLine {
  const TabEntry* entry;
  std::string why;
};
std::vector<InitramfsLine> initramfs_lines(const std::vector<TabEntry>& table,
                                           const std::string& fstab_text,
                                           const FstabMappingNames& mapping_names);

inline constexpr std::chrono::milliseconds kInitramfsDeviceTimeout{std::chrono::seconds(90)};

// The plan, or the first line that cannot go into an initramfs
// (ErrorCode::kDenied for a plaintext local root key, with the line, its
// disk, its CMK and why).  A disk whose header cannot be read (an image
// built before `image encrypt` encrypts it, a disk not attached here) is
// planned for the configuration's default_cmk, with a warning.
Result<InitramfsPlan> plan_initramfs(const InitramfsPlanInputs& inputs);

// KEY=value lines for the hook, every value through printable() so each is
// one line: NEEDED=yes|no, NETWORK=yes|no, TPM=yes|no, CONFIG=, then per disk
// DISK=<name>, DISK_WHY=, DISK_CMK=, DISK_CMK_FROM= (header or
// default_cmk), DISK_KMS=, TAB_LINE=, then FILE= and
// DIR= for each file and directory to copy.
std::string initramfs_plan_output(const InitramfsPlan& plan);

// What the real system answers for FstabMappingNames: resolves the spec
// through /dev/disk/by-uuid, by-label, by-partuuid or the path, then reads
// /sys/block/<dev>/dm/name and walks slaves/.
std::vector<std::string> system_mapping_names(const std::string& spec);

class BootActions;

// InitramfsPlanInputs::cmk_of on this system: the CMK URI in the header of
// the line's disk.  A disk that does not resolve is looked up through the
// mapping of the line's name: the running system's attached root disk is
// held by its mapping, which hides it from a UUID= lookup.
Result<std::string> system_cmk_of(const TabEntry& entry, BootActions& actions);

}  // namespace envcrypt
