#pragma once

// A real, small filesystem on a loop device for tests: ENOSPC on a tiny fs,
// FICLONE on xfs with reflink, ext4 behaviour, ...
//
//   auto fs = LoopFs::Make({.type = "xfs", .size_mib = 300});
//   if (!fs) GTEST_SKIP() << fs.error();
//   WriteFile((*fs)->Sub("a"), "...");
//
// The image is a sparse file in a TempDir. The destructor (also when the
// test fails) unmounts (lazily if busy), detaches the loop device and removes
// the image and the directories.

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_util.h"

namespace lamina::test {

struct LoopFsOptions {
  // "xfs" (made with `-m reflink=1`, so FICLONE works), "ext4", or any type
  // with a mkfs.<type>. xfsprogs refuses filesystems under 300 MiB.
  std::string type = "ext4";
  uint64_t size_mib = 64;
  // Extra arguments for mkfs (before the image path).
  std::vector<std::string> mkfs_args;
  // Mount options ("-o"), e.g. "noatime"; empty for none.
  std::string mount_options;
};

class LoopFs {
 public:
  // Makes, formats and mounts the filesystem. On failure: a human reason
  // suitable for GTEST_SKIP() (not root, no loop device, no mkfs.<type>) or
  // for a test failure; nothing is left behind.
  static std::expected<std::unique_ptr<LoopFs>, std::string> Make(const LoopFsOptions& options);

  ~LoopFs();
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;

  // The mount point (the root of the new filesystem).
  const std::string& path() const { return mount_point_; }
  std::string Sub(const std::string& rel) const { return mount_point_ + "/" + rel; }
  const std::string& device() const { return device_; }  // "/dev/loopN"
  const std::string& type() const { return type_; }

  // Unmounts and detaches now (the destructor does it otherwise). Returns an
  // error text, empty on success.
  std::string Release();

 private:
  LoopFs() = default;
  std::unique_ptr<TempDir> dir_;
  std::string image_;
  std::string mount_point_;
  std::string device_;
  std::string type_;
  bool mounted_ = false;
};

}  // namespace lamina::test
