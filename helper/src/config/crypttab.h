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
#include <cstddef>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/duration.h"
#include "util/result.h"

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
  bool nofail = false;     // a missing or failing disk does not fail the run
  bool noauto = false;     // attach-all and the generator skip it unless named
  bool initramfs = false;  // attached in the initramfs (initramfs-tools hook)
  // _netdev (crypttab(5)): the device itself is reached over the network
  // (iSCSI, NBD), so the attach is ordered after remote-fs-pre.target.
  bool remote_device = false;
  // remote-kms (or the older netdev): the CMK is on a remote key server, so
  // the attach waits for network-online.target but not for remote storage.
  bool remote_kms = false;
  // How long attach-all waits for the device to appear (0: not at all).
  std::chrono::milliseconds device_timeout{0};
  std::string source;  // "<file>:<line>", for messages
  unsigned line = 0;

  // How the device was written in the file: the path, or UUID=<uuid>.
  [[nodiscard]] std::string device_spec() const;
  // Either kind of remote: nothing to attach before the network is up.
  [[nodiscard]] bool needs_network() const { return remote_device || remote_kms; }
};

// The longest x-systemd.device-timeout= (a day), after unit conversion.
inline constexpr std::chrono::milliseconds kMaxDeviceTimeout{std::chrono::hours(24)};

// A table as read: the good lines, and one error per bad line, which is
// skipped (as systemd-cryptsetup-generator skips a bad crypttab line), so
// one typo does not keep every other disk from attaching.
struct Envcrypttab {
  std::vector<TabEntry> entries;
  // "<file>:<line>: <problem>", ErrorCode::kUsage; bytes from the file are
  // escaped (printable.h), so each is one line.
  std::vector<Error> skipped;
};

// Parses the text of an envcrypttab; `file` names it in the skipped lines'
// errors.  A line whose name an earlier line already uses is skipped too.
Envcrypttab parse_envcrypttab(const std::string& text, const std::filesystem::path& file);

// The table to use: `explicit_path` (--tab), else $ENVCRYPT_TAB, else
// /etc/envcrypttab.
std::filesystem::path envcrypttab_path(const std::optional<std::filesystem::path>& explicit_path);

// The largest envcrypttab (or fstab) read: far beyond any real table, so
// that a --tab naming /dev/zero or a huge file is refused, not read.
inline constexpr std::size_t kMaxTableFile = std::size_t{1024} * 1024;

// Reads and parses `path`.  A missing file is an empty table when
// `missing_ok`, otherwise ErrorCode::kNotFound; a file over kMaxTableFile
// is ErrorCode::kUsage.
Result<Envcrypttab> load_envcrypttab(const std::filesystem::path& path, bool missing_ok);

// The table the commands act on: `tab_option` (--tab; empty if not given),
// else $ENVCRYPT_TAB, else /etc/envcrypttab, where a missing default file is
// simply an empty table (nothing to attach).
Result<Envcrypttab> read_envcrypttab(const std::string& tab_option);

// One warning line per skipped line on `err`:
// "envcryptctl: warning: <file>:<line>: <problem> (line skipped)".
void log_skipped_lines(const Envcrypttab& tab, std::ostream& err);

// read_envcrypttab() for the commands a bad line does not fail (status,
// detach-all, tab-match, rewrap): the skipped lines are logged on `err`.
Result<std::vector<TabEntry>> read_envcrypttab_entries(const std::string& tab_option,
                                                       std::ostream& err);

}  // namespace envcrypt
