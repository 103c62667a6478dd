// Unit tests of the layer store: metadata, the store lock, the tar feed, and
// the store itself on the driver the host selects.

#include "store/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "store/lock.h"
#include "store/metadata.h"
#include "store/tar_feed.h"
#include "tests/support/test_util.h"

namespace lamina::store {
namespace {

using test::TempDir;

// The store's own logic does not depend on the driver: these tests use the
// one the host selects (LAMINA_TEST_DRIVER names one), and skip when none is usable.
std::string TestDriver() {
  const char* name = std::getenv("LAMINA_TEST_DRIVER");
  return name != nullptr ? name : "";
}

#define OPEN_OR_SKIP(var, root)                                               \
  auto var##_opened = Store::Open(OpenOptions{(root), TestDriver(), {}, {}}); \
  if (!var##_opened && var##_opened.error().code() == ENODEV) {               \
    GTEST_SKIP() << "no usable driver: " << var##_opened.error().message();   \
  }                                                                           \
  ASSERT_TRUE(var##_opened) << var##_opened.error().message();                \
  Store& var = **var##_opened

// Runs `body` in a forked child; returns its exit status (the child exits 0
// when body returns true).
template <class F>
int InChild(F body) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(body() ? 0 : 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ReadAllFd(int fd) {
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

TEST(StoreMetadata, LayerRoundTrip) {
  LayerInfo layer;
  layer.id = "abc";
  layer.parent = "base";
  layer.created = NowRfc3339();
  layer.writable = true;
  layer.size = uint64_t{1} << 40;
  layer.diff_id = "sha256:" + std::string(64, 'e');
  layer.state = LayerState::kReady;
  auto parsed = ParseLayerInfo(FormatLayerInfo(layer));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, layer);
  layer.state = LayerState::kIncomplete;
  EXPECT_EQ(ParseLayerInfo(FormatLayerInfo(layer))->state, LayerState::kIncomplete);
}

TEST(StoreMetadata, CreatedIsRfc3339Utc) {
  std::string now = NowRfc3339();
  ASSERT_EQ(now.size(), 30u) << now;  // 2026-11-23T08:01:02.123456789Z
  EXPECT_EQ(now[4], '-');
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now[19], '.');
  EXPECT_EQ(now.back(), 'Z');
}

TEST(StoreMetadata, BadLayerJsonIsEinval) {
  const char* bad[] = {
      "",
      "[]",
      "{",
      R"({"id":"a","parent":"","created":"x","writable":false,"size":0,"diff_id":""})",
      R"({"id":"a","parent":"","created":"x","writable":"no","size":0,"diff_id":"","state":"ready"})",
      R"({"id":"a","parent":"","created":"x","writable":false,"size":-1,"diff_id":"","state":"ready"})",
      R"({"id":"a","parent":"","created":"x","writable":false,"size":0,"diff_id":"","state":"done"})",
  };
  for (const char* text : bad) {
    auto parsed = ParseLayerInfo(text);
    ASSERT_FALSE(parsed) << text;
    EXPECT_EQ(parsed.error().code(), EINVAL) << text;
  }
}

TEST(StoreMetadata, StoreConfigRoundTripAndBadInput) {
  StoreConfig config;
  config.driver = "overlay";
  config.xattr_ns = XattrNamespace::kUser;
  auto parsed = ParseStoreConfig(FormatStoreConfig(config));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, config);
  EXPECT_NE(FormatStoreConfig(config).find("\"xattr_namespace\": \"user\""), std::string::npos);

  for (const char* text : {R"({"version":2,"driver":"vfs","xattr_namespace":"user"})",
                           R"({"version":1,"driver":"vfs","xattr_namespace":"system"})",
                           R"({"version":1,"xattr_namespace":"user"})", "null"}) {
    auto bad = ParseStoreConfig(text);
    ASSERT_FALSE(bad) << text;
    EXPECT_EQ(bad.error().code(), EINVAL) << text;
  }
}

TEST(StoreDescribe, PrintsWhatPeopleNeed) {
  EXPECT_EQ(Describe(Error(ENOENT, "layer abc")), "layer abc: not found");
  EXPECT_EQ(Describe(Error(ENOENT, "parent layer p")), "parent layer p: not found");
  EXPECT_EQ(Describe(Error(EEXIST, "layer abc")), "layer abc: already exists");
  EXPECT_EQ(Describe(Error(EBUSY, "layer a is mounted")), "layer a is mounted");
  EXPECT_EQ(Describe(Error(EIO, "read x")), "read x: " + std::string(std::strerror(EIO)));
}

TEST(StoreLockTest, ExclusiveExcludesOthersSharedDoesNot) {
  TempDir dir;
  std::string path = dir.Sub("lock");
  {
    auto shared1 = StoreLock::Acquire(path, LockMode::kShared);
    ASSERT_TRUE(shared1) << shared1.error().message();
    // Another shared lock (another open file description) is fine...
    auto shared2 = StoreLock::TryAcquire(path, LockMode::kShared);
    EXPECT_TRUE(shared2);
    // ...an exclusive one is not, in this process or another.
    auto excl = StoreLock::TryAcquire(path, LockMode::kExclusive);
    ASSERT_FALSE(excl);
    EXPECT_EQ(excl.error().code(), EWOULDBLOCK);
    EXPECT_EQ(InChild([&] { return !StoreLock::TryAcquire(path, LockMode::kExclusive); }), 0);
  }
  auto excl = StoreLock::Acquire(path, LockMode::kExclusive);
  ASSERT_TRUE(excl);
  EXPECT_EQ(InChild([&] { return !StoreLock::TryAcquire(path, LockMode::kShared); }), 0);
}

TEST(StoreLockTest, ReleasedWhenHolderDies) {
  TempDir dir;
  std::string path = dir.Sub("lock");
  // The child takes the lock and is killed holding it: flock goes with it.
  pid_t pid = ::fork();
  if (pid == 0) {
    auto lock = StoreLock::Acquire(path, LockMode::kExclusive);
    ::raise(SIGKILL);
    ::_exit(1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(StoreLock::TryAcquire(path, LockMode::kExclusive));
}

// Compresses `data` with `argv` (gzip -c, zstd -c ...) through a file.
std::string Compress(const TempDir& dir, const std::string& data,
                     const std::vector<std::string>& argv) {
  test::WriteFile(dir.Sub("plain"), data);
  std::vector<std::string> cmd = argv;
  cmd.push_back(dir.Sub("plain"));
  std::string out, err;
  auto status = RunCommand(cmd, &out, &err);
  EXPECT_TRUE(status && *status == 0) << argv[0] << ": " << err;
  return out;
}

void ExpectFeedGives(const TempDir& dir, const std::string& input, const std::string& plain) {
  test::WriteFile(dir.Sub("input"), input);
  auto in = Open(dir.Sub("input"), O_RDONLY);
  ASSERT_TRUE(in);
  auto feed = TarFeed::Start(in->get());
  ASSERT_TRUE(feed) << feed.error().message();
  std::string got = ReadAllFd((*feed)->fd());
  auto digest = (*feed)->Finish();
  ASSERT_TRUE(digest) << digest.error().message();
  EXPECT_EQ(got.size(), plain.size());
  EXPECT_TRUE(got == plain);
  EXPECT_EQ(*digest, "sha256:" + Sha256Hex(plain));
}

TEST(StoreTarFeed, PassesPlainGzipAndZstdAsUncompressedWithDigest) {
  TempDir dir;
  std::string plain;
  for (int i = 0; i < 20000; ++i) plain += "line " + std::to_string(i * 7919 % 10007) + "\n";
  ExpectFeedGives(dir, plain, plain);
  ExpectFeedGives(dir, Compress(dir, plain, {"gzip", "-c"}), plain);
  if (RunCommand({"zstd", "--version"}, nullptr, nullptr).value_or(1) != 0) {
    GTEST_SKIP() << "zstd is not installed";
  }
  ExpectFeedGives(dir, Compress(dir, plain, {"zstd", "-q", "-c"}), plain);
}

TEST(StoreTarFeed, CorruptCompressedInputFails) {
  TempDir dir;
  std::string gz = Compress(dir, std::string(1 << 20, 'z') + "tail", {"gzip", "-c"});
  gz.resize(gz.size() / 2);  // truncated gzip stream
  test::WriteFile(dir.Sub("input"), gz);
  auto in = Open(dir.Sub("input"), O_RDONLY);
  ASSERT_TRUE(in);
  auto feed = TarFeed::Start(in->get());
  ASSERT_TRUE(feed);
  ReadAllFd((*feed)->fd());
  EXPECT_FALSE((*feed)->Finish());
}

TEST(StoreTarFeed, ReaderThatStopsEarlyDoesNotHang) {
  TempDir dir;
  test::WriteFile(dir.Sub("input"), std::string(8 << 20, 'a'));
  auto in = Open(dir.Sub("input"), O_RDONLY);
  ASSERT_TRUE(in);
  auto feed = TarFeed::Start(in->get());
  ASSERT_TRUE(feed);
  char buf[100];
  ASSERT_EQ(::read((*feed)->fd(), buf, sizeof(buf)), 100);
  // Finish still reads to the end for the digest.
  auto digest = (*feed)->Finish();
  ASSERT_TRUE(digest);
  EXPECT_EQ(*digest, "sha256:" + Sha256Hex(std::string(8 << 20, 'a')));
}

TEST(Store, OpenMakesTheLayoutAndRecordsTheDriver) {
  TempDir dir;
  std::string root = dir.Sub("store");
  OPEN_OR_SKIP(store, root);
  struct stat st;
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  for (const char* sub : {"layers", "images", "containers"}) {
    EXPECT_TRUE(PathExists(root + "/" + sub)) << sub;
  }
  auto config = ParseStoreConfig(test::ReadFileOrDie(root + "/store.json"));
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->driver, store.driver().Name());
  bool trusted = store.host().euid == 0 && !store.host().in_user_namespace;
  EXPECT_EQ(config->xattr_ns, trusted ? XattrNamespace::kTrusted : XattrNamespace::kUser);
  EXPECT_FALSE(store.why().empty());
  EXPECT_EQ(store.verdicts().size(), DriverNames().size());
}

// Opening probes only the driver the choice needs, and a usable verdict is
// kept for the boot: a later Open takes it instead of probing; a verdict
// whose key no longer matches (another boot, host, binary) is probed again.
TEST(Store, OpenProbesOnlyWhatItNeedsAndKeepsTheVerdict) {
  TempDir dir;
  std::string root = dir.Sub("store");
  std::string driver;
  {
    OPEN_OR_SKIP(store, root);
    driver = std::string(store.driver().Name());
    ASSERT_EQ(store.verdicts().size(), DriverNames().size());
    for (const auto& v : store.verdicts()) {
      if (v.name == driver) {
        EXPECT_TRUE(v.probed && v.result.usable) << v.name;
      } else if (!v.probed) {
        EXPECT_FALSE(v.result.usable) << v.name;
        EXPECT_NE(v.result.reason.find("not probed"), std::string::npos) << v.result.reason;
      }
    }
  }
  std::string cache = root + "/probe-" + driver + ".json";
  auto j = nlohmann::json::parse(test::ReadFileOrDie(cache));
  ASSERT_TRUE(j["usable"].get<bool>());
  j["reason"] = "kept from before";
  test::WriteFile(cache, j.dump());
  auto reason_now = [&]() -> std::string {
    auto store = Store::Open(OpenOptions{root, driver, {}, {}});
    EXPECT_TRUE(store) << store.error().message();
    if (!store) return {};
    for (const auto& v : (*store)->verdicts()) {
      if (v.name == driver) return v.result.reason;
    }
    return {};
  };
  EXPECT_EQ(reason_now(), "kept from before");
  j["key"] = "another boot";
  test::WriteFile(cache, j.dump());
  std::string probed = reason_now();
  EXPECT_NE(probed, "kept from before");
  EXPECT_FALSE(probed.empty());
  EXPECT_NE(test::ReadFileOrDie(cache).find(probed), std::string::npos) << "kept again";
}

TEST(Store, CreateGetListRemove) {
  TempDir dir;
  OPEN_OR_SKIP(store, dir.Sub("store"));
  auto base = store.CreateLayer("", false);
  ASSERT_TRUE(base) << base.error().message();
  EXPECT_EQ(base->size(), 64u);
  auto top = store.CreateLayer(*base, true, "top");
  ASSERT_TRUE(top) << top.error().message();
  EXPECT_EQ(*top, "top");

  auto info = store.GetLayer("top");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->parent, *base);
  EXPECT_TRUE(info->writable);
  EXPECT_EQ(info->state, LayerState::kReady);
  EXPECT_TRUE(info->diff_id.empty());
  auto on_disk = ParseLayerInfo(test::ReadFileOrDie(dir.Sub("store/layers/top/layer.json")));
  ASSERT_TRUE(on_disk);
  EXPECT_EQ(*on_disk, *info);

  auto list = store.ListLayers();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, *base);
  EXPECT_EQ((*list)[1].id, "top");

