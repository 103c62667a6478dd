#pragma once

// Builds tar files for tests, entry by entry, with libarchive's writer (PAX
// format): ordinary layers, OCI whiteouts, and hostile input ("../" names,
// absolute names, links leading out, absurd sizes, truncated streams).
// The result is the tar's bytes, plain or compressed.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

struct archive;  // libarchive

namespace lamina::test {

enum class TarCompression { kNone, kGzip, kZstd, kBzip2, kXz };

struct TarEntry {
  enum class Type { kFile, kDir, kSymlink, kHardlink, kChar, kBlock, kFifo };
  std::string path;  // written as is (may be hostile)
  Type type = Type::kFile;
  std::string data;  // kFile content
  std::string link;  // kSymlink target or kHardlink target path
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 1700000000;
  long mtime_nsec = 0;
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
  std::map<std::string, std::string> xattrs;  // written as SCHILY.xattr.*
};

class TarBuilder {
 public:
  TarBuilder();
  ~TarBuilder();
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;

  TarBuilder& Add(const TarEntry& entry);
  TarBuilder& File(const std::string& path, const std::string& data, mode_t mode = 0644);
  TarBuilder& Dir(const std::string& path, mode_t mode = 0755);
  TarBuilder& Symlink(const std::string& path, const std::string& target);
  TarBuilder& Hardlink(const std::string& path, const std::string& target);
  TarBuilder& Fifo(const std::string& path, mode_t mode = 0644);
  TarBuilder& CharDev(const std::string& path, unsigned major, unsigned minor);
  // An entry header claiming `size` bytes of data; the tar ends right after
  // the header (no data, no end blocks): Finish() gives the truncated stream.
  TarBuilder& HugeFileHeader(const std::string& path, uint64_t size);

  // The tar's bytes (end-of-archive blocks included unless a HugeFileHeader
  // cut it short), compressed as asked. Call once.
  std::string Finish(TarCompression compression = TarCompression::kNone);

 private:
  struct Sink;
  std::unique_ptr<Sink> sink_;
  struct archive* archive_ = nullptr;
};

// Compresses `data` with libarchive's filter ("raw" format).
std::string Compress(const std::string& data, TarCompression compression);

// Runs `body` in a forked child that switched to uid/gid (setresgid,
// setresuid) and hands back what it returned. status: the child's exit
// status (0 when body ran; 2 when the switch failed; 128+signal if killed).
struct ChildResult {
  int status = -1;
  std::string output;
};
ChildResult RunAsUser(uid_t uid, gid_t gid, const std::function<std::string()>& body);

// Writes `data` to a new file at `path`; fails the test on error.
void WriteTarFile(const std::string& path, const std::string& data);

}  // namespace lamina::test
