#include "kms/kmip/ttlv.h"

#include <openssl/crypto.h>

#include <utility>

namespace envcrypt::kmip {
namespace {

constexpr std::size_t kAlignment = 8;

std::size_t padded(std::size_t length) {
  return (length + kAlignment - 1) / kAlignment * kAlignment;
}

// The fixed value length of a scalar type, or 0 for variable-length types.
std::size_t fixed_length(ItemType type) {
  switch (type) {
    case ItemType::kInteger:
    case ItemType::kEnumeration:
    case ItemType::kInterval:
      return 4;
    case ItemType::kLongInteger:
    case ItemType::kBoolean:
    case ItemType::kDateTime:
      return 8;
    default:
      return 0;
  }
}

bool known_type(std::uint8_t type) { return type >= 0x01 && type <= 0x0A; }

// KMIP tags are 0x42xxxx (defined by the specification) or 0x54xxxx
// (extensions).  Anything else is not a KMIP message.
bool valid_tag(std::uint32_t tag) {
  const std::uint32_t prefix = tag >> 16;
  return prefix == 0x42 || prefix == 0x54;
}

void put_be(std::vector<std::uint8_t>& out, std::uint64_t value, int bytes) {
  for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}

std::uint64_t get_be(std::span<const std::uint8_t> in) {
  std::uint64_t value = 0;
  for (const std::uint8_t byte : in) {
    value = (value << 8) | byte;
  }
  return value;
}

std::size_t value_length(const Ttlv& item);

std::size_t encoded_size(const Ttlv& item) { return kHeaderSize + padded(value_length(item)); }

std::size_t value_length(const Ttlv& item) {
  switch (item.type()) {
    case ItemType::kStructure: {
      std::size_t total = 0;
      for (const Ttlv& child : item.children()) {
        total += encoded_size(child);
      }
      return total;
    }
    case ItemType::kBigInteger:
    case ItemType::kTextString:
    case ItemType::kByteString:
      return item.data().size();
    default:
      return fixed_length(item.type());
  }
}

void encode_into(const Ttlv& item, std::vector<std::uint8_t>& out) {
  const std::size_t length = value_length(item);
  put_be(out, item.tag(), 3);
  out.push_back(static_cast<std::uint8_t>(item.type()));
  put_be(out, length, 4);
  switch (item.type()) {
    case ItemType::kStructure:
      for (const Ttlv& child : item.children()) {
        encode_into(child, out);
      }
      return;
    case ItemType::kBigInteger:
    case ItemType::kTextString:
    case ItemType::kByteString:
      out.insert(out.end(), item.data().begin(), item.data().end());
      break;
    default:
      put_be(out, static_cast<std::uint64_t>(item.number()), static_cast<int>(length));
      break;
  }
  out.resize(out.size() + padded(length) - length, 0);
}

class Decoder {
 public:
  Decoder(std::span<const std::uint8_t> input, const DecodeLimits& limits)
      : input_(input), limits_(limits) {}

  Result<Ttlv> decode_all() {
    if (input_.size() > limits_.max_message_size) {
      return fail(0, "message of " + std::to_string(input_.size()) +
                         " bytes exceeds the limit of " + std::to_string(limits_.max_message_size));
    }
    std::size_t offset = 0;
    ENVCRYPT_ASSIGN_OR_RETURN(Ttlv item, decode_item(offset, input_.size(), 0));
    if (offset != input_.size()) {
      return fail(offset,
                  std::to_string(input_.size() - offset) + " trailing bytes after the item");
    }
    return item;
  }

 private:
  static Error fail(std::size_t offset, const std::string& what) {
    return {ErrorCode::kInternal, "TTLV at offset " + std::to_string(offset) + ": " + what};
  }

