#pragma once

// The checks of the fuzz targets (tests/fuzz/*_fuzz.cc), each a function of
// one input, so that the unit tests run them too: over the seed corpora and
// over every input that once failed (tests/fuzz/regressions/<target>/, see
// tests/unit/fuzz_inputs_test.cc). Each returns what went wrong, "" when
// the input passed; crashes, leaks and hangs are for the sanitizers and
// libFuzzer to catch.

#include <string>
#include <string_view>

namespace lamina::test {

// The lamina-fuse command line, one argument per line of `input`: it parses
// or fails without crashing; what parses formats back (FormatOptions) into
// options that parse again into the same; EscapePath then SplitLowerDirs
// gives back each argument.
std::string FuzzFuseOptions(std::string_view input);

// The image document parsers (store/image_parse.h): every one runs on the
// input when it is JSON, and answers with a value or an error.
std::string FuzzImageParse(std::string_view input);

// The input as a layer tar (any compression), applied in both whiteout
// formats into `scratch`/root, which is removed again. `scratch` is an
// existing directory holding only the file "canary" (see MakeTarScratch):
// nothing may appear beside root, and the canary must not change.
std::string FuzzTarApply(std::string_view input, const std::string& scratch);
// Writes the canary into an empty directory `scratch`.
std::string MakeTarScratch(const std::string& scratch);

}  // namespace lamina::test
