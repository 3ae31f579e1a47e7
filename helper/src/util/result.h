// Errors as values: every fallible call returns Result<T>, which holds either
// a value or an Error.  Exceptions never cross module boundaries.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace envcrypt {

// The canonical classes of failure.  The numbers are stable: the
// attach-failure record and line keep them (volume/diagnostics.h).  The
// process exit code of each is chosen at the command line's edge
// (cli/exit_codes.h, envcryptctl(8)).
enum class ErrorCode : int {
  kInternal = 1,        // bug or unexpected library failure
  kUsage = 2,           // bad command line, config or argument
  kNotFound = 3,        // device, key, alias, mapping not found
  kDenied = 4,          // key disabled, pending deletion, no grant, wrong identity
  kCorrupt = 5,         // data fails validation: a header, wrapped key, keystore,
                        // backup, audit trail or sealed file that is damaged,
                        // tampered with or not ours
  kIo = 6,              // read/write/ioctl failure on a device or file
  kKmsUnreachable = 7,  // KMS endpoint cannot be reached, TLS failure, timeout
  kConflict = 8,        // already exists/attached, device busy, signature found
};

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  [[nodiscard]] ErrorCode code() const { return code_; }
  [[nodiscard]] const std::string& message() const { return message_; }

  // Prefixes context ("attach /dev/vdb: ") so the final message names the
  // object that failed as well as the reason.
  [[nodiscard]] Error with_context(const std::string& context) const {
    return {code_, context + ": " + message_};
  }

 private:
  ErrorCode code_;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const Error& error() const { return std::get<Error>(state_); }

 private:
  std::variant<T, Error> state_;
};

// The one error made from an errno value: "<what>: <strerror(err)>".  The
// caller passes errno's value as it was right after the failed call.
inline Error error_from_errno(ErrorCode code, const std::string& what, int err) {
  return {code, what + ": " + std::strerror(err)};
}

// Result<void>: success carries nothing.
struct Ok {};
using Status = Result<Ok>;
inline Status OkStatus() { return Ok{}; }

}  // namespace envcrypt

// Propagates an error from an expression returning Result<...>.
#define ENVCRYPT_TRY(expr)                 \
  do {                                     \
    auto envcrypt_try_result_ = (expr);    \
    if (!envcrypt_try_result_.ok()) {      \
      return envcrypt_try_result_.error(); \
    }                                      \
  } while (0)

#define ENVCRYPT_CONCAT_INNER_(a, b) a##b
#define ENVCRYPT_CONCAT_(a, b) ENVCRYPT_CONCAT_INNER_(a, b)

// Assigns the value of a Result<...> expression to `lhs`, or returns its error.
#define ENVCRYPT_ASSIGN_OR_RETURN(lhs, expr) \
  ENVCRYPT_ASSIGN_OR_RETURN_IMPL_(ENVCRYPT_CONCAT_(envcrypt_result_, __LINE__), lhs, expr)
#define ENVCRYPT_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) {                                      \
    return tmp.error();                                 \
  }                                                     \
  lhs = std::move(tmp).value()
