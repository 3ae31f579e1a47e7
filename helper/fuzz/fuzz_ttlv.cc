// KMIP TTLV decoding (kmip/ttlv.h), fed what a hostile server can send.
// Properties: no sanitizer finding; the decoder is strict, so whatever it
// accepts encodes back to exactly the same bytes, and encoded_length() of
// the first 8 bytes names the whole message.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_check.h"
#include "kms/kmip/ttlv.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace kmip = envcrypt::kmip;
  using envcrypt::fuzz::require;
  const std::span<const std::uint8_t> bytes(data, size);
  envcrypt::Result<kmip::Ttlv> item = kmip::decode(bytes);
  if (!item.ok()) {
    return 0;
  }
  std::vector<std::uint8_t> encoded = kmip::encode(*item);
  require(std::equal(encoded.begin(), encoded.end(), bytes.begin(), bytes.end()),
          "encode(decode(bytes)) == bytes");
  envcrypt::Result<std::size_t> length = kmip::encoded_length(bytes.first(kmip::kHeaderSize));
  require(length.ok() && *length == size, "encoded_length(header) == accepted message size");
  kmip::wipe(encoded);
  return 0;
}
