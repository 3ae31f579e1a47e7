#include "device/keyring.h"

#include <cerrno>
#include <cstring>
#include <utility>

namespace envcrypt {

Result<ThreadLogonKey> ThreadLogonKey::add(const std::string& description,
                                           const SecretBytes& payload) {
  if (description.find(':') == std::string::npos) {
    return Error(ErrorCode::kInternal, "logon key description '" + description + "' lacks ':'");
  }
  const key_serial_t serial = add_key("logon", description.c_str(), payload.data(), payload.size(),
                                      KEY_SPEC_THREAD_KEYRING);
  if (serial < 0) {
    const int err = errno;
    return error_from_errno(err == EDQUOT ? ErrorCode::kDenied : ErrorCode::kInternal,
                            "add logon key to the thread keyring", err);
  }
  return ThreadLogonKey(serial, description);
}

ThreadLogonKey::ThreadLogonKey(ThreadLogonKey&& other) noexcept
    : serial_(std::exchange(other.serial_, 0)), description_(std::move(other.description_)) {}

void ThreadLogonKey::remove() {
  if (serial_ <= 0) {
    return;
  }
  // Invalidate unlinks the key from every keyring and has the garbage
  // collector free it at once.  Should it be refused, revoking still makes
  // the payload unusable, and unlinking drops the thread keyring's link.
  if (keyctl_invalidate(serial_) != 0) {
    (void)keyctl_revoke(serial_);
    (void)keyctl_unlink(serial_, KEY_SPEC_THREAD_KEYRING);
  }
  serial_ = 0;
}

}  // namespace envcrypt
