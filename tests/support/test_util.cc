#include "tests/support/test_util.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"

namespace lamina::test {

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("LAMINA_TEST_TMP");
  std::string tmpl =
      std::string(base != nullptr && *base ? base : "/var/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    return;
  }
  path_ = buf.data();
  ::chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  UnmountAllBelow(path_);
  auto removed = RemoveTree(path_);
  if (!removed) ADD_FAILURE() << "cleanup: " << removed.error().message();
}

std::string LaminaBinary() { return std::string(LAMINA_BINARY_DIR) + "/cli/lamina"; }
std::string LaminaFuseBinary() { return std::string(LAMINA_BINARY_DIR) + "/fuse/lamina-fuse"; }

CommandResult Run(const std::vector<std::string>& argv) {
  CommandResult result;
  auto status = RunCommand(argv, &result.out, &result.err);
  if (!status) {
    result.err = status.error().message();
    return result;
  }
  result.status = *status;
  return result;
}

CommandResult RunLamina(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {LaminaBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << "open " << path;
  out << data;
  ASSERT_TRUE(out.good()) << "write " << path;
}

void WriteNoise(const std::string& path, size_t size, uint64_t seed) {
  auto fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd) << fd.error().message();
  std::vector<uint64_t> block(1 << 17);
  uint64_t x = seed | 1;
  for (size_t done = 0; done < size;) {
    for (auto& word : block) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      word = x;
    }
    size_t n = std::min(size - done, block.size() * sizeof(uint64_t));
    ASSERT_EQ(::write(fd->get(), block.data(), n), static_cast<ssize_t>(n)) << "write " << path;
    done += n;
  }
}

std::string ReadFileOrDie(const std::string& path) {
  auto data = ReadFile(path);
  EXPECT_TRUE(data.has_value()) << (data ? "" : data.error().message());
  return data ? *data : std::string();
}

void UnmountAllBelow(const std::string& dir) {
  char real[PATH_MAX];
  if (::realpath(dir.c_str(), real) == nullptr) return;
  std::string root = real;
  std::vector<std::string> points;
  std::ifstream info("/proc/self/mountinfo");
  std::string line;
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, mroot, point;
    fields >> id >> parent >> devno >> mroot >> point;
    if (point == root || point.starts_with(root + "/")) points.push_back(point);
  }
  std::sort(points.begin(), points.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& p : points) {
    if (::umount2(p.c_str(), MNT_DETACH) != 0) {
      // A FUSE mount of another user's daemon: fusermount3 can detach it.
      std::string out, err;
      (void)RunCommand({"fusermount3", "-u", "-z", p}, &out, &err);
    }
  }
}

uid_t TestUserUid() {
  struct passwd* pw = ::getpwnam("lamina-test");
  return pw == nullptr ? 0 : pw->pw_uid;
}

bool IsRoot() { return ::geteuid() == 0; }

}  // namespace lamina::test
