#include "kms/kmip/kmip_messages.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace envcrypt::kmip {
namespace {

using Bytes = std::vector<std::uint8_t>;

// The same hand-computed Activate request as in ttlv_test.cc, this time
// produced by the message builder.
TEST(KmipMessagesTest, ActivateRequestForUidOne) {
  const Bytes expected = {
      0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x70, 0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00,
      0x38, 0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x6A, 0x02, 0x00, 0x00,
      0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x6B, 0x02, 0x00,
      0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x0D, 0x02,
      0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x0F,
      0x01, 0x00, 0x00, 0x00, 0x28, 0x42, 0x00, 0x5C, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
      0x00, 0x12, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x79, 0x01, 0x00, 0x00, 0x00, 0x10, 0x42,
      0x00, 0x94, 0x07, 0x00, 0x00, 0x00, 0x01, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(encode(make_request(Operation::kActivate, unique_identifier_request("1"))), expected);
}

// Decrypt's request carries everything GCM needs: mode, algorithm, tag
// length, the IV, the AAD and the tag, each under its KMIP 1.4 tag.
TEST(KmipMessagesTest, DecryptRequestCarriesGcmParameters) {
  const Bytes nonce(12, 0x11);
  const Bytes aad = {'c', 't', 'x'};
  const Bytes tag_bytes(16, 0x22);
  const Ttlv request = decrypt_request("7", Bytes(64, 0x33), {nonce, aad}, tag_bytes);
  auto parameters = request.require(tag::kCryptographicParameters, ItemType::kStructure, "params");
  ASSERT_TRUE(parameters.ok());
  EXPECT_EQ((*parameters)->find(tag::kBlockCipherMode)->number(), 0x09);         // GCM
  EXPECT_EQ((*parameters)->find(tag::kCryptographicAlgorithm)->number(), 0x03);  // AES
  EXPECT_EQ((*parameters)->find(tag::kTagLength)->number(), 16);
  EXPECT_EQ(Bytes(request.find(tag::kIvCounterNonce)->data().begin(),
                  request.find(tag::kIvCounterNonce)->data().end()),
            nonce);
  EXPECT_EQ(request.find(tag::kAuthenticatedEncryptionAdditionalData)->data().size(), 3U);
  EXPECT_EQ(request.find(tag::kAuthenticatedEncryptionTag)->data().size(), 16U);
  EXPECT_EQ(request.find(tag::kData)->data().size(), 64U);
}

TEST(KmipMessagesTest, CreateRequestAsksForAes256EncryptDecryptWithName) {
  const Ttlv request = create_aes256_request(std::string("vm-disks"));
  EXPECT_EQ(request.find(tag::kObjectType)->number(), 0x02);  // Symmetric Key
  const Ttlv* attributes = request.find(tag::kTemplateAttribute);
  ASSERT_NE(attributes, nullptr);
  std::vector<std::string> names;
  for (const Ttlv* attribute : attributes->find_all(tag::kAttribute)) {
    names.emplace_back(attribute->find(tag::kAttributeName)->text_value());
    const Ttlv* value = attribute->find(tag::kAttributeValue);
    if (names.back() == "Cryptographic Length") {
      EXPECT_EQ(value->number(), 256);
    } else if (names.back() == "Cryptographic Usage Mask") {
      EXPECT_EQ(value->number(), 0x04 | 0x08);
    } else if (names.back() == "Name") {
      EXPECT_EQ(value->find(tag::kNameValue)->text_value(), "vm-disks");
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"Cryptographic Algorithm", "Cryptographic Length",
                                             "Cryptographic Usage Mask", "Name"}));
  EXPECT_EQ(create_aes256_request(std::nullopt).find(tag::kTemplateAttribute)->children().size(),
            3U);
}

Ttlv response(Operation operation, std::vector<Ttlv> result) {
  std::vector<Ttlv> item = {
      Ttlv::enumeration(tag::kOperation, static_cast<std::uint32_t>(operation))};
  for (Ttlv& part : result) {
    item.push_back(std::move(part));
  }
  return Ttlv::structure(
      tag::kResponseMessage,
      {Ttlv::structure(
           tag::kResponseHeader,
           {Ttlv::structure(tag::kProtocolVersion, {Ttlv::integer(tag::kProtocolVersionMajor, 1),
                                                    Ttlv::integer(tag::kProtocolVersionMinor, 4)}),
            Ttlv::date_time(tag::kTimeStamp, 1700000000), Ttlv::integer(tag::kBatchCount, 1)}),
       Ttlv::structure(tag::kBatchItem, std::move(item))});
}

Ttlv failure(Operation operation, std::uint32_t reason, std::string_view message) {
  return response(operation, {Ttlv::enumeration(tag::kResultStatus, 1),
                              Ttlv::enumeration(tag::kResultReason, reason),
                              Ttlv::text(tag::kResultMessage, message)});
}

TEST(KmipMessagesTest, SuccessGivesThePayload) {
  const Ttlv ok = response(
      Operation::kCreate,
      {Ttlv::enumeration(tag::kResultStatus, 0),
       Ttlv::structure(tag::kResponsePayload, {Ttlv::enumeration(tag::kObjectType, 2),
                                               Ttlv::text(tag::kUniqueIdentifier, "42")})});
  auto payload = response_payload(ok, Operation::kCreate);
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  auto uid = parse_unique_identifier(*payload);
  ASSERT_TRUE(uid.ok());
  EXPECT_EQ(*uid, "42");
  // The same answer for another operation is refused.
  EXPECT_EQ(response_payload(ok, Operation::kDecrypt).error().code(), ErrorCode::kKmsUnreachable);
}

TEST(KmipMessagesTest, ResultReasonsBecomeErrorCodesWithTheServerMessage) {
  struct Case {
    std::uint32_t reason;
    Operation operation;
    ErrorCode code;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {0x01, Operation::kGetAttributes, ErrorCode::kNotFound,
       "KMIP Get Attributes failed: Item Not Found: server says"},
      {0x0C, Operation::kDecrypt, ErrorCode::kDenied,
       "KMIP Decrypt failed: Permission Denied: server says"},
      {0x0B, Operation::kRevoke, ErrorCode::kDenied, "Illegal Operation"},
      {0x43, Operation::kEncrypt, ErrorCode::kDenied, "Wrong Key Lifecycle State"},
      {0x03, Operation::kLocate, ErrorCode::kDenied, "Authentication Not Successful"},
      {0x05, Operation::kCreate, ErrorCode::kUsage, "Operation Not Supported"},
      {0x08, Operation::kEncrypt, ErrorCode::kUsage, "Feature Not Supported"},
      {0x18, Operation::kCreate, ErrorCode::kConflict, "Object Already Exists"},
      {0x04, Operation::kCreate, ErrorCode::kInternal, "Invalid Message"},
      {0x07, Operation::kEncrypt, ErrorCode::kInternal, "Invalid Field"},
      {0x0A, Operation::kDecrypt, ErrorCode::kCorrupt, "Cryptographic Failure"},
      {0x0A, Operation::kEncrypt, ErrorCode::kKmsUnreachable, "Cryptographic Failure"},
      {0x100, Operation::kDecrypt, ErrorCode::kKmsUnreachable, "General Failure"},
      {0x100, Operation::kCreate, ErrorCode::kKmsUnreachable, "General Failure"},
      {0x09, Operation::kDecrypt, ErrorCode::kKmsUnreachable, "Operation Canceled By Requester"},
      {0x9999, Operation::kCreate, ErrorCode::kKmsUnreachable, "result reason 39321"},
  };
  for (const Case& test_case : cases) {
    auto payload = response_payload(failure(test_case.operation, test_case.reason, "server says"),
                                    test_case.operation);
    ASSERT_FALSE(payload.ok());
    EXPECT_EQ(payload.error().code(), test_case.code) << payload.error().message();
    EXPECT_NE(payload.error().message().find(test_case.expected), std::string::npos)
        << payload.error().message();
  }
}

// PyKMIP answers a Decrypt whose GCM tag does not verify, and any other
// fault of its own, with General Failure: that says nothing about the
// header, so it must not read "corrupt header".
TEST(KmipMessagesTest, GeneralFailureOnDecryptIsTheServersNotACorruptHeader) {
  auto payload =
      response_payload(failure(Operation::kDecrypt, 0x100,
                               "Operation failed. See the server logs for more information."),
                       Operation::kDecrypt);
  ASSERT_FALSE(payload.ok());
  EXPECT_EQ(payload.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(payload.error().message(),
            "KMIP Decrypt failed: General Failure: Operation failed. See the server logs for more "
            "information. (the KMS server failed and gave no cause; the disk header is not known "
            "to be at fault; the server's log may say more)");
  auto tag_mismatch =
      response_payload(failure(Operation::kDecrypt, 0x0A, "bad tag"), Operation::kDecrypt);
  ASSERT_FALSE(tag_mismatch.ok());
  EXPECT_EQ(tag_mismatch.error().message(),
            "KMIP Decrypt failed: Cryptographic Failure: bad tag (the server could not "
            "authenticate the wrapped key: the wrap or its encryption context is not what this "
            "key wrapped)");
  auto invalid = response_payload(failure(Operation::kEncrypt, 0x07, "no"), Operation::kEncrypt);
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(invalid.error().message(),
            "KMIP Encrypt failed: Invalid Field: no (the server did not accept the request "
            "envcrypt sent)");
}

// The server's words are hostile text: control bytes and backslashes are
// escaped, and only so much is quoted.
TEST(KmipMessagesTest, ServerResultMessageIsEscapedAndBounded) {
  auto payload =
      response_payload(failure(Operation::kDecrypt, 0x0C, "denied\nENVCRYPT_UNIT=x\n\x1b[2J\\"),
                       Operation::kDecrypt);
  ASSERT_FALSE(payload.ok());
  EXPECT_EQ(payload.error().message(),
            "KMIP Decrypt failed: Permission Denied: denied\\x0aENVCRYPT_UNIT=x\\x0a\\x1b[2J"
            "\\x5c");
  auto long_message = response_payload(failure(Operation::kDecrypt, 0x0C, std::string(300, 'a')),
                                       Operation::kDecrypt);
  ASSERT_FALSE(long_message.ok());
  EXPECT_EQ(long_message.error().message(),
            "KMIP Decrypt failed: Permission Denied: " + std::string(256, 'a') + "...");
}

// An Encrypt response payload carrying the server's own 12-byte IV (what a
// FIPS-mode server does), byte for byte: Unique Identifier "1", Data
// de ad be ef, IV/Counter/Nonce 0x01..0x0c, Authenticated Encryption Tag
// 16 x 0xaa.
const Bytes kEncryptResponseWithIv = {
    0x42, 0x00, 0x7C, 0x01, 0x00, 0x00, 0x00, 0x50,                                            //
    0x42, 0x00, 0x94, 0x07, 0x00, 0x00, 0x00, 0x01, 0x31, 0,    0,    0,    0,    0,    0, 0,  //
    0x42, 0x00, 0xC2, 0x08, 0x00, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef, 0,    0,    0, 0,  //
    0x42, 0x00, 0x3D, 0x08, 0x00, 0x00, 0x00, 0x0C, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,        //
    0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0,    0,    0,    0,                                   //
    0x42, 0x00, 0xFF, 0x08, 0x00, 0x00, 0x00, 0x10, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,        //
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};

TEST(KmipMessagesTest, ServerGeneratedIvIsParsedAndIsTheWrapsNonce) {
  auto payload = decode(kEncryptResponseWithIv);
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  auto sealed = parse_encrypt(*payload);
  ASSERT_TRUE(sealed.ok()) << sealed.error().message();
  const Bytes server_iv = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  EXPECT_EQ(sealed->iv, server_iv);
  EXPECT_EQ(sealed->data, Bytes({0xde, 0xad, 0xbe, 0xef}));
  EXPECT_EQ(sealed->tag, Bytes(16, 0xaa));
  // The nonce the client sent is not the one the wrap opens with.
  const Bytes sent(12, 0x77);
  auto nonce = wrap_nonce(sent, *sealed);
  ASSERT_TRUE(nonce.ok());
  EXPECT_EQ(*nonce, server_iv);
}

TEST(KmipMessagesTest, WithoutAServerIvTheSentNonceIsKept) {
  Bytes bytes = kEncryptResponseWithIv;
  // The same payload without the IV item (24 bytes shorter).
  bytes.erase(bytes.begin() + 40, bytes.begin() + 64);
  bytes[7] = 0x38;
  auto payload = decode(bytes);
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  auto sealed = parse_encrypt(*payload);
  ASSERT_TRUE(sealed.ok()) << sealed.error().message();
  EXPECT_TRUE(sealed->iv.empty());
  const Bytes sent(12, 0x77);
  EXPECT_EQ(wrap_nonce(sent, *sealed).value(), sent);
}

TEST(KmipMessagesTest, AServerIvAHeaderCannotHoldIsRefused) {
  Ciphertext sealed{Bytes(64, 1), Bytes(16, 2), Bytes(16, 3)};  // PyKMIP's AES-block-size IV
  auto nonce = wrap_nonce(Bytes(12, 0x77), sealed);
  ASSERT_FALSE(nonce.ok());
  EXPECT_EQ(nonce.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(nonce.error().message(),
            "KMIP Encrypt answered with a 16-byte IV of the server's choosing; an envcrypt "
            "header holds a 12-byte GCM nonce");
  Bytes bytes = kEncryptResponseWithIv;
  bytes[43] = 0x07;  // the IV as a Text String
  auto payload = decode(bytes);
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  auto refused = parse_encrypt(*payload);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "malformed KMIP response: IV/Counter/Nonce is not a non-empty Byte String");
}

TEST(KmipMessagesTest, EncryptWithoutANonceAsksTheServerForOne) {
  const Bytes aad = {'c'};
  const Ttlv request = encrypt_request("7", Bytes(64, 0x33), {{}, aad});
  EXPECT_EQ(request.find(tag::kIvCounterNonce), nullptr);
  EXPECT_NE(request.find(tag::kAuthenticatedEncryptionAdditionalData), nullptr);
  const Bytes nonce(12, 0x11);
  EXPECT_NE(encrypt_request("7", Bytes(64, 0x33), {nonce, aad}).find(tag::kIvCounterNonce),
            nullptr);
}

TEST(KmipMessagesTest, MalformedResponsesAreRefused) {
  // Not a response, no header, no status, two batch items, payload of the
  // wrong type: each a kKmsUnreachable "malformed KMIP response".
  std::vector<Ttlv> bad = {
      Ttlv::structure(tag::kRequestMessage),
      Ttlv::structure(tag::kResponseMessage, {Ttlv::structure(tag::kBatchItem)}),
      response(Operation::kCreate, {}),
      response(Operation::kCreate, {Ttlv::integer(tag::kResultStatus, 0)}),
      response(Operation::kCreate,
               {Ttlv::enumeration(tag::kResultStatus, 0), Ttlv::text(tag::kResponsePayload, "x")}),
  };
  Ttlv doubled = response(Operation::kCreate, {Ttlv::enumeration(tag::kResultStatus, 0)});
  doubled.add(Ttlv::structure(tag::kBatchItem));
  bad.push_back(doubled);
  for (const Ttlv& message : bad) {
    auto payload = response_payload(message, Operation::kCreate);
    ASSERT_FALSE(payload.ok());
    EXPECT_EQ(payload.error().code(), ErrorCode::kKmsUnreachable);
    EXPECT_NE(payload.error().message().find("malformed KMIP response"), std::string::npos)
        << payload.error().message();
  }
}

TEST(KmipMessagesTest, ParsesEncryptDecryptAndAttributes) {
  const Ttlv encrypted = Ttlv::structure(
      tag::kResponsePayload,
      {Ttlv::text(tag::kUniqueIdentifier, "1"), Ttlv::bytes(tag::kData, Bytes(64, 1)),
       Ttlv::bytes(tag::kAuthenticatedEncryptionTag, Bytes(16, 2))});
  auto sealed = parse_encrypt(encrypted);
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->data.size(), 64U);
  EXPECT_EQ(sealed->tag, Bytes(16, 2));

  const Ttlv short_tag = Ttlv::structure(
      tag::kResponsePayload, {Ttlv::bytes(tag::kData, Bytes(64, 1)),
                              Ttlv::bytes(tag::kAuthenticatedEncryptionTag, Bytes(12, 2))});
  EXPECT_FALSE(parse_encrypt(short_tag).ok());
  const Ttlv no_tag =
      Ttlv::structure(tag::kResponsePayload, {Ttlv::bytes(tag::kData, Bytes(64, 1))});
  EXPECT_FALSE(parse_encrypt(no_tag).ok());

  auto plaintext = parse_decrypt(encrypted);
  ASSERT_TRUE(plaintext.ok());
  EXPECT_TRUE(plaintext->equals(Bytes(64, 1)));

  const Ttlv attributes = Ttlv::structure(
      tag::kResponsePayload,
      {Ttlv::text(tag::kUniqueIdentifier, "1"),
       Ttlv::structure(tag::kAttribute, {Ttlv::text(tag::kAttributeName, "State"),
                                         Ttlv::enumeration(tag::kAttributeValue, 2)}),
       Ttlv::structure(
           tag::kAttribute,
           {Ttlv::text(tag::kAttributeName, "Name"),
            Ttlv::structure(tag::kAttributeValue, {Ttlv::text(tag::kNameValue, "a"),
                                                   Ttlv::enumeration(tag::kNameType, 1)})})});
  auto parsed = parse_get_attributes(attributes);
  ASSERT_TRUE(parsed.ok());
  ASSERT_NE(parsed->first("State"), nullptr);
  EXPECT_EQ(static_cast<State>(parsed->first("State")->number()), State::kActive);
  EXPECT_EQ(parsed->all("Name").size(), 1U);
  EXPECT_EQ(parsed->first("Initial Date"), nullptr);
}

// Whatever the server sends, parsing ends in a value or an Error: random
// mutations of valid responses, decoded and then read by every parser.
TEST(KmipMessagesTest, MutatedResponsesNeverCrashTheParsers) {
  const std::vector<Bytes> seeds = {
      encode(response(
          Operation::kEncrypt,
          {Ttlv::enumeration(tag::kResultStatus, 0),
           Ttlv::structure(
               tag::kResponsePayload,
               {Ttlv::text(tag::kUniqueIdentifier, "1"), Ttlv::bytes(tag::kData, Bytes(64, 1)),
                Ttlv::bytes(tag::kAuthenticatedEncryptionTag, Bytes(16, 2))})})),
      encode(failure(Operation::kDecrypt, 0x0C, "denied")),
      encode(response(
          Operation::kGetAttributes,
          {Ttlv::enumeration(tag::kResultStatus, 0),
           Ttlv::structure(
               tag::kResponsePayload,
               {Ttlv::text(tag::kUniqueIdentifier, "1"),
                Ttlv::structure(tag::kAttribute, {Ttlv::text(tag::kAttributeName, "State"),
                                                  Ttlv::enumeration(tag::kAttributeValue, 2)}),
                Ttlv::structure(tag::kProtocolVersion,
                                {Ttlv::integer(tag::kProtocolVersionMajor, 1),
                                 Ttlv::integer(tag::kProtocolVersionMinor, 4)})})})),
  };
  const std::vector<Operation> operations = {Operation::kEncrypt, Operation::kDecrypt,
                                             Operation::kGetAttributes};
  std::mt19937 random(4);
  int parsed = 0;
  for (int round = 0; round < 30000; ++round) {
    const std::size_t which = random() % seeds.size();
    Bytes mutated = seeds[which];
    for (int edit = 0; edit < 1 + static_cast<int>(random() % 3); ++edit) {
      mutated[random() % mutated.size()] = static_cast<std::uint8_t>(random());
    }
    auto decoded = decode(mutated);
    if (!decoded.ok()) {
      continue;
    }
    auto payload = response_payload(*decoded, operations[which]);
    if (!payload.ok()) {
      EXPECT_FALSE(payload.error().message().empty());
      continue;
    }
    ++parsed;
    (void)parse_encrypt(*payload);
    (void)parse_decrypt(*payload);
    (void)parse_get_attributes(*payload);
    (void)parse_locate(*payload);
    (void)parse_unique_identifier(*payload);
    (void)parse_discover_versions(*payload);
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace envcrypt::kmip
