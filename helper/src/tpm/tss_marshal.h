// tpm2-tss marshalling shared by sealing (tpm_seal.cc) and the sealed
// file's decoder (sealed_blob.cc), which unmarshals what it reads so a
// damaged file is refused before it reaches the TPM.
#pragma once

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include <cstdint>
#include <string>
#include <vector>

#include "util/result.h"

namespace envcrypt::tss {

inline std::string tss_text(TSS2_RC rc) { return Tss2_RC_Decode(rc); }

template <typename T, typename Marshal>
inline Result<std::vector<std::uint8_t>> marshal(const T& value, Marshal function,
                                                 const char* what) {
  std::vector<std::uint8_t> buffer(sizeof(T) + 16);
  size_t offset = 0;
  const TSS2_RC rc = function(&value, buffer.data(), buffer.size(), &offset);
  if (rc != TSS2_RC_SUCCESS) {
    return Error(ErrorCode::kInternal, std::string("marshal ") + what + ": " + tss_text(rc));
  }
  buffer.resize(offset);
  return buffer;
}

template <typename T, typename Unmarshal>
inline Result<T> unmarshal(const std::vector<std::uint8_t>& bytes, Unmarshal function,
                           const char* what) {
  T value{};
  size_t offset = 0;
  const TSS2_RC rc = function(bytes.data(), bytes.size(), &offset, &value);
  if (rc != TSS2_RC_SUCCESS || offset != bytes.size()) {
    return Error(ErrorCode::kCorrupt,
                 std::string("the sealed ") + what + " is malformed" +
                     (rc != TSS2_RC_SUCCESS ? ": " + tss_text(rc) : ": trailing bytes"));
  }
  return value;
}

}  // namespace envcrypt::tss
