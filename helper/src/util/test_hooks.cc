// Compiled twice (helper/CMakeLists.txt): with ENVCRYPT_TEST_HOOKS into the
// test programs, without it into everything else.  See test_hooks.h.
#include "util/test_hooks.h"

#ifdef ENVCRYPT_TEST_HOOKS
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#endif

namespace envcrypt {

#ifdef ENVCRYPT_TEST_HOOKS

namespace {

[[noreturn]] void pause_forever(const std::string& point) {
  std::fprintf(stderr, "envcryptctl: fault injection: paused at %s\n", point.c_str());
  std::fflush(stderr);
  for (;;) {
    ::pause();
  }
}

// Undoes main's dump protection (as root: the hard limit is 0 too).
[[noreturn]] void abort_with_core() {
  const rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
  if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || ::setrlimit(RLIMIT_CORE, &unlimited) != 0) {
    std::perror("envcryptctl: fault injection: cannot allow core dumps");
  }
  std::abort();
}

}  // namespace

void fault_point(std::string_view point) {
  const char* spec = std::getenv("ENVCRYPT_FAULT");
  if (spec == nullptr) {
    return;
  }
  const std::string wanted(point);
  const std::string value(spec);
  if (value == wanted) {
    ::kill(::getpid(), SIGKILL);
  } else if (value == wanted + ":pause") {
    pause_forever(wanted);
  } else if (value == wanted + ":abort") {
    std::abort();
  } else if (value == wanted + ":dump") {
    abort_with_core();
  }
}

#else

void fault_point(std::string_view /*point*/) {}

#endif

}  // namespace envcrypt
