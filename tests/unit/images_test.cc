// ImageStore: records, layer sharing and rollback, the built-in busybox
// image, on a real store (vfs driver) in a TempDir.

#include "store/images.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <sstream>
#include <thread>

#include "common/fs.h"
#include "common/hash.h"
#include "store/image_import.h"
#include "tests/support/tar_builder.h"
#include "tests/support/test_util.h"

namespace lamina::store {
namespace {

using test::TarBuilder;
using test::TempDir;

// A memfd holding `bytes`, positioned at 0.
Fd MemFd(const std::string& bytes) {
  Fd fd(::memfd_create("images-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

LayerSource Source(const std::string& tar, bool known_diff_id = true) {
  LayerSource source;
  if (known_diff_id) source.diff_id = "sha256:" + Sha256Hex(tar);
  source.open = [tar]() -> Result<Fd> { return MemFd(tar); };
  return source;
}

std::string Tar(const std::string& file, const std::string& content) {
  TarBuilder tar;
  tar.Dir("etc").File(file, content);
  return tar.Finish();
}

class ImagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OpenOptions options;
    options.root = dir_.Sub("store");
    options.driver = "vfs";
    auto opened = Store::Open(options);
    ASSERT_TRUE(opened) << opened.error().message();
    store_ = std::move(*opened);
    images_ = std::make_unique<ImageStore>(*store_);
  }

  size_t LayerCount() {
    auto layers = store_->ListLayers();
    EXPECT_TRUE(layers);
    return layers ? layers->size() : 0;
  }

  TempDir dir_{"lamina-images"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<ImageStore> images_;
};

TEST(ImageNames, Normalize) {
  EXPECT_EQ(*NormalizeImageName("alpine"), "alpine:latest");
  EXPECT_EQ(*NormalizeImageName("alpine:3.19"), "alpine:3.19");
  EXPECT_EQ(*NormalizeImageName("busybox"), "busybox");
  EXPECT_EQ(*NormalizeImageName("localhost:5000/app"), "localhost:5000/app:latest");
  EXPECT_EQ(*NormalizeImageName("docker.io/library/x:1"), "docker.io/library/x:1");
  for (const char* bad : {"", "Alpine", "-x", "a//b", "a/../b", "a/./b", "a:b:c", "a:", "a/", "a b",
                          "a@sha256", std::string(201, 'a').c_str()}) {
    auto result = NormalizeImageName(bad);
    ASSERT_FALSE(result) << bad;
    EXPECT_EQ(result.error().code(), EINVAL) << bad;
  }
  EXPECT_EQ(ImageFileName("reg/app:1"), "reg%2Fapp:1.json");
}

TEST(ImageNames, RecordJsonRoundTrip) {
  Image image;
  image.name = "app:1";
  image.layers = {"a", "b"};
  image.config.cmd = {"sh", "-c", "echo hi"};
  image.config.env = {"PATH=/bin"};
  image.config.user = "1000:1000";
  image.created = "2026-11-23T08:00:00Z";
  image.source = "oci";
  auto parsed = ParseImage(ImageJson(image).dump());
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, image);
  EXPECT_EQ(ParseImage("[]").error().code(), EINVAL);
  EXPECT_EQ(ParseImage(R"({"name": "x", "layers": [1]})").error().code(), EINVAL);
}

TEST_F(ImagesTest, PutGetListRemove) {
  Fd base = MemFd(Tar("etc/a", "a"));
  auto l1 = store_->ApplyLayer("", base.get());
  ASSERT_TRUE(l1) << l1.error().message();
  Fd top = MemFd(Tar("etc/b", "b"));
  auto l2 = store_->ApplyLayer(l1->id, top.get());
  ASSERT_TRUE(l2) << l2.error().message();

  Image image;
  image.name = "app";
  image.layers = {l1->id, l2->id};
  image.config.cmd = {"/bin/true"};
  ASSERT_TRUE(images_->Put(image));
  EXPECT_TRUE(PathExists(dir_.Sub("store/images/app:latest.json")));

  auto got = images_->Get("app:latest");
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->name, "app:latest");
  EXPECT_EQ(got->layers, image.layers);
  EXPECT_EQ(got->config.cmd, image.config.cmd);
  EXPECT_FALSE(got->created.empty());

  auto list = images_->List();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().name, "app:latest");