  // Decodes the item at `offset`, which must end by `end`; advances offset.
  Result<Ttlv> decode_item(std::size_t& offset, std::size_t end, int depth) {
    const std::size_t start = offset;
    if (end - offset < kHeaderSize) {
      return fail(start, "truncated header (" + std::to_string(end - offset) + " bytes left)");
    }
    const auto header = input_.subspan(offset, kHeaderSize);
    const auto tag = static_cast<std::uint32_t>(get_be(header.first(3)));
    const std::uint8_t raw_type = header[3];
    const std::size_t length = get_be(header.subspan(4, 4));
    if (!valid_tag(tag)) {
      return fail(start, "tag 0x" + hex(tag) + " is not a KMIP tag");
    }
    if (!known_type(raw_type)) {
      return fail(start, "unknown item type 0x" + hex(raw_type));
    }
    const auto type = static_cast<ItemType>(raw_type);
    offset += kHeaderSize;
    const std::size_t available = end - offset;
    if (padded(length) > available) {
      return fail(start, std::string(to_string(type)) + " length " + std::to_string(length) +
                             " runs past the end of its container (" + std::to_string(available) +
                             " bytes left)");
    }
    const std::size_t fixed = fixed_length(type);
    if (fixed != 0 && length != fixed) {
      return fail(start, std::string(to_string(type)) + " length must be " + std::to_string(fixed) +
                             ", not " + std::to_string(length));
    }
    const auto value = input_.subspan(offset, length);
    if (type == ItemType::kStructure) {
      if (depth >= limits_.max_depth) {
        return fail(start, "structures nested deeper than " + std::to_string(limits_.max_depth));
      }
      Ttlv item = Ttlv::structure(tag);
      const std::size_t structure_end = offset + length;
      while (offset < structure_end) {
        ENVCRYPT_ASSIGN_OR_RETURN(Ttlv child, decode_item(offset, structure_end, depth + 1));
        item.add(std::move(child));
      }
      return item;
    }
    ENVCRYPT_ASSIGN_OR_RETURN(Ttlv item, decode_scalar(start, tag, type, value));
    offset += length;
    for (const std::size_t padding_end = start + kHeaderSize + padded(length); offset < padding_end;
         ++offset) {
      if (input_[offset] != 0) {
        return fail(offset, "non-zero padding byte after " + std::string(to_string(type)));
      }
    }
    return item;
  }

  static Result<Ttlv> decode_scalar(std::size_t start, std::uint32_t tag, ItemType type,
                                    std::span<const std::uint8_t> value) {
    switch (type) {
      case ItemType::kBigInteger:
        if (value.empty() || value.size() % kAlignment != 0) {
          return fail(start, "Big Integer length " + std::to_string(value.size()) +
                                 " is not a positive multiple of 8");
        }
        return Ttlv::big_integer(tag, value);
      case ItemType::kTextString:
        return Ttlv::text(tag, {reinterpret_cast<const char*>(value.data()), value.size()});
      case ItemType::kByteString:
        return Ttlv::bytes(tag, value);
      case ItemType::kBoolean: {
        const std::uint64_t flag = get_be(value);
        if (flag > 1) {
          return fail(start, "Boolean value " + std::to_string(flag) + " is neither 0 nor 1");
        }
        return Ttlv::boolean(tag, flag == 1);
      }
      case ItemType::kInteger:
        return Ttlv::integer(tag,
                             static_cast<std::int32_t>(static_cast<std::uint32_t>(get_be(value))));
      case ItemType::kEnumeration:
        return Ttlv::enumeration(tag, static_cast<std::uint32_t>(get_be(value)));
      case ItemType::kInterval:
        return Ttlv::interval(tag, static_cast<std::uint32_t>(get_be(value)));
      case ItemType::kLongInteger:
        return Ttlv::long_integer(tag, static_cast<std::int64_t>(get_be(value)));
      case ItemType::kDateTime:
        return Ttlv::date_time(tag, static_cast<std::int64_t>(get_be(value)));
      case ItemType::kStructure:
        break;
    }
    return fail(start, "internal: structure decoded as a scalar");
  }

  static std::string hex(std::uint32_t value) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string text;
    do {
      text.insert(text.begin(), kDigits[value & 0xF]);
      value >>= 4;
    } while (value != 0);
    return text;
  }

  std::span<const std::uint8_t> input_;
  const DecodeLimits& limits_;
};

}  // namespace

std::string_view to_string(ItemType type) {
  switch (type) {
    case ItemType::kStructure:
      return "Structure";
    case ItemType::kInteger:
      return "Integer";
    case ItemType::kLongInteger:
      return "Long Integer";
    case ItemType::kBigInteger:
      return "Big Integer";
    case ItemType::kEnumeration:
      return "Enumeration";
    case ItemType::kBoolean:
      return "Boolean";
    case ItemType::kTextString:
      return "Text String";
    case ItemType::kByteString:
      return "Byte String";
    case ItemType::kDateTime:
      return "Date-Time";
    case ItemType::kInterval:
      return "Interval";
  }
  return "unknown type";
}

Ttlv Ttlv::structure(std::uint32_t tag, std::vector<Ttlv> children) {
  Ttlv item(tag, ItemType::kStructure);
  item.children_ = std::move(children);
  return item;
}

