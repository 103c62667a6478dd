// libFuzzer target: the lamina-fuse command line (see FuzzFuseOptions).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "tests/support/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string wrong = lamina::test::FuzzFuseOptions({reinterpret_cast<const char*>(data), size});
  if (!wrong.empty()) {
    std::fprintf(stderr, "fuse_options: %s\n", wrong.c_str());
    std::abort();
  }
  return 0;
}
