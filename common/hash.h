#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace lamina {

// xxHash3 64-bit of a buffer (fast, non-cryptographic: caches, tree checks).
uint64_t Xxh3(std::string_view data);

// Streaming xxHash3 64-bit.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void Update(const void* data, size_t size);
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Hash of a file's whole content (reads fd from offset 0 with pread).
Result<uint64_t> Xxh3File(int fd);

// Streaming SHA-256 (OpenSSL libcrypto), for OCI digests and DiffIDs.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t size);
  // Lower-case hex; call once.
  std::string HexDigest();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string Sha256Hex(std::string_view data);

}  // namespace lamina
