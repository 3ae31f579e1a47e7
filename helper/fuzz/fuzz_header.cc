// The on-disk header codec and copy selection (header.h), fed what a hostile
// disk can hold.  Properties: no sanitizer finding; whatever decode_header
// accepts, encode_header reproduces byte for byte (so nothing a copy says is
// silently dropped or rewritten); select_header succeeds only when a copy
// decodes, and returns the copy it says is current.
//
// Input: see header_input.h.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.h"
#include "header/header.h"
#include "header_input.h"

namespace envcrypt::fuzz {
namespace {

// Decodes one copy; when it is accepted, encoding it again must give the
// same bytes.
void check_round_trip(std::span<const std::uint8_t> copy, std::uint64_t offset) {
  Result<DiskHeader> decoded = decode_header(copy, offset);
  if (!decoded.ok()) {
    return;
  }
  Result<HeaderBytes> encoded = encode_header(*decoded, offset);
  require(encoded.ok(), "encode_header accepts what decode_header accepted");
  require(std::equal(encoded->begin(), encoded->end(), copy.begin()),
          "encode_header(decode_header(copy)) == copy");
}

void check_selection(std::span<const std::uint8_t> primary,
                     std::span<const std::uint8_t> secondary) {
  Result<HeaderSelection> selection = select_header(primary, secondary);
  if (!selection.ok()) {
    return;
  }
  const bool primary_current = selection->primary.state == CopyState::kValid;
  const bool secondary_current = selection->secondary.state == CopyState::kValid;
  require(primary_current || secondary_current, "a selected header comes from a valid copy");
  const std::span<const std::uint8_t> chosen = primary_current ? primary : secondary;
  const std::uint64_t offset = primary_current ? kPrimaryOffset : kSecondaryOffset;
  Result<HeaderBytes> encoded = encode_header(selection->header, offset);
  require(encoded.ok() && std::equal(encoded->begin(), encoded->end(), chosen.begin()),
          "the selected header is the current copy's");
}

}  // namespace
}  // namespace envcrypt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const envcrypt::fuzz::HeaderCopies copies =
      envcrypt::fuzz::header_copies(std::span<const std::uint8_t>(data, size));
  envcrypt::fuzz::check_round_trip(copies.primary, envcrypt::kPrimaryOffset);
  envcrypt::fuzz::check_round_trip(copies.secondary, envcrypt::kSecondaryOffset);
  envcrypt::fuzz::check_selection(copies.primary, copies.secondary);
  return 0;
}