  ASSERT_TRUE(images_->Remove("app"));
  EXPECT_EQ(images_->Get("app").error().code(), ENOENT);
  EXPECT_EQ(images_->Remove("app").error().code(), ENOENT);
  EXPECT_EQ(LayerCount(), 0u) << "the image's layers go with it";
}

TEST_F(ImagesTest, PutChecksLayers) {
  Image image;
  image.name = "x";
  image.layers = {"0123456789abcdef"};
  EXPECT_EQ(images_->Put(image).error().code(), ENOENT);
  image.layers = {};
  EXPECT_EQ(images_->Put(image).error().code(), EINVAL);

  Fd a = MemFd(Tar("etc/a", "a"));
  Fd b = MemFd(Tar("etc/b", "b"));
  auto la = store_->ApplyLayer("", a.get());
  auto lb = store_->ApplyLayer("", b.get());
  ASSERT_TRUE(la && lb);
  image.layers = {la->id, lb->id};  // lb is no child of la
  auto put = images_->Put(image);
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code(), EINVAL);
  image.name = "Bad Name";
  image.layers = {la->id};
  EXPECT_EQ(images_->Put(image).error().code(), EINVAL);
  EXPECT_FALSE(images_->List()->size());
}

TEST_F(ImagesTest, CreateSharesLayersWithTheSameDiffIdAndParent) {
  std::string base = Tar("etc/base", "base");
  Image a;
  a.name = "a";
  auto ra = images_->Create(a, {Source(base), Source(Tar("etc/a", "a"))});
  ASSERT_TRUE(ra) << ra.error().message();
  EXPECT_EQ(ra->applied.size(), 2u);

  Image b;
  b.name = "b";
  auto rb = images_->Create(b, {Source(base), Source(Tar("etc/b", "b"))});
  ASSERT_TRUE(rb) << rb.error().message();
  EXPECT_EQ(rb->reused, std::vector<std::string>{ra->image.layers[0]});
  EXPECT_EQ(rb->image.layers[0], ra->image.layers[0]);
  EXPECT_EQ(LayerCount(), 3u);

  // Unknown DiffID (a rootfs tarball): applied, then found equal and shared.
  Image c;
  c.name = "c";
  auto rc = images_->Create(c, {Source(base, /*known_diff_id=*/false)});
  ASSERT_TRUE(rc) << rc.error().message();
  EXPECT_EQ(rc->image.layers, std::vector<std::string>{ra->image.layers[0]});
  EXPECT_TRUE(rc->applied.empty());
  EXPECT_EQ(LayerCount(), 3u);

  // The same base on another parent is another layer.
  Image d;
  d.name = "d";
  auto rd = images_->Create(d, {Source(Tar("etc/b", "b")), Source(base)});
  ASSERT_TRUE(rd) << rd.error().message();
  EXPECT_EQ(rd->applied.size(), 2u);
  EXPECT_EQ(LayerCount(), 5u);

  // Removing a keeps the shared base (b and c use it).
  ASSERT_TRUE(images_->Remove("a"));
  EXPECT_EQ(LayerCount(), 4u);
  EXPECT_TRUE(store_->GetLayer(ra->image.layers[0]));
  ASSERT_TRUE(images_->Remove("b"));
  EXPECT_EQ(LayerCount(), 3u);
  ASSERT_TRUE(images_->Remove("c"));
  EXPECT_EQ(LayerCount(), 2u);
  ASSERT_TRUE(images_->Remove("d"));
  EXPECT_EQ(LayerCount(), 0u);
}

TEST_F(ImagesTest, RemoveKeepsLayersInUse) {
  Image a;
  a.name = "a";
  auto ra = images_->Create(a, {Source(Tar("etc/a", "a"))});
  ASSERT_TRUE(ra) << ra.error().message();
  // A container layer on the image's top layer.
  auto container = store_->CreateLayer(ra->image.layers.back(), /*writable=*/true);
  ASSERT_TRUE(container) << container.error().message();
  ASSERT_TRUE(images_->Remove("a"));
  EXPECT_FALSE(images_->Get("a"));
  EXPECT_TRUE(store_->GetLayer(ra->image.layers.back())) << "kept: it has a child";
  ASSERT_TRUE(store_->RemoveLayer(*container));
  ASSERT_TRUE(store_->RemoveLayer(ra->image.layers.back()));
}

