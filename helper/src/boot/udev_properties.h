// What envcryptctl hands to udev (IMPORT{program}): KEY=value lines whose
// values hold only [A-Za-z0-9._:/@+-], whatever a header or a table holds,
// so nothing read from a disk can add a property, a unit or an argument.
#pragma once

#include <string>
#include <string_view>

#include "header/header.h"

namespace envcrypt {

// `value` with every character outside the allow-list replaced by '_'.
std::string udev_safe(std::string_view value);

// The properties `envcryptctl probe` prints for an envcrypt disk:
// ID_FS_TYPE, ID_FS_USAGE, ID_FS_VERSION, ID_FS_UUID, ID_FS_UUID_ENC,
// ID_FS_LABEL (when set), ENVCRYPT_UUID and ENVCRYPT_CMK.
std::string probe_output(const HeaderSelection& selection);

// `envcryptctl tab-match`'s answer: every ENVCRYPT_* property it sets,
// empty when no entry matches, so a stale or injected value never survives.
struct TabMatch {
  std::string name;  // empty: no match
  std::string unit;
  bool netdev = false;
  bool noauto = false;
};
std::string tab_match_output(const TabMatch& match);

}  // namespace envcrypt
