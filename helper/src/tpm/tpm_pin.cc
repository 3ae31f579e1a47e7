#include "tpm/tpm_pin.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace envcrypt {
namespace {

constexpr std::size_t kMaxPin = 256;
constexpr const char* kAskPassword = "/bin/systemd-ask-password";

// Reads one line (without its newline) from `fd` into locked memory.
Result<SecretBytes> read_line(int fd, const std::string& what) {
  SecretBytes buffer(kMaxPin + 1);
  std::size_t size = 0;
  while (size < buffer.size()) {
    char c = 0;
    const ssize_t got = ::read(fd, &c, 1);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0 || c == '\n') {
      break;
    }
    buffer.data()[size++] = static_cast<std::uint8_t>(c);
  }
  if (size > kMaxPin) {
    return Error(ErrorCode::kUsage, what + ": a PIN has at most 256 characters");
  }
  if (size == 0) {
    return Error(ErrorCode::kDenied, what + ": no PIN given");
  }
  return SecretBytes(buffer.data(), size);
}

// Prompts on the controlling terminal with echo off.
Result<SecretBytes> ask_terminal(int tty, const std::string& prompt) {
  termios saved{};
  const bool has_termios = ::tcgetattr(tty, &saved) == 0;
  if (has_termios) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    (void)::tcsetattr(tty, TCSAFLUSH, &quiet);
  }
  const std::string line = prompt + ": ";
  (void)!::write(tty, line.data(), line.size());
  Result<SecretBytes> pin = read_line(tty, "terminal");
  (void)!::write(tty, "\n", 1);
  if (has_termios) {
    (void)::tcsetattr(tty, TCSAFLUSH, &saved);
  }
  return pin;
}

// Runs systemd-ask-password, which reaches the boot's password agents.
Result<SecretBytes> ask_systemd(const std::string& prompt) {
  std::array<int, 2> pipe_fds{};
  if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0) {
    return error_from_errno(ErrorCode::kIo, "pipe", errno);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  std::string timeout = "--timeout=90";
  std::string id = "--id=envcrypt:tpm-pin";
  std::string text = prompt;
  std::array<char*, 5> argv = {const_cast<char*>(kAskPassword), timeout.data(), id.data(),
                               text.data(), nullptr};
  pid_t child = 0;
  const int spawned = ::posix_spawn(&child, kAskPassword, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    return error_from_errno(ErrorCode::kDenied, std::string("run ") + kAskPassword, spawned);
  }
  Result<SecretBytes> pin = read_line(pipe_fds[0], "systemd-ask-password");
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(ErrorCode::kDenied, "systemd-ask-password gave no PIN (timed out or cancelled)");
  }
  return pin;
}

}  // namespace

Result<SecretBytes> ask_tpm_pin(const std::string& prompt) {
  if (const char* env = std::getenv("ENVCRYPT_TPM_PIN"); env != nullptr && *env != '\0') {
    if (std::strlen(env) > kMaxPin) {
      return Error(ErrorCode::kUsage, "ENVCRYPT_TPM_PIN: a PIN has at most 256 characters");
    }
    return SecretBytes(reinterpret_cast<const std::uint8_t*>(env), std::strlen(env));
  }
  const int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty >= 0) {
    Result<SecretBytes> pin = ask_terminal(tty, prompt);
    ::close(tty);
    return pin;
  }
  if (::access(kAskPassword, X_OK) == 0) {
    Result<SecretBytes> pin = ask_systemd(prompt);
    if (!pin.ok()) {
      return pin.error().with_context(prompt);
    }
    return pin;
  }
  return Error(ErrorCode::kDenied, prompt +
                                       ": no terminal and no systemd-ask-password to ask for it "
                                       "(set ENVCRYPT_TPM_PIN)");
}

Result<SecretBytes> ask_new_tpm_pin(const std::string& prompt) {
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes pin, ask_tpm_pin(prompt));
  if (std::getenv("ENVCRYPT_TPM_PIN") != nullptr) {
    return pin;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes again, ask_tpm_pin(prompt + " (again)"));
  if (!pin.equals(again.span())) {
    return Error(ErrorCode::kUsage, "the two PINs differ: nothing sealed");
  }
  return pin;
}

}  // namespace envcrypt
