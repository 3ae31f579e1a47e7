// The JSON records of envcryptctl --json, one function per record, so a
// record has one schema whichever command prints it
// (Documentation/admin-guide/json-output.rst lists them).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kms/kms.h"
#include "volume/volume.h"

namespace envcrypt {

// A CMK: kms create-key, describe-key, list-keys (each element),
// schedule-key-deletion, rotate-key, import-key-material and the like.
nlohmann::ordered_json key_json(const KeyInfo& key);

// A grant: kms create-grant, list-grants (each element).
nlohmann::ordered_json grant_json(const Grant& grant);

// One header copy's state inside header_json's "copies".
nlohmann::ordered_json copy_json(const CopyReport& copy);

// A disk's header: inspect, verify (with "verified").
nlohmann::ordered_json header_json(const std::string& source, const HeaderSelection& selection);

// How the key of an attach was found: null when the KMS answered.
nlohmann::ordered_json outage_cache_json(const std::optional<CacheUse>& use);

}  // namespace envcrypt
