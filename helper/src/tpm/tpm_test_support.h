// A real software TPM (swtpm) for the unit tests that need one
// (tpm_seal_test.cc, keystore_backup_test.cc): its own state directory, on
// a free pair of loopback ports.  Tests skip when swtpm is not installed.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace envcrypt::tpm_testing {

inline constexpr const char* kSwtpm = "/usr/bin/swtpm";

// Binds a loopback TCP socket to `port` (0: any) as swtpm binds its own,
// without SO_REUSEADDR, so a port in TIME_WAIT counts as taken; -1 if not.
inline int bind_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline int port_of(int fd) {
  sockaddr_in address{};
  socklen_t size = sizeof(address);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size), 0);
  return ntohs(address.sin_port);
}

// A TCP port P such that P and P + 1 are both free now (swtpm's TCTI
// finds the control channel at P + 1).  The sockets of rejected ports stay
// bound until the end, so that the kernel offers another each time.
inline int free_port_pair() {
  std::vector<int> held;
  int found = 0;
  for (int attempt = 0; attempt < 50 && found == 0; ++attempt) {
    const int fd = bind_loopback(0);
    if (fd < 0) {
      break;
    }
    held.push_back(fd);
    const int port = port_of(fd);
    const int next = port < 65535 ? bind_loopback(port + 1) : -1;
    if (next >= 0) {
      ::close(next);
      found = port;
    }
  }
  for (const int fd : held) {
    ::close(fd);
  }
  return found;
}

// A real software TPM (swtpm) with its own state, for one test, on
// 127.0.0.1 (its commands on a free port, its control channel on the next).
class Swtpm {
 public:
  explicit Swtpm(const std::filesystem::path& state) : state_(state) {
    std::filesystem::create_directories(state_);
    // Another process may take a port between our look and swtpm's bind:
    // a start that does not answer on both ports is tried on new ones.
    for (int attempt = 0; attempt < 5 && !start(); ++attempt) {
      stop();
    }
  }
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;
  ~Swtpm() { stop(); }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // Starts swtpm on a free port and the next one (tpm2-tss's swtpm TCTI
  // finds the control channel at port + 1); true once both accept.
  bool start() {
    port_ = free_port_pair();
    const int ctrl = port_ + 1;
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string server = "type=tcp,port=" + std::to_string(port_);
      const std::string control = "type=tcp,port=" + std::to_string(ctrl);
      const std::string dir = "dir=" + state_.string();
      ::execl(kSwtpm, kSwtpm, "socket", "--tpm2", "--server", server.c_str(), "--ctrl",
              control.c_str(), "--tpmstate", dir.c_str(), "--flags", "not-need-init,startup-clear",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // it exited: a port was taken
        return false;
      }
      if (tcti_answers()) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Ready means what the code under test needs: the TCTI connects.
  [[nodiscard]] bool tcti_answers() const {
    TSS2_TCTI_CONTEXT* context = nullptr;
    if (Tss2_TctiLdr_Initialize(tcti().c_str(), &context) != TSS2_RC_SUCCESS) {
      return false;
    }
    Tss2_TctiLdr_Finalize(&context);
    return true;
  }

  [[nodiscard]] std::string tcti() const {
    return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
  }

  // Extends PCR `pcr` of the SHA-256 bank, as a measured boot would.
  void extend(std::uint32_t pcr) const {
    TSS2_TCTI_CONTEXT* tcti_context = nullptr;
    ASSERT_EQ(Tss2_TctiLdr_Initialize(tcti().c_str(), &tcti_context), TSS2_RC_SUCCESS);
    ESYS_CONTEXT* esys = nullptr;
    ASSERT_EQ(Esys_Initialize(&esys, tcti_context, nullptr), TSS2_RC_SUCCESS);
    TPML_DIGEST_VALUES digests{};
    digests.count = 1;
    digests.digests[0].hashAlg = TPM2_ALG_SHA256;
    digests.digests[0].digest.sha256[31] = 1;
    EXPECT_EQ(Esys_PCR_Extend(esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &digests),
              TSS2_RC_SUCCESS);
    Esys_Finalize(&esys);
    Tss2_TctiLdr_Finalize(&tcti_context);
  }

 private:
  std::filesystem::path state_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace envcrypt::tpm_testing
