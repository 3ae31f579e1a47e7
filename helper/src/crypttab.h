// /etc/envcrypttab: the disks attached at boot (envcryptctl attach-all, the
// systemd generator) and by udev when they appear.  One disk a line, in the
// spirit of crypttab(5):
//
//   # name     device                                   options
//   data       UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11  discard
//   logs       /dev/disk/by-id/virtio-logs               readonly,nofail
//   archive    /dev/vdc                                 none  netdev,header=/etc/envcrypt/vdc.hdr
//
// Fields are separated by blanks; "#" starts a comment line.  A four-field
// line (crypttab's name, device, key file, options) is accepted when the key
// file is "none" or "-": keys come from the KMS, never from a file.
// Documentation/admin-guide/boot.rst lists every option.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "result.h"

namespace envcrypt {

inline constexpr const char* kDefaultTabPath = "/etc/envcrypttab";

struct TabEntry {
  std::string name;  // the mapping: /dev/mapper/<name>
  // Exactly one of the two: a device path (/dev/..., by-id, by-path, an image
  // file) or the envcrypt header uuid (UUID=...).
  std::filesystem::path device_path;
  std::string uuid;  // lower case, canonical 8-4-4-4-12 form
  std::optional<std::filesystem::path> header_file;
  bool read_only = false;
  bool discard = false;
  bool nofail = false;  // a missing or failing disk does not fail the run
  bool noauto = false;  // attach-all and the generator skip it unless named
  bool netdev = false;  // needs the network (a KMIP KMS): attached after network-online
  // How long attach-all waits for the device to appear (0: not at all).
  std::chrono::seconds device_timeout{0};
  std::string source;  // "<file>:<line>", for messages
  unsigned line = 0;

  // How the device was written in the file: the path, or UUID=<uuid>.
  [[nodiscard]] std::string device_spec() const;
};

// Parses the text of an envcrypttab; `file` names it in errors, which read
// "<file>:<line>: <problem>" and are ErrorCode::kUsage.
Result<std::vector<TabEntry>> parse_envcrypttab(const std::string& text,
                                                const std::filesystem::path& file);

// The table to use: `explicit_path` (--tab), else $ENVCRYPT_TAB, else
// /etc/envcrypttab.
std::filesystem::path envcrypttab_path(const std::optional<std::filesystem::path>& explicit_path);

// Reads and parses `path`.  A missing file is an empty table when
// `missing_ok`, otherwise ErrorCode::kNotFound.
Result<std::vector<TabEntry>> load_envcrypttab(const std::filesystem::path& path, bool missing_ok);

// The table the commands act on: `tab_option` (--tab; empty if not given),
// else $ENVCRYPT_TAB, else /etc/envcrypttab, where a missing default file is
// simply an empty table (nothing to attach).
Result<std::vector<TabEntry>> read_envcrypttab(const std::string& tab_option);

}  // namespace envcrypt