TEST_F(ImagesTest, CreateRollsBackOnBadDiffId) {
  Image image;
  image.name = "bad";
  LayerSource wrong = Source(Tar("etc/b", "b"));
  wrong.diff_id = "sha256:" + std::string(64, '0');
  auto r = images_->Create(image, {Source(Tar("etc/a", "a")), wrong});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EINVAL);
  EXPECT_NE(r.error().message().find("DiffID"), std::string::npos) << r.error().message();
  EXPECT_EQ(LayerCount(), 0u) << "nothing half-imported stays";
  EXPECT_EQ(images_->Get("bad").error().code(), ENOENT);

  // A source that cannot be opened: the same.
  LayerSource broken;
  broken.open = []() -> Result<Fd> { return Fail(ENOENT, "gone"); };
  r = images_->Create(image, {Source(Tar("etc/a", "a")), broken});
  ASSERT_FALSE(r);
  EXPECT_EQ(LayerCount(), 0u);
}

TEST_F(ImagesTest, CreateExistingNeedsReplace) {
  Image image;
  image.name = "app:1";
  auto first = images_->Create(image, {Source(Tar("etc/a", "a"))});
  ASSERT_TRUE(first) << first.error().message();
  auto again = images_->Create(image, {Source(Tar("etc/b", "b"))});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), EEXIST);
  EXPECT_EQ(LayerCount(), 1u);
  CreateOptions replace;
  replace.replace = true;
  auto replaced = images_->Create(image, {Source(Tar("etc/b", "b"))}, replace);
  ASSERT_TRUE(replaced) << replaced.error().message();
  EXPECT_EQ(LayerCount(), 1u) << "the replaced image's unused layer is removed";
  EXPECT_EQ(images_->Get("app:1")->layers, replaced->image.layers);
}

bool HaveStaticBusybox() {
  auto fd = BuildBusyboxLayer();
  return fd.has_value();
}

TEST_F(ImagesTest, BusyboxHasEveryAppletAndAccounts) {
  if (!HaveStaticBusybox()) GTEST_SKIP() << "/bin/busybox (busybox-static) is not installed";
  auto image = images_->Get("busybox");  // made on first use
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(image->name, "busybox");
  EXPECT_EQ(image->source, "builtin");
  EXPECT_EQ(image->config.cmd, std::vector<std::string>{"sh"});
  EXPECT_EQ(image->config.hostname, "lamina");
  ASSERT_EQ(image->layers.size(), 1u);

  auto merged = store_->Mount(image->layers.back(), MountOptions{.read_only = true});
  ASSERT_TRUE(merged) << merged.error().message();
  auto unmount = [&] { (void)store_->Unmount(image->layers.back()); };
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{unmount};

  auto applets = BusyboxApplets();
  ASSERT_TRUE(applets);
  struct stat busybox;
  ASSERT_EQ(::stat((*merged + "/bin/busybox").c_str(), &busybox), 0);
  EXPECT_TRUE(S_ISREG(busybox.st_mode));
  EXPECT_EQ(busybox.st_mode & 07777, 0755u);
  for (const auto& applet : *applets) {
    struct stat st;
    ASSERT_EQ(::stat((*merged + "/" + applet).c_str(), &st), 0) << applet;
    EXPECT_EQ(st.st_ino, busybox.st_ino) << applet << " is a link to /bin/busybox";
  }
  EXPECT_EQ(::access((*merged + "/bin/sh").c_str(), X_OK), 0);
  std::string passwd = *ReadFile(*merged + "/etc/passwd");
  EXPECT_NE(passwd.find("root:x:0:0:"), std::string::npos);
  EXPECT_NE(passwd.find("nobody:x:65534:65534:"), std::string::npos);
  std::string group = *ReadFile(*merged + "/etc/group");
  EXPECT_NE(group.find("root:x:0:"), std::string::npos);
  struct stat tmp;
  ASSERT_EQ(::stat((*merged + "/tmp").c_str(), &tmp), 0);
  EXPECT_EQ(tmp.st_mode & 07777, 01777u);
  for (const char* dir : {"proc", "sys", "dev", "root"}) {
    struct stat st;
    ASSERT_EQ(::stat((*merged + "/" + dir).c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
  }
  // The layer runs: the host can exec the static binary from it.
  std::string out;
  auto status = RunCommand({*merged + "/bin/busybox", "echo", "hello"}, &out);
  ASSERT_TRUE(status);
  EXPECT_EQ(*status, 0);
  EXPECT_EQ(out, "hello\n");

  auto again = images_->EnsureBusybox();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->layers, image->layers) << "made once";
}

TEST_F(ImagesTest, BusyboxLayerIsDeterministic) {
  if (!HaveStaticBusybox()) GTEST_SKIP() << "/bin/busybox (busybox-static) is not installed";
  auto hash = [](Fd fd) {
    std::string data;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    return Sha256Hex(data);
  };
  EXPECT_EQ(hash(*BuildBusyboxLayer()), hash(*BuildBusyboxLayer()));
}

TEST_F(ImagesTest, BusyboxConcurrentFirstUseMakesOneImage) {
  if (!HaveStaticBusybox()) GTEST_SKIP() << "/bin/busybox (busybox-static) is not installed";
  // Two Store objects (two lock descriptions, as two processes) at once.
  std::vector<Result<Image>> results(4, Fail(EIO));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      OpenOptions options;
      options.root = dir_.Sub("store");
      options.driver = "vfs";
      auto store = Store::Open(options);
      if (!store) {
        results[i] = Fail(store.error());
        return;
      }
      ImageStore images(**store);
      results[i] = images.EnsureBusybox();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->layers, results[0]->layers);
  }
  EXPECT_EQ(LayerCount(), 1u);
}