  auto taken = store.CreateLayer("", false, "top");
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code(), EEXIST);
  auto bad = store.CreateLayer("", false, "../x");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), EINVAL);
  auto orphan = store.CreateLayer("missing", false);
  ASSERT_FALSE(orphan);
  EXPECT_EQ(Describe(orphan.error()), "parent layer missing: not found");

  // A parent cannot go while a child is built on it.
  auto refused = store.RemoveLayer(*base);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), EBUSY);
  EXPECT_NE(refused.error().context().find("top"), std::string::npos);
  EXPECT_TRUE(store.GetLayer(*base));

  ASSERT_TRUE(store.RemoveLayer("top"));
  ASSERT_TRUE(store.RemoveLayer(*base));
  EXPECT_FALSE(PathExists(dir.Sub("store/layers/top")));
  auto gone = store.GetLayer("top");
  ASSERT_FALSE(gone);
  EXPECT_EQ(Describe(gone.error()), "layer top: not found");
  EXPECT_EQ(store.RemoveLayer("top").error().code(), ENOENT);
  EXPECT_TRUE(store.ListLayers()->empty());
}

TEST(Store, MountedLayerCannotBeRemoved) {
  TempDir dir;
  OPEN_OR_SKIP(store, dir.Sub("store"));
  ASSERT_TRUE(store.CreateLayer("", true, "c"));
  auto merged = store.Mount("c");
  if (!merged && merged.error().code() == ENOTSUP) GTEST_SKIP() << merged.error().message();
  ASSERT_TRUE(merged) << merged.error().message();
  auto refused = store.RemoveLayer("c");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), EBUSY);
  EXPECT_NE(refused.error().context().find("mounted"), std::string::npos);
  EXPECT_TRUE(store.GetLayer("c"));
  ASSERT_TRUE(store.Unmount("c"));
  EXPECT_EQ(store.Unmount("c").error().code(), EINVAL);
  EXPECT_TRUE(store.RemoveLayer("c"));
}

