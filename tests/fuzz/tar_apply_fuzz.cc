// libFuzzer target: OCI layer tar apply (see FuzzTarApply), in a private
// <TMPDIR>/lamina-fuzz-tar-XXXXXX removed at exit.

#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/fs.h"
#include "tests/support/fuzz_inputs.h"

namespace {

// Never destroyed: the exit handler needs it.
const std::string& Scratch() {
  static const std::string* scratch = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ =
        std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/lamina-fuzz-tar-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    if (!lamina::test::MakeTarScratch(templ).empty()) std::abort();
    std::atexit([] { (void)lamina::RemoveTree(Scratch()); });
    // Hostile input makes the apply warn at every other entry.
    spdlog::set_level(spdlog::level::off);
    return new std::string(templ);
  }();
  return *scratch;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string wrong =
      lamina::test::FuzzTarApply({reinterpret_cast<const char*>(data), size}, Scratch());
  if (!wrong.empty()) {
    std::fprintf(stderr, "tar_apply: %s\n", wrong.c_str());
    std::abort();
  }
  return 0;
}
