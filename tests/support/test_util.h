#pragma once

// Small helpers for every test suite.

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lamina::test {

// A fresh directory under $LAMINA_TEST_TMP (default /var/tmp, a real disk
// filesystem, not tmpfs) removed with everything in it (mounts under it are
// detached first) when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "lamina-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Paths of the built binaries.
std::string LaminaBinary();      // <build>/cli/lamina
std::string LaminaFuseBinary();  // <build>/fuse/lamina-fuse

struct CommandResult {
  int status = -1;  // exit status, 128+signal when killed
  std::string out;
  std::string err;
};
// Runs argv and captures both streams.
CommandResult Run(const std::vector<std::string>& argv);
// Runs `lamina` with the args.
CommandResult RunLamina(const std::vector<std::string>& args);

// Writes `data` to `path` (creating it, 0644); fails the test on error.
void WriteFile(const std::string& path, const std::string& data);
std::string ReadFileOrDie(const std::string& path);
// Writes `size` bytes of incompressible data (xorshift from `seed`) to
// `path`; fails the test on error.
void WriteNoise(const std::string& path, size_t size, uint64_t seed);

// Unmounts every mount at or below `dir` (lazy, deepest first). For cleanup.
void UnmountAllBelow(const std::string& dir);

// The unprivileged account the project's scripts create for rootless tests
// ("lamina-test"); 0 when it does not exist.
uid_t TestUserUid();

bool IsRoot();

}  // namespace lamina::test