Ttlv Ttlv::integer(std::uint32_t tag, std::int32_t value) {
  Ttlv item(tag, ItemType::kInteger);
  item.number_ = value;
  return item;
}

Ttlv Ttlv::long_integer(std::uint32_t tag, std::int64_t value) {
  Ttlv item(tag, ItemType::kLongInteger);
  item.number_ = value;
  return item;
}

Ttlv Ttlv::big_integer(std::uint32_t tag, std::span<const std::uint8_t> value) {
  Ttlv item(tag, ItemType::kBigInteger);
  item.data_.assign(value.begin(), value.end());
  return item;
}

Ttlv Ttlv::enumeration(std::uint32_t tag, std::uint32_t value) {
  Ttlv item(tag, ItemType::kEnumeration);
  item.number_ = value;
  return item;
}

Ttlv Ttlv::boolean(std::uint32_t tag, bool value) {
  Ttlv item(tag, ItemType::kBoolean);
  item.number_ = value ? 1 : 0;
  return item;
}

Ttlv Ttlv::text(std::uint32_t tag, std::string_view value) {
  Ttlv item(tag, ItemType::kTextString);
  item.data_.assign(value.begin(), value.end());
  return item;
}

Ttlv Ttlv::bytes(std::uint32_t tag, std::span<const std::uint8_t> value) {
  Ttlv item(tag, ItemType::kByteString);
  item.data_.assign(value.begin(), value.end());
  return item;
}

Ttlv Ttlv::date_time(std::uint32_t tag, std::int64_t seconds) {
  Ttlv item(tag, ItemType::kDateTime);
  item.number_ = seconds;
  return item;
}

Ttlv Ttlv::interval(std::uint32_t tag, std::uint32_t seconds) {
  Ttlv item(tag, ItemType::kInterval);
  item.number_ = seconds;
  return item;
}

Ttlv::~Ttlv() { wipe(data_); }

Ttlv& Ttlv::add(Ttlv child) {
  children_.push_back(std::move(child));
  return *this;
}

const Ttlv* Ttlv::find(std::uint32_t tag) const {
  for (const Ttlv& child : children_) {
    if (child.tag() == tag) {
      return &child;
    }
  }
  return nullptr;
}

std::vector<const Ttlv*> Ttlv::find_all(std::uint32_t tag) const {
  std::vector<const Ttlv*> found;
  for (const Ttlv& child : children_) {
    if (child.tag() == tag) {
      found.push_back(&child);
    }
  }
  return found;
}

Result<const Ttlv*> Ttlv::require(std::uint32_t tag, ItemType type, std::string_view what) const {
  const Ttlv* child = find(tag);
  if (child == nullptr) {
    return Error(ErrorCode::kInternal, "missing " + std::string(what));
  }
  if (child->type() != type) {
    return Error(ErrorCode::kInternal, std::string(what) + " is a " +
                                           std::string(to_string(child->type())) + ", expected " +
                                           std::string(to_string(type)));
  }
  return child;
}

bool operator==(const Ttlv& a, const Ttlv& b) {
  return a.tag_ == b.tag_ && a.type_ == b.type_ && a.number_ == b.number_ && a.data_ == b.data_ &&
         a.children_ == b.children_;
}

std::vector<std::uint8_t> encode(const Ttlv& item) {
  std::vector<std::uint8_t> out;
  // Reserving the exact size up front means the buffer is never reallocated,
  // so no unwiped copy of key material is left behind in freed memory.
  out.reserve(encoded_size(item));
  encode_into(item, out);
  return out;
}

Result<Ttlv> decode(std::span<const std::uint8_t> bytes, const DecodeLimits& limits) {
  return Decoder(bytes, limits).decode_all();
}

Result<std::size_t> encoded_length(std::span<const std::uint8_t> header,
                                   const DecodeLimits& limits) {
  if (header.size() < kHeaderSize) {
    return Error(ErrorCode::kInternal, "TTLV header truncated");
  }
  const std::size_t length = get_be(header.subspan(4, 4));
  const std::size_t total = kHeaderSize + padded(length);
  if (total > limits.max_message_size) {
    return Error(ErrorCode::kInternal, "message of " + std::to_string(total) +
                                           " bytes exceeds the limit of " +
                                           std::to_string(limits.max_message_size));
  }
  return total;
}

void wipe(std::vector<std::uint8_t>& buffer) {
  if (!buffer.empty()) {
    OPENSSL_cleanse(buffer.data(), buffer.size());
  }
}

}  // namespace envcrypt::kmip
