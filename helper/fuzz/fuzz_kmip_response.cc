// KMIP response parsing (kmip/kmip_messages.h) behind TTLV decoding: what a
// hostile or broken server's answer reaches.  Every decoded message is read
// as a Response Message for each operation envcrypt sends, and, so that the
// fuzzer reaches the payload readers without first building a whole valid
// envelope, also handed to each payload reader directly.  Property: no
// sanitizer finding (the readers' answers are checked by the unit tests).
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "kms/kmip/kmip_messages.h"
#include "kms/kmip/ttlv.h"

namespace envcrypt::fuzz {
namespace {

using kmip::Operation;
using kmip::Ttlv;

constexpr std::array kOperations = {
    Operation::kCreate,           Operation::kLocate,  Operation::kGetAttributes,
    Operation::kActivate,         Operation::kRevoke,  Operation::kDestroy,
    Operation::kDiscoverVersions, Operation::kEncrypt, Operation::kDecrypt,
};

// The reader envcrypt uses for `operation`'s payload.
void read_payload(const Ttlv& payload, Operation operation) {
  switch (operation) {
    case Operation::kDiscoverVersions:
      (void)kmip::parse_discover_versions(payload);
      return;
    case Operation::kLocate:
      (void)kmip::parse_locate(payload);
      return;
    case Operation::kEncrypt:
      (void)kmip::parse_encrypt(payload);
      return;
    case Operation::kDecrypt:
      (void)kmip::parse_decrypt(payload);
      return;
    case Operation::kGetAttributes: {
      Result<kmip::Attributes> attributes = kmip::parse_get_attributes(payload);
      if (attributes.ok()) {
        (void)attributes->first("State");
        (void)attributes->all("Name");
      }
      return;
    }
    case Operation::kCreate:
    case Operation::kActivate:
    case Operation::kRevoke:
    case Operation::kDestroy:
      (void)kmip::parse_unique_identifier(payload);
      return;
  }
}

}  // namespace
}  // namespace envcrypt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace kmip = envcrypt::kmip;
  envcrypt::Result<kmip::Ttlv> message = kmip::decode(std::span<const std::uint8_t>(data, size));
  if (!message.ok()) {
    return 0;
  }
  for (const kmip::Operation operation : envcrypt::fuzz::kOperations) {
    envcrypt::Result<kmip::Ttlv> payload = kmip::response_payload(*message, operation);
    if (payload.ok()) {
      envcrypt::fuzz::read_payload(*payload, operation);
    }
    envcrypt::fuzz::read_payload(*message, operation);
  }
  return 0;
}