// Rewrites a layer's layer.json with another state, as a crash would leave it.
void MarkIncomplete(const std::string& root, const std::string& id) {
  std::string path = root + "/layers/" + id + "/layer.json";
  auto layer = ParseLayerInfo(test::ReadFileOrDie(path));
  ASSERT_TRUE(layer);
  layer->state = LayerState::kIncomplete;
  ASSERT_TRUE(WriteFileAtomic(path, FormatLayerInfo(*layer)));
}

TEST(Store, IncompleteLayersAndBareDirsAreRemovedAtOpen) {
  TempDir dir;
  std::string root = dir.Sub("store");
  {
    OPEN_OR_SKIP(store, root);
    ASSERT_TRUE(store.CreateLayer("", false, "good"));
    ASSERT_TRUE(store.CreateLayer("good", false, "half"));
    MarkIncomplete(root, "half");
    // Hidden from readers even before the next open cleans it up.
    EXPECT_FALSE(store.GetLayer("half"));
    EXPECT_EQ(store.ListLayers()->size(), 1u);
  }
  // A layer directory a crash left before layer.json was written.
  ASSERT_TRUE(MakeDirs(root + "/layers/bare/diff/etc"));
  test::WriteFile(root + "/layers/bare/diff/etc/passwd", "x");
  ASSERT_TRUE(MakeDirs(root + "/layers/empty"));
  // Not a layer name: left alone (a driver's or a temporary file).
  ASSERT_TRUE(MakeDirs(root + "/layers/.private"));
  // Not a layer either: what a driver keeps for itself (overlay's short links).
  ASSERT_TRUE(MakeDirs(root + "/layers/l"));
  ASSERT_EQ(::symlink("../good/diff", (root + "/layers/l/ABCDEFGH").c_str()), 0);

  OPEN_OR_SKIP(store, root);
  std::set<std::string> removed(store.removed_at_open().begin(), store.removed_at_open().end());
  EXPECT_EQ(removed, (std::set<std::string>{"bare", "empty", "half"}));
  EXPECT_FALSE(PathExists(root + "/layers/half"));
  EXPECT_FALSE(PathExists(root + "/layers/bare"));
  EXPECT_TRUE(PathExists(root + "/layers/.private"));
  EXPECT_TRUE(PathExists(root + "/layers/l/ABCDEFGH"));
  auto list = store.ListLayers();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().id, "good");
  // The id is free again.
  EXPECT_TRUE(store.CreateLayer("good", false, "half"));
}

