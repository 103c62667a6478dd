#include "common/hash.h"

#include <openssl/evp.h>
#include <unistd.h>
#include <xxhash.h>

namespace lamina {

uint64_t Xxh3(std::string_view data) { return XXH3_64bits(data.data(), data.size()); }

struct Xxh3Stream::State {
  XXH3_state_t* st = XXH3_createState();
  ~State() { XXH3_freeState(st); }
};

Xxh3Stream::Xxh3Stream() : state_(std::make_unique<State>()) { XXH3_64bits_reset(state_->st); }
Xxh3Stream::~Xxh3Stream() = default;
void Xxh3Stream::Update(const void* data, size_t size) {
  XXH3_64bits_update(state_->st, data, size);
}
uint64_t Xxh3Stream::Digest() const { return XXH3_64bits_digest(state_->st); }

Result<uint64_t> Xxh3File(int fd) {
  Xxh3Stream hash;
  std::string buf(1 << 20, '\0');
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read for hash");
    }
    if (n == 0) break;
    hash.Update(buf.data(), static_cast<size_t>(n));
    off += n;
  }
  return hash.Digest();
}

struct Sha256::State {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~State() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
}
Sha256::~Sha256() = default;
void Sha256::Update(const void* data, size_t size) { EVP_DigestUpdate(state_->ctx, data, size); }
std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->ctx, md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data.data(), data.size());
  return h.HexDigest();
}

}  // namespace lamina
