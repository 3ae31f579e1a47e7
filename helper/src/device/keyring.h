// The data key's only way into the kernel: a `logon` key (unreadable from
// user space) in this thread's keyring, where request_key() finds it while
// this thread loads the device-mapper table, and where no other process can
// reach it.  It is invalidated (freed and unlinked) as soon as the load
// returns, whatever the outcome.
#pragma once

#include <keyutils.h>

#include <string>

#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

class ThreadLogonKey {
 public:
  // `description` must be "<prefix>:<rest>", as the logon key type requires.
  static Result<ThreadLogonKey> add(const std::string& description, const SecretBytes& payload);

  ~ThreadLogonKey() { remove(); }
  ThreadLogonKey(ThreadLogonKey&& other) noexcept;
  ThreadLogonKey& operator=(ThreadLogonKey&&) = delete;
  ThreadLogonKey(const ThreadLogonKey&) = delete;
  ThreadLogonKey& operator=(const ThreadLogonKey&) = delete;

  // The reference a device-mapper table uses: "logon:<description>".
  [[nodiscard]] std::string reference() const { return "logon:" + description_; }

  // Destroys the key now; idempotent.
  void remove();

 private:
  ThreadLogonKey(key_serial_t serial, std::string description)
      : serial_(serial), description_(std::move(description)) {}

  key_serial_t serial_ = 0;
  std::string description_;
};

}  // namespace envcrypt