TEST(Store, IncompleteLayerInUseIsNotTakenForALeftover) {
  TempDir dir;
  std::string root = dir.Sub("store");
  {
    OPEN_OR_SKIP(store, root);
    ASSERT_TRUE(store.CreateLayer("", false, "busy"));
  }
  MarkIncomplete(root, "busy");
  // What an apply at work holds while it writes content.
  auto use = StoreLock::Acquire(root + "/layers/busy/use.lock", LockMode::kExclusive);
  ASSERT_TRUE(use);
  {
    OPEN_OR_SKIP(store, root);
    EXPECT_TRUE(store.removed_at_open().empty());
    EXPECT_TRUE(PathExists(root + "/layers/busy"));
    auto rm = store.RemoveLayer("busy");
    ASSERT_FALSE(rm);
    EXPECT_EQ(rm.error().code(), EBUSY);
  }
  use = std::unexpected(Error());  // the apply died
  OPEN_OR_SKIP(store, root);
  EXPECT_EQ(store.removed_at_open(), std::vector<std::string>{"busy"});
}

TEST(Store, WritersWaitForTheLock) {
  TempDir dir;
  std::string root = dir.Sub("store");
  OPEN_OR_SKIP(store, root);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    auto lock = StoreLock::Acquire(root + "/lock", LockMode::kExclusive);
    char c = lock ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    ::usleep(400 * 1000);
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  EXPECT_FALSE(store.TryLock(LockMode::kShared));
  auto start = std::chrono::steady_clock::now();
  auto created = store.CreateLayer("", false, "after");
  auto waited = std::chrono::steady_clock::now() - start;
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_GE(waited, std::chrono::milliseconds(250));
}

