// KMIP 1.4 TTLV (Tag-Type-Length-Value) encoding, section 9.1 of the KMIP
// specification: a 3-byte tag, a 1-byte type, a 4-byte big-endian length and
// a value padded with zeros to a multiple of 8 bytes.  Pure codec, no I/O.
//
// Decoding is strict because its input comes from the network: unknown
// types, wrong fixed lengths, non-zero padding, structures whose children do
// not exactly fill them, trailing bytes, over-deep nesting and messages over
// the size limit are all errors, never undefined behaviour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace envcrypt::kmip {

enum class ItemType : std::uint8_t {
  kStructure = 0x01,
  kInteger = 0x02,
  kLongInteger = 0x03,
  kBigInteger = 0x04,
  kEnumeration = 0x05,
  kBoolean = 0x06,
  kTextString = 0x07,
  kByteString = 0x08,
  kDateTime = 0x09,
  kInterval = 0x0A,
};

std::string_view to_string(ItemType type);

// One TTLV item: a structure holds children, every other type one value.
// Byte and text strings may carry key material (a Decrypt response's Data),
// so they are wiped when the item is destroyed.
class Ttlv {
 public:
  static Ttlv structure(std::uint32_t tag, std::vector<Ttlv> children = {});
  static Ttlv integer(std::uint32_t tag, std::int32_t value);
  static Ttlv long_integer(std::uint32_t tag, std::int64_t value);
  // Big-endian two's complement, a multiple of 8 bytes long.
  static Ttlv big_integer(std::uint32_t tag, std::span<const std::uint8_t> value);
  static Ttlv enumeration(std::uint32_t tag, std::uint32_t value);
  static Ttlv boolean(std::uint32_t tag, bool value);
  static Ttlv text(std::uint32_t tag, std::string_view value);
  static Ttlv bytes(std::uint32_t tag, std::span<const std::uint8_t> value);
  static Ttlv date_time(std::uint32_t tag, std::int64_t seconds);
  static Ttlv interval(std::uint32_t tag, std::uint32_t seconds);

  Ttlv(const Ttlv& other) = default;
  Ttlv& operator=(const Ttlv& other) = default;
  Ttlv(Ttlv&& other) noexcept = default;
  Ttlv& operator=(Ttlv&& other) noexcept = default;
  ~Ttlv();

  [[nodiscard]] std::uint32_t tag() const { return tag_; }
  [[nodiscard]] ItemType type() const { return type_; }

  // Structure: its children, in order.
  [[nodiscard]] const std::vector<Ttlv>& children() const { return children_; }
  Ttlv& add(Ttlv child);

  // Scalars: Integer, Long Integer, Enumeration, Boolean, Date-Time and
  // Interval all read through number().
  [[nodiscard]] std::int64_t number() const { return number_; }
  // Text String, Byte String and Big Integer.
  [[nodiscard]] std::span<const std::uint8_t> data() const { return data_; }
  [[nodiscard]] std::string_view text_value() const {
    return {reinterpret_cast<const char*>(data_.data()), data_.size()};
  }

  // The first child with `tag`, or nullptr.
  [[nodiscard]] const Ttlv* find(std::uint32_t tag) const;
  // Every child with `tag`.
  [[nodiscard]] std::vector<const Ttlv*> find_all(std::uint32_t tag) const;
  // The first child with `tag`, which must exist and be of `type`; the error
  // names the tag (`what`) so a malformed message says what was wrong.
  [[nodiscard]] Result<const Ttlv*> require(std::uint32_t tag, ItemType type,
                                            std::string_view what) const;

  friend bool operator==(const Ttlv& a, const Ttlv& b);

 private:
  Ttlv(std::uint32_t tag, ItemType type) : tag_(tag), type_(type) {}

  std::uint32_t tag_;
  ItemType type_;
  std::int64_t number_ = 0;
  std::vector<std::uint8_t> data_;
  std::vector<Ttlv> children_;
};

// The encoded form of `item`.  The caller wipes the buffer when it may hold
// key material (see wipe()).
std::vector<std::uint8_t> encode(const Ttlv& item);

struct DecodeLimits {
  std::size_t max_message_size = 1U << 20;  // bytes, header included
  int max_depth = 16;                       // structures nested in structures
};

// Decodes exactly one item that fills `bytes` entirely.
Result<Ttlv> decode(std::span<const std::uint8_t> bytes, const DecodeLimits& limits = {});

// From the first 8 bytes of an item, its total encoded length (header and
// padding included), so a reader knows how much more to read.  Refuses
// lengths over the limit before anything is allocated.
inline constexpr std::size_t kHeaderSize = 8;
Result<std::size_t> encoded_length(std::span<const std::uint8_t> header,
                                   const DecodeLimits& limits = {});

// Overwrites a buffer that held key material.
void wipe(std::vector<std::uint8_t>& buffer);

}  // namespace envcrypt::kmip
