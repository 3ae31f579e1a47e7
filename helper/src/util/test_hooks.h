// Test hooks: named points where the crash tests make envcryptctl die or
// wait, chosen by the environment:
//
//   ENVCRYPT_FAULT=<point>        SIGKILL at <point> (nothing flushed, no core)
//   ENVCRYPT_FAULT=<point>:pause  print "envcryptctl: fault injection: paused
//                                 at <point>" on stderr and wait to be killed
//   ENVCRYPT_FAULT=<point>:abort  abort() at <point> (SIGABRT: a core file if
//                                 dumps were allowed, which they are not)
//   ENVCRYPT_FAULT=<point>:dump   allow core dumps again, then abort(): the
//                                 core shows what a dump would hold if the
//                                 process were made dumpable (by a debugger,
//                                 say): it must hold no key byte
//
// Points: image-encrypt:half and image-encrypt:copied (image_encrypt.h:
// halfway through the copy, and after it, before the header),
// rewrap:<step> (rewrap.h kRewrapSteps), attach:unwrapped (the DK
// has just been unwrapped, nothing mapped yet).
//
// Only test builds obey them.  The hooks live in their own library: every
// program gets the one that does nothing (envcrypt_no_test_hooks, which
// never reads the environment) unless CMake marks it a test program
// (helper/CMakeLists.txt: the unit tests, build/test/envcryptctl).  The
// release build/envcryptctl, the one `make install` installs, holds no hook
// code at all.
#pragma once

#include <string_view>

namespace envcrypt {

// Does what ENVCRYPT_FAULT asks at `point` in a test build; nothing otherwise.
void fault_point(std::string_view point);

}  // namespace envcrypt