TEST(Store, ConcurrentWritersLoseNothing) {
  TempDir dir;
  std::string root = dir.Sub("store");
  {
    OPEN_OR_SKIP(store, root);
    ASSERT_TRUE(store.CreateLayer("", false, "base"));
  }
  constexpr int kRounds = 25;
  auto writer = [&](const std::string& prefix) {
    return InChild([&] {
      auto store = Store::Open(OpenOptions{root, TestDriver(), {}, {}});
      if (!store) return false;
      for (int i = 0; i < kRounds; ++i) {
        std::string id = prefix + std::to_string(i);
        auto created = (*store)->CreateLayer(i % 3 == 0 ? "" : "base", i % 2 == 0, id);
        if (!created) {
          std::fprintf(stderr, "create %s: %s\n", id.c_str(), created.error().message().c_str());
          return false;
        }
        if (i % 2 == 1) {
          auto removed = (*store)->RemoveLayer(id);
          if (!removed) {
            std::fprintf(stderr, "rm %s: %s\n", id.c_str(), removed.error().message().c_str());
            return false;
          }
        }
        if (!(*store)->ListLayers()) return false;
      }
      return true;
    });
  };
  // Two processes at once; each child is a fork of this one.
  pid_t a = ::fork();
  if (a == 0) ::_exit(writer("a-"));
  int b_status = writer("b-");
  int a_status = 0;
  ::waitpid(a, &a_status, 0);
  ASSERT_TRUE(WIFEXITED(a_status));
  EXPECT_EQ(WEXITSTATUS(a_status), 0);
  EXPECT_EQ(b_status, 0);

  OPEN_OR_SKIP(store, root);
  EXPECT_TRUE(store.removed_at_open().empty());
  std::set<std::string> expected = {"base"};
  for (const char* prefix : {"a-", "b-"}) {
    for (int i = 0; i < kRounds; i += 2) expected.insert(prefix + std::to_string(i));
  }
  auto list = store.ListLayers();
  ASSERT_TRUE(list);
  std::set<std::string> got;
  for (const auto& layer : *list) {
    got.insert(layer.id);
    EXPECT_EQ(layer.state, LayerState::kReady);
  }
  EXPECT_EQ(got, expected);
  auto names = ListDir(root + "/layers");
  ASSERT_TRUE(names);
  EXPECT_EQ(std::set<std::string>(names->begin(), names->end()), expected);
}

