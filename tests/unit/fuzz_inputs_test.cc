// The fuzz targets' checks (tests/support/fuzz_inputs.h) over every input
// of their committed seed corpora and regression sets, in the normal build:
// tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/ (inputs
// that once failed a fuzz run; add a file there with each fix).

#include "tests/support/fuzz_inputs.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/fs.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

// Every input file of `target`, corpus and regressions.
std::vector<std::string> Inputs(const std::string& target) {
  std::vector<std::string> files;
  for (const char* set : {"corpus", "regressions"}) {
    fs::path dir = fs::path(LAMINA_SOURCE_DIR) / "tests/fuzz" / set / target;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_regular_file()) files.push_back(entry.path().string());
    }
  }
  return files;
}

TEST(FuzzInputs, FuseOptions) {
  auto files = Inputs("fuse_options");
  ASSERT_FALSE(files.empty());
  for (const auto& file : files) {
    EXPECT_EQ(test::FuzzFuseOptions(test::ReadFileOrDie(file)), "") << file;
  }
}

TEST(FuzzInputs, ImageParse) {
  auto files = Inputs("image_parse");
  ASSERT_FALSE(files.empty());
  for (const auto& file : files) {
    EXPECT_EQ(test::FuzzImageParse(test::ReadFileOrDie(file)), "") << file;
  }
}

TEST(FuzzInputs, TarApply) {
  auto files = Inputs("tar_apply");
  ASSERT_FALSE(files.empty());
  test::TempDir scratch;
  ASSERT_EQ(test::MakeTarScratch(scratch.path()), "");
  for (const auto& file : files) {
    EXPECT_EQ(test::FuzzTarApply(test::ReadFileOrDie(file), scratch.path()), "") << file;
  }
}

// The round-trip properties catch what they are meant to: a few hand-made
// command lines with every escape the grammar has.
TEST(FuzzInputs, FuseOptionsRoundTripsEscapes) {
  for (const char* input : {"-o\nlowerdir=/a\\:b:/c\\,d,upperdir=/u\\\\x,workdir=/w\n/m",
                            "-o\nlowerdir=\"/q,uoted\":/p,context=\"x,y\"\n/m",
                            "-o\nlowerdir=/l,uidmapping=0:1000:1:1:100000:65536\n/m"}) {
    EXPECT_EQ(test::FuzzFuseOptions(input), "") << input;
  }
}

}  // namespace
}  // namespace lamina