TEST(BusyboxLayer, RefusesMissingAndDynamicBusybox) {
  auto missing = BuildBusyboxLayer(BusyboxRootfs{"/nonexistent/busybox"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ENOENT);
  EXPECT_NE(missing.error().message().find("busybox-static"), std::string::npos);
  // /bin/ls is dynamically linked on every Debian.
  auto dynamic = BuildBusyboxLayer(BusyboxRootfs{"/bin/ls"});
  ASSERT_FALSE(dynamic);
  EXPECT_EQ(dynamic.error().code(), ENOEXEC);
  EXPECT_NE(dynamic.error().message().find("dynamically linked"), std::string::npos)
      << dynamic.error().message();
  TempDir dir("lamina-images");
  test::WriteFile(dir.Sub("notelf"), "#!/bin/sh\n");
  auto script = BuildBusyboxLayer(BusyboxRootfs{dir.Sub("notelf")});
  ASSERT_FALSE(script);
  EXPECT_EQ(script.error().code(), ENOEXEC);
}

TEST(ImportDetect, Kinds) {
  TempDir dir("lamina-images");
  TarBuilder rootfs;
  rootfs.Dir("bin").File("bin/x", "x");
  test::WriteTarFile(dir.Sub("rootfs.tar.gz"), rootfs.Finish(test::TarCompression::kGzip));
  EXPECT_EQ(*DetectImportFormat(dir.Sub("rootfs.tar.gz")), ImportFormat::kRootfsTar);

  TarBuilder docker;
  docker.File("manifest.json", "[]").File("repositories", "{}");
  test::WriteTarFile(dir.Sub("docker.tar"), docker.Finish());
  EXPECT_EQ(*DetectImportFormat(dir.Sub("docker.tar")), ImportFormat::kDockerArchive);

  TarBuilder oci;
  oci.File("oci-layout", "{}").File("index.json", "{}").Dir("blobs").Dir("blobs/sha256");
  test::WriteTarFile(dir.Sub("oci.tar"), oci.Finish());
  EXPECT_EQ(*DetectImportFormat(dir.Sub("oci.tar")), ImportFormat::kOciLayout);

  ASSERT_TRUE(MakeDirs(dir.Sub("layout")));
  EXPECT_EQ(DetectImportFormat(dir.Sub("layout")).error().code(), EINVAL);
  test::WriteFile(dir.Sub("layout/oci-layout"), "{}");
  EXPECT_EQ(*DetectImportFormat(dir.Sub("layout")), ImportFormat::kOciLayout);

  test::WriteFile(dir.Sub("junk"), std::string(2000, 'j'));
  EXPECT_FALSE(DetectImportFormat(dir.Sub("junk")));
  EXPECT_EQ(DetectImportFormat(dir.Sub("missing")).error().code(), ENOENT);
}

}  // namespace
}  // namespace lamina::store