TEST(Store, ApplyRecordsSizeAndDiffId) {
  TempDir dir;
  OPEN_OR_SKIP(store, dir.Sub("store"));
  ASSERT_TRUE(MakeDirs(dir.Sub("src/etc")));
  test::WriteFile(dir.Sub("src/etc/hostname"), "lamina\n");
  test::WriteFile(dir.Sub("src/data"), std::string(100000, 'd'));
  auto tarred = test::Run({"tar", "-C", dir.Sub("src"), "-cf", dir.Sub("layer.tar"), "."});
  ASSERT_EQ(tarred.status, 0) << tarred.err;
  auto tar = Open(dir.Sub("layer.tar"), O_RDONLY);
  ASSERT_TRUE(tar);
  auto layer = store.ApplyLayer("", tar->get(), "applied");
  ASSERT_TRUE(layer) << layer.error().message();
  EXPECT_EQ(layer->state, LayerState::kReady);
  EXPECT_EQ(layer->diff_id, "sha256:" + Sha256Hex(test::ReadFileOrDie(dir.Sub("layer.tar"))));
  EXPECT_GE(layer->size, 100000u);
  EXPECT_EQ(*store.GetLayer("applied"), *layer);
  EXPECT_EQ(test::ReadFileOrDie(store.driver().DiffPath("applied") + "/etc/hostname"), "lamina\n");

  // A bad tar leaves nothing behind.
  test::WriteFile(dir.Sub("junk"), std::string(3000, '\x01'));
  auto junk = Open(dir.Sub("junk"), O_RDONLY);
  ASSERT_TRUE(junk);
  auto failed = store.ApplyLayer("", junk->get(), "junk");
  EXPECT_FALSE(failed);
  EXPECT_FALSE(PathExists(dir.Sub("store/layers/junk")));
}

}  // namespace
}  // namespace lamina::store
