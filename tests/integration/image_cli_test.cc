// `lamina image ...` end to end: the real binary on stores in a TempDir,
// OCI layouts and docker-save archives built here from real tars (gzip,
// zstd, plain), hostile manifests, export → import round trips, and skopeo
// and umoci reading an export back when they are installed.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/hash.h"
#include "store/image_oci.h"
#include "tests/support/tar_builder.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TarBuilder;
using test::TarCompression;
using test::TempDir;

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool HaveCommand(const std::string& name) {
  return test::Run({"sh", "-c", "command -v " + name}).status == 0;
}

std::string Digest(const std::string& bytes) { return "sha256:" + Sha256Hex(bytes); }

std::string LayerMediaType(TarCompression c) {
  switch (c) {
    case TarCompression::kGzip:
      return "application/vnd.oci.image.layer.v1.tar+gzip";
    case TarCompression::kZstd:
      return "application/vnd.oci.image.layer.v1.tar+zstd";
    default:
      return "application/vnd.oci.image.layer.v1.tar";
  }
}

// The layers every test image is made of (uncompressed tars).
std::string BaseTar() {
  TarBuilder tar;
  tar.Dir("bin").Dir("etc").File("etc/os-release", "ID=lamina-test\n").File("etc/gone", "x");
  tar.Add({.path = "bin/tool", .data = "#!/bin/sh\necho tool\n", .mode = 0755});
  tar.Symlink("bin/alias", "tool").Dir("var").Dir("var/lib");
  return tar.Finish();
}
std::string MiddleTar() {
  TarBuilder tar;
  tar.Dir("etc").File("etc/.wh.gone", "").File("etc/app.conf", "answer=42\n");
  tar.Hardlink("etc/app.link", "etc/app.conf");
  return tar.Finish();
}
std::string TopTar() {
  TarBuilder tar;
  tar.Dir("var")
      .Dir("var/lib")
      .Dir("var/lib/app")
      .File("var/lib/app/data", std::string(100000, 'd'));
  return tar.Finish();
}

struct OciLayout {
  std::string manifest_digest;
  std::vector<std::string> layer_digests;  // blob digests (compressed)
  std::string config_digest;
};

std::string WriteBlob(const std::string& dir, const std::string& bytes) {
  std::string digest = Digest(bytes);
  test::WriteFile(dir + "/blobs/sha256/" + digest.substr(7), bytes);
  return digest;
}

json ImageConfigJson(const std::vector<std::string>& tars) {
  json diff_ids = json::array();
  for (const auto& t : tars) diff_ids.push_back(Digest(t));
  return {{"architecture", "amd64"},
          {"os", "linux"},
          {"created", "2026-01-02T03:04:05Z"},
          {"config",
           {{"Cmd", {"/bin/tool", "--flag"}},
            {"Env", {"PATH=/bin", "MODE=test"}},
            {"WorkingDir", "/var/lib/app"},
            {"User", "1000:1000"}}},
          {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
}

// An OCI image layout in `dir` with one image of `tars` (uncompressed)
// compressed as given; `mutate_manifest` may change the manifest first.
OciLayout MakeOciLayout(const std::string& dir, const std::vector<std::string>& tars,
                        const std::vector<TarCompression>& compressions, const std::string& ref,
                        json config = nullptr) {
  EXPECT_TRUE(MakeDirs(dir + "/blobs/sha256"));
  OciLayout out;
  json layers = json::array();
  for (size_t i = 0; i < tars.size(); ++i) {
    std::string blob = test::Compress(tars[i], compressions[i]);
    std::string digest = WriteBlob(dir, blob);
    out.layer_digests.push_back(digest);
    layers.push_back({{"mediaType", LayerMediaType(compressions[i])},
                      {"digest", digest},
                      {"size", blob.size()}});
  }
  if (config.is_null()) config = ImageConfigJson(tars);
  std::string config_bytes = config.dump();
  out.config_digest = WriteBlob(dir, config_bytes);
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config",
                    {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                     {"digest", out.config_digest},
                     {"size", config_bytes.size()}}},
                   {"layers", layers}};
  std::string manifest_bytes = manifest.dump();
  out.manifest_digest = WriteBlob(dir, manifest_bytes);
  json entry = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                {"digest", out.manifest_digest},
                {"size", manifest_bytes.size()}};
  if (!ref.empty()) entry["annotations"] = {{"org.opencontainers.image.ref.name", ref}};
  json index = {{"schemaVersion", 2}, {"manifests", json::array({entry})}};
  test::WriteFile(dir + "/index.json", index.dump());
  test::WriteFile(dir + "/oci-layout", R"({"imageLayoutVersion": "1.0.0"})");
  return out;
}

// A `docker save` archive (legacy layout: <id>/layer.tar, <hex>.json).
std::string MakeDockerArchive(const std::vector<std::string>& tars, const json& repo_tags,
                              json layer_paths = nullptr) {
  TarBuilder archive;
  std::string config = ImageConfigJson(tars).dump();
  std::string config_name = Sha256Hex(config) + ".json";
  json paths = json::array();
  for (size_t i = 0; i < tars.size(); ++i) {
    std::string id = Sha256Hex(tars[i] + std::to_string(i));
    archive.Dir(id).File(id + "/VERSION", "1.0").File(id + "/layer.tar", tars[i]);
    paths.push_back(id + "/layer.tar");
  }
  if (layer_paths.is_null()) layer_paths = paths;
  archive.File(config_name, config);
  json manifest =
      json::array({{{"Config", config_name}, {"RepoTags", repo_tags}, {"Layers", layer_paths}}});
  archive.File("manifest.json", manifest.dump());
  archive.File("repositories", "{}");
  return archive.Finish();
}

class ImageCli : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    CommandResult info = test::RunLamina({"--root", dir_.Sub("probe"), "info", "--json"});
    ASSERT_EQ(info.status, 0) << info.err;
    json j = json::parse(info.out, nullptr, false);
    bool usable = false;
    std::string why;
    for (const auto& d : j["drivers"]) {
      if (d["name"] == GetParam()) {
        usable = d["usable"] == true;
        why = d.dump();
      }
    }
    if (!usable) GTEST_SKIP() << "driver " << GetParam() << " is not usable here: " << why;
  }
  void TearDown() override {
    for (const auto& [root, layer] : mounted_) {
      (void)Lamina({"layer", "umount", layer}, root);
    }
  }

  std::string Root(const std::string& name = "store") const { return dir_.Sub(name); }

  CommandResult Lamina(const std::vector<std::string>& args, const std::string& root = {}) {
    // The kernel overlay mounts rootless only inside containers: layer
    // mounts go through lamina-fuse on the same store then, as lamina advises.
    bool mount =
        args.size() >= 2 && args[0] == "layer" && (args[1] == "mount" || args[1] == "umount");
    std::string driver = mount && GetParam() == "overlay" && !test::IsRoot() ? "fuse" : GetParam();
    std::vector<std::string> argv = {"--root", root.empty() ? Root() : root, "--driver", driver};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::RunLamina(argv);
  }
  std::string Ok(const std::vector<std::string>& args, const std::string& root = {}) {
    CommandResult r = Lamina(args, root);
    EXPECT_EQ(r.status, 0) << "lamina " << args[0] << " " << (args.size() > 1 ? args[1] : "")
                           << ": " << r.err;
    return r.out;
  }
  // Fails with a message containing `expected`; nothing may be left behind.
  void FailsWith(const std::vector<std::string>& args, const std::string& expected) {
    CommandResult r = Lamina(args);
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.err.find(expected), std::string::npos) << "stderr: " << r.err;
    EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), LayersBefore())
        << "a failed import leaves no layer";
  }
  virtual size_t LayersBefore() { return 0; }

  json Inspect(const std::string& name, const std::string& root = {}) {
    return json::parse(Ok({"image", "inspect", name}, root));
  }
  // Mounts the image's top layer; unmounted in TearDown.
  std::string MountImage(const std::string& name, const std::string& root = {}) {
    std::string top = Inspect(name, root)["layers"].back();
    std::string merged = Trim(Ok({"layer", "mount", top}, root));
    mounted_.push_back({root, top});
    return merged;
  }

  TempDir dir_{"lamina-image-cli"};
  std::vector<std::pair<std::string, std::string>> mounted_;
};

// What the three test layers make, seen through a mount.
void ExpectTestTree(const std::string& merged) {
  EXPECT_EQ(test::ReadFileOrDie(merged + "/etc/os-release"), "ID=lamina-test\n");
  EXPECT_FALSE(PathExists(merged + "/etc/gone")) << "the whiteout of layer 2 hides it";
  EXPECT_EQ(test::ReadFileOrDie(merged + "/etc/app.conf"), "answer=42\n");
  struct stat a, b;
  ASSERT_EQ(::stat((merged + "/etc/app.conf").c_str(), &a), 0);
  ASSERT_EQ(::stat((merged + "/etc/app.link").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(test::ReadFileOrDie(merged + "/var/lib/app/data"), std::string(100000, 'd'));
  struct stat tool;
  ASSERT_EQ(::stat((merged + "/bin/tool").c_str(), &tool), 0);
  EXPECT_EQ(tool.st_mode & 0777, 0755u);
  char target[64] = {};
  ASSERT_GT(::readlink((merged + "/bin/alias").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "tool");
}

void ExpectTestConfig(const json& image) {
  EXPECT_EQ(image["config"]["cmd"], json({"/bin/tool", "--flag"}));
  EXPECT_EQ(image["config"]["env"], json({"PATH=/bin", "MODE=test"}));
  EXPECT_EQ(image["config"]["working_dir"], "/var/lib/app");
  EXPECT_EQ(image["config"]["user"], "1000:1000");
  EXPECT_EQ(image["created"], "2026-01-02T03:04:05Z");
}

TEST_P(ImageCli, ImportOciLayoutGzipZstdPlain) {
  std::vector<std::string> tars = {BaseTar(), MiddleTar(), TopTar()};
  std::string layout = dir_.Sub("myimg");
  OciLayout oci = MakeOciLayout(
      layout, tars, {TarCompression::kGzip, TarCompression::kZstd, TarCompression::kNone}, "v1");
  EXPECT_EQ(Trim(Ok({"image", "import", layout})), "myimg:v1");
  json image = Inspect("myimg:v1");
  EXPECT_EQ(image["source"], "oci");
  EXPECT_EQ(image["manifest_digest"], oci.manifest_digest);
  ASSERT_EQ(image["layers"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(image["layer_details"][i]["diff_id"], Digest(tars[i]));
  }
  ExpectTestConfig(image);
  ExpectTestTree(MountImage("myimg:v1"));

  // The same again: EEXIST unless --replace; --replace shares every layer.
  CommandResult again = Lamina({"image", "import", layout});
  EXPECT_NE(again.status, 0);
  EXPECT_NE(again.err.find("image myimg:v1: already exists"), std::string::npos) << again.err;
  json replaced = json::parse(Ok({"image", "import", "--replace", "--json", layout}));
  EXPECT_EQ(replaced["reused"].size(), 3u);
  EXPECT_EQ(replaced["layers"], image["layers"]);
}

TEST_P(ImageCli, ImportOciArchiveTarAndChooseByRef) {
  std::vector<std::string> tars = {BaseTar()};
  std::string layout = dir_.Sub("two");
  OciLayout first = MakeOciLayout(layout, tars, {TarCompression::kGzip}, "one");
  // A second image in the same layout.
  std::string index_one = test::ReadFileOrDie(layout + "/index.json");
  MakeOciLayout(layout, {BaseTar(), TopTar()}, {TarCompression::kGzip, TarCompression::kGzip},
                "two");
  json index = json::parse(test::ReadFileOrDie(layout + "/index.json"));
  index["manifests"].push_back(json::parse(index_one)["manifests"][0]);
  test::WriteFile(layout + "/index.json", index.dump());

  CommandResult ambiguous = Lamina({"image", "import", layout});
  EXPECT_NE(ambiguous.status, 0);
  EXPECT_NE(ambiguous.err.find("--ref"), std::string::npos) << ambiguous.err;
  EXPECT_EQ(Trim(Ok({"image", "import", "--ref", "one", "--name", "first", layout})),
            "first:latest");
  EXPECT_EQ(Inspect("first")["manifest_digest"], first.manifest_digest);

  // The same layout packed in a tar (an "oci-archive").
  ASSERT_EQ(test::Run({"tar", "-C", layout, "-cf", dir_.Sub("two.tar"), "."}).status, 0);
  EXPECT_EQ(Trim(Ok({"image", "import", "--ref", "two", dir_.Sub("two.tar")})), "two:two");
  json two = Inspect("two:two");
  ASSERT_EQ(two["layers"].size(), 2u);
  EXPECT_EQ(two["layers"][0], Inspect("first")["layers"][0]) << "the base layer is shared";
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), 2u);
}

TEST_P(ImageCli, ImportDockerSaveArchive) {
  std::vector<std::string> tars = {BaseTar(), MiddleTar(), TopTar()};
  test::WriteTarFile(dir_.Sub("app.tar"), MakeDockerArchive(tars, {"example.com/team/app:1.0"}));
  EXPECT_EQ(Trim(Ok({"image", "import", dir_.Sub("app.tar")})), "example.com/team/app:1.0");
  json image = Inspect("example.com/team/app:1.0");
  EXPECT_EQ(image["source"], "docker-archive");
  ExpectTestConfig(image);
  ExpectTestTree(MountImage("example.com/team/app:1.0"));
  std::string ls = Ok({"image", "ls"});
  EXPECT_NE(ls.find("example.com/team/app:1.0"), std::string::npos) << ls;

  // Gzip-compressed archive as `docker save | gzip` makes.
  test::WriteTarFile(dir_.Sub("app2.tar.gz"),
                     test::Compress(MakeDockerArchive(tars, json::array()), TarCompression::kGzip));
  EXPECT_EQ(Trim(Ok({"image", "import", dir_.Sub("app2.tar.gz")})), "app2:latest");
  EXPECT_EQ(Inspect("app2")["layers"], image["layers"]) << "every layer shared";
}

TEST_P(ImageCli, ImportRootfsTarballs) {
  TarBuilder rootfs;
  rootfs.Dir("bin").Add({.path = "bin/hello", .data = "hi", .mode = 0755}).Dir("etc");
  std::string tar = rootfs.Finish();
  test::WriteTarFile(dir_.Sub("Root_FS.tar.gz"), test::Compress(tar, TarCompression::kGzip));
  test::WriteTarFile(dir_.Sub("plain.tar"), tar);
  EXPECT_EQ(Trim(Ok({"image", "import", dir_.Sub("Root_FS.tar.gz")})), "root_fs:latest");
  json image = Inspect("root_fs");
  EXPECT_EQ(image["source"], "rootfs");
  EXPECT_EQ(image["layer_details"][0]["diff_id"], Digest(tar));
  EXPECT_EQ(test::ReadFileOrDie(MountImage("root_fs") + "/bin/hello"), "hi");
  EXPECT_EQ(Trim(Ok({"image", "import", "--name", "plain:2", dir_.Sub("plain.tar")})), "plain:2");
  EXPECT_EQ(Inspect("plain:2")["layers"], image["layers"]) << "same content, one layer";
  if (HaveCommand("zstd")) {
    test::WriteTarFile(dir_.Sub("z.tar.zst"), test::Compress(tar, TarCompression::kZstd));
    EXPECT_EQ(Trim(Ok({"image", "import", "--format", "rootfs", dir_.Sub("z.tar.zst")})),
              "z:latest");
  }
  CommandResult bad = Lamina({"image", "import", "--name", "Bad Name", dir_.Sub("plain.tar")});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("image name"), std::string::npos) << bad.err;
}

// Docker 25+ saves an OCI layout and a manifest.json whose paths are blobs.
TEST_P(ImageCli, ImportDockerArchiveWithBlobPaths) {
  std::vector<std::string> tars = {BaseTar(), MiddleTar()};
  auto archive = [&](bool tamper) {
    TarBuilder tar;
    tar.File("oci-layout", R"({"imageLayoutVersion": "1.0.0"})").File("index.json", "{}");
    tar.Dir("blobs").Dir("blobs/sha256");
    json layers = json::array();
    for (size_t i = 0; i < tars.size(); ++i) {
      std::string path = "blobs/sha256/" + Sha256Hex(tars[i]);
      tar.File(path, tamper && i == 1 ? MiddleTar() + "x" : tars[i]);
      layers.push_back(path);
    }
    std::string config = ImageConfigJson(tars).dump();
    tar.File("blobs/sha256/" + Sha256Hex(config), config);
    json manifest = json::array({{{"Config", "blobs/sha256/" + Sha256Hex(config)},
                                  {"RepoTags", {"new:1"}},
                                  {"Layers", layers}}});
    tar.File("manifest.json", manifest.dump());
    return tar.Finish();
  };
  test::WriteTarFile(dir_.Sub("new.tar"), archive(false));
  EXPECT_EQ(Trim(Ok({"image", "import", dir_.Sub("new.tar")})), "new:1");
  EXPECT_EQ(Inspect("new:1")["source"], "docker-archive");
  Ok({"image", "rm", "new:1"});
  test::WriteTarFile(dir_.Sub("tampered.tar"), archive(true));
  FailsWith({"image", "import", dir_.Sub("tampered.tar")}, "tampered");
}

// A multi-platform image: index.json → image index → this host's manifest.
TEST_P(ImageCli, ImportPicksThisPlatformFromAnIndex) {
  std::string layout = dir_.Sub("multi");
  OciLayout oci = MakeOciLayout(layout, {BaseTar()}, {TarCompression::kGzip}, "");
  json top = json::parse(test::ReadFileOrDie(layout + "/index.json"));
  json mine = top["manifests"][0];
  mine["platform"] = {{"os", "linux"}, {"architecture", store::oci::HostArchitecture()}};
  json other = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                {"digest", Digest("not here")},
                {"size", 8},
                {"platform", {{"os", "linux"}, {"architecture", "elsewhere"}}}};
  std::string nested = json{
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.index.v1+json"},
      {"manifests",
       {other, mine}}}.dump();
  std::string nested_digest = WriteBlob(layout, nested);
  json entry = {{"mediaType", "application/vnd.oci.image.index.v1+json"},
                {"digest", nested_digest},
                {"size", nested.size()},
                {"annotations", {{"io.containerd.image.name", "docker.io/library/multi:2"}}}};
  test::WriteFile(layout + "/index.json",
                  json{{"schemaVersion", 2}, {"manifests", {entry}}}.dump());
  EXPECT_EQ(Trim(Ok({"image", "import", layout})), "docker.io/library/multi:2");
  EXPECT_EQ(Inspect("docker.io/library/multi:2")["manifest_digest"], oci.manifest_digest);

  // Without this platform: a clear refusal.
  nested = json{{"schemaVersion", 2}, {"manifests", {other}}}.dump();
  entry["digest"] = WriteBlob(layout, nested);
  entry["size"] = nested.size();
  test::WriteFile(layout + "/index.json",
                  json{{"schemaVersion", 2}, {"manifests", {entry}}}.dump());
  size_t before = json::parse(Ok({"layer", "ls", "--json"})).size();
  CommandResult r = Lamina({"image", "import", "--name", "m2", layout});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("no linux/" + store::oci::HostArchitecture() + " image"), std::string::npos)
      << r.err;
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), before);
}

TEST_P(ImageCli, LsInspectRm) {
  std::vector<std::string> tars = {BaseTar(), TopTar()};
  test::WriteTarFile(dir_.Sub("a.tar"), MakeDockerArchive(tars, {"a:1"}));
  test::WriteTarFile(dir_.Sub("b.tar"), MakeDockerArchive({BaseTar()}, {"b:1"}));
  Ok({"image", "import", dir_.Sub("a.tar")});
  Ok({"image", "import", dir_.Sub("b.tar")});
  json list = json::parse(Ok({"image", "ls", "--json"}));
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["name"], "a:1");
  EXPECT_EQ(list[1]["name"], "b:1");
  EXPECT_GT(list[0]["size"].get<uint64_t>(), 100000u);
  std::string table = Ok({"image", "ls"});
  EXPECT_EQ(table.rfind("NAME", 0), 0u) << table;

  CommandResult missing = Lamina({"image", "inspect", "nope"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("image nope:latest: not found"), std::string::npos) << missing.err;

  Ok({"image", "rm", "a:1"});
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), 1u) << "b keeps the base";
  CommandResult rm = Lamina({"image", "rm", "a:1", "b:1"});
  EXPECT_EQ(rm.status, 1);
  EXPECT_NE(rm.err.find("image a:1: not found"), std::string::npos) << rm.err;
  EXPECT_EQ(json::parse(Ok({"image", "ls", "--json"})).size(), 0u);
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), 0u);
}

TEST_P(ImageCli, ExportImportRoundTrip) {
  std::vector<std::string> tars = {BaseTar(), MiddleTar(), TopTar()};
  test::WriteTarFile(dir_.Sub("app.tar"), MakeDockerArchive(tars, {"app:1"}));
  Ok({"image", "import", dir_.Sub("app.tar")});
  std::string digest = Trim(Ok({"image", "export", "app:1", dir_.Sub("out")}));
  EXPECT_TRUE(digest.starts_with("sha256:")) << digest;
  json index = json::parse(test::ReadFileOrDie(dir_.Sub("out/index.json")));
  ASSERT_EQ(index["manifests"].size(), 1u);
  EXPECT_EQ(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "1");
  EXPECT_EQ(index["manifests"][0]["digest"], digest);
  // Deterministic: the same image exports to the same blobs.
  EXPECT_EQ(Trim(Ok({"image", "export", "app:1", dir_.Sub("out2")})), digest);

  // Into a second store; the same tree and config.
  std::string other = Root("other");
  EXPECT_EQ(Trim(Ok({"image", "import", dir_.Sub("out")}, other)), "app:1");
  json back = Inspect("app:1", other);
  ExpectTestConfig(back);
  EXPECT_EQ(back["manifest_digest"], digest);
  std::string a = MountImage("app:1");
  std::string b = MountImage("app:1", other);
  test::TreeCompareOptions options;
  options.xattrs = false;  // internal overlay xattrs differ between drivers
  std::vector<std::string> diffs = test::CompareTrees(a, b, options);
  EXPECT_TRUE(diffs.empty()) << diffs.front() << "\n"
                             << test::DescribeTree(a) << "\n---\n"
                             << test::DescribeTree(b);

  // Adding to an existing layout: a second ref; a non-layout directory is refused.
  Ok({"image", "export", "--ref", "again", "app:1", dir_.Sub("out")});
  EXPECT_EQ(json::parse(test::ReadFileOrDie(dir_.Sub("out/index.json")))["manifests"].size(), 2u);
  ASSERT_TRUE(MakeDirs(dir_.Sub("busy")));
  test::WriteFile(dir_.Sub("busy/file"), "x");
  CommandResult refused = Lamina({"image", "export", "app:1", dir_.Sub("busy")});
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("not an OCI image layout"), std::string::npos) << refused.err;
}

TEST_P(ImageCli, BusyboxBuiltinExportsForSkopeoAndUmoci) {
  if (!PathExists("/bin/busybox")) GTEST_SKIP() << "busybox-static is not installed";
  EXPECT_EQ(Trim(Ok({"image", "busybox"})), "busybox");
  json image = Inspect("busybox");
  EXPECT_EQ(image["source"], "builtin");
  std::string merged = MountImage("busybox");
  EXPECT_TRUE(PathExists(merged + "/bin/sh"));
  EXPECT_TRUE(PathExists(merged + "/usr/bin/env"));

  std::string out = dir_.Sub("bb");
  Ok({"image", "export", "busybox", out});
  if (!HaveCommand("skopeo")) {
    GTEST_SKIP() << "skopeo is not installed (Debian package skopeo); the export was not read "
                    "back by it";
  }
  CommandResult inspect = test::Run({"skopeo", "inspect", "oci:" + out + ":latest"});
  ASSERT_EQ(inspect.status, 0) << inspect.err;
  json facts = json::parse(inspect.out);
  EXPECT_EQ(facts["Layers"].size(), 1u);
  CommandResult copy =
      test::Run({"skopeo", "copy", "oci:" + out + ":latest", "oci:" + dir_.Sub("copied") + ":bb"});
  ASSERT_EQ(copy.status, 0) << copy.err;
  // What skopeo wrote comes back in.
  EXPECT_EQ(Trim(Ok({"image", "import", "--name", "copied", dir_.Sub("copied")})), "copied:latest");
  json copied = Inspect("copied");
  EXPECT_EQ(copied["layers"].size(), 1u);
  EXPECT_EQ(copied["config"]["cmd"], json({"sh"}));
  EXPECT_TRUE(PathExists(MountImage("copied") + "/bin/busybox"));

  if (!HaveCommand("umoci")) {
    GTEST_SKIP() << "umoci is not installed (Debian package umoci)";
  }
  std::string bundle = dir_.Sub("bundle");
  std::vector<std::string> unpack = {"umoci", "unpack", "--image", out + ":latest", bundle};
  if (!test::IsRoot()) unpack.insert(unpack.begin() + 2, "--rootless");
  CommandResult unpacked = test::Run(unpack);
  ASSERT_EQ(unpacked.status, 0) << unpacked.err;
  EXPECT_TRUE(PathExists(bundle + "/rootfs/bin/busybox"));
  EXPECT_EQ(test::ReadFileOrDie(bundle + "/rootfs/etc/passwd"),
            test::ReadFileOrDie(merged + "/etc/passwd"));
  json runtime = json::parse(test::ReadFileOrDie(bundle + "/config.json"));
  EXPECT_EQ(runtime["process"]["args"], json({"sh"}));
}

TEST_P(ImageCli, HostileOciLayouts) {
  std::vector<std::string> tars = {BaseTar(), TopTar()};
  std::vector<TarCompression> gz = {TarCompression::kGzip, TarCompression::kGzip};

  // A layer blob whose content is not its digest.
  std::string tampered = dir_.Sub("tampered");
  OciLayout t = MakeOciLayout(tampered, tars, gz, "x");
  test::WriteFile(tampered + "/blobs/sha256/" + t.layer_digests[1].substr(7),
                  test::Compress(MiddleTar(), TarCompression::kGzip));
  FailsWith({"image", "import", tampered}, "tampered");

  // A missing blob.
  std::string missing = dir_.Sub("missing");
  OciLayout m = MakeOciLayout(missing, tars, gz, "x");
  ASSERT_EQ(::unlink((missing + "/blobs/sha256/" + m.layer_digests[1].substr(7)).c_str()), 0);
  FailsWith({"image", "import", missing}, "is missing");

  // A config whose DiffID does not match the layer: applied, then undone.
  std::string wrong = dir_.Sub("wrong");
  json config = ImageConfigJson(tars);
  config["rootfs"]["diff_ids"][1] = Digest("something else");
  MakeOciLayout(wrong, tars, gz, "x", config);
  FailsWith({"image", "import", wrong}, "DiffID");

  // A digest that is a path.
  std::string path = dir_.Sub("path");
  MakeOciLayout(path, tars, gz, "x");
  json index = json::parse(test::ReadFileOrDie(path + "/index.json"));
  index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd";
  test::WriteFile(path + "/index.json", index.dump());
  FailsWith({"image", "import", path}, "not 64 lower-case hex");

  // A blob that is a symlink leading out of the layout.
  std::string link = dir_.Sub("link");
  OciLayout l = MakeOciLayout(link, tars, gz, "x");
  std::string blob = link + "/blobs/sha256/" + l.layer_digests[0].substr(7);
  ASSERT_EQ(::unlink(blob.c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", blob.c_str()), 0);
  FailsWith({"image", "import", link}, "symlink");

  // Size that lies, unsupported media type, not JSON.
  std::string lies = dir_.Sub("lies");
  OciLayout s = MakeOciLayout(lies, tars, gz, "x");
  json manifest =
      json::parse(test::ReadFileOrDie(lies + "/blobs/sha256/" + s.manifest_digest.substr(7)));
  manifest["layers"][0]["mediaType"] = "application/vnd.example.weird";
  std::string bytes = manifest.dump();
  std::string new_digest = WriteBlob(lies, bytes);
  index = json::parse(test::ReadFileOrDie(lies + "/index.json"));
  index["manifests"][0]["digest"] = new_digest;
  index["manifests"][0]["size"] = bytes.size();
  test::WriteFile(lies + "/index.json", index.dump());
  FailsWith({"image", "import", lies}, "is not a layer lamina reads");
  index["manifests"][0]["size"] = bytes.size() + 1;
  test::WriteFile(lies + "/index.json", index.dump());
  FailsWith({"image", "import", lies}, "the descriptor says");
  test::WriteFile(lies + "/index.json", "{not json");
  FailsWith({"image", "import", lies}, "not valid JSON");
  EXPECT_EQ(json::parse(Ok({"image", "ls", "--json"})).size(), 0u);
}

TEST_P(ImageCli, HostileDockerArchives) {
  std::vector<std::string> tars = {BaseTar(), TopTar()};
  test::WriteTarFile(dir_.Sub("dotdot.tar"),
                     MakeDockerArchive(tars, {"x:1"}, {"../../etc/shadow", "x/layer.tar"}));
  FailsWith({"image", "import", dir_.Sub("dotdot.tar")}, "leaves the archive");
  test::WriteTarFile(dir_.Sub("absolute.tar"),
                     MakeDockerArchive(tars, {"x:1"}, {"/etc/shadow", "x/layer.tar"}));
  FailsWith({"image", "import", dir_.Sub("absolute.tar")}, "absolute path");
  test::WriteTarFile(dir_.Sub("absent.tar"),
                     MakeDockerArchive(tars, {"x:1"}, {"nothere/layer.tar", "x/layer.tar"}));
  FailsWith({"image", "import", dir_.Sub("absent.tar")}, "missing from the archive");
  // Layers swapped: each tar's DiffID is checked against the config.
  json swapped = json::array();
  for (size_t i : {1, 0}) swapped.push_back(Sha256Hex(tars[i] + std::to_string(i)) + "/layer.tar");
  test::WriteTarFile(dir_.Sub("swapped.tar"), MakeDockerArchive(tars, {"x:1"}, swapped));
  FailsWith({"image", "import", dir_.Sub("swapped.tar")}, "DiffID");
  EXPECT_EQ(json::parse(Ok({"image", "ls", "--json"})).size(), 0u);
}

TEST_P(ImageCli, KilledImportLeavesNoLayersBehind) {
  // Three big layers, so that the import is still applying when killed.
  std::vector<std::string> tars;
  for (char c : {'a', 'b', 'c'}) {
    TarBuilder tar;
    tar.File(std::string(1, c), std::string(size_t{48} << 20, c));
    tars.push_back(tar.Finish());
  }
  test::WriteTarFile(dir_.Sub("big.tar"), MakeDockerArchive(tars, {"big:1"}));
  tars.clear();
  std::string tmp = dir_.Sub("tmp");
  ASSERT_TRUE(MakeDirs(tmp));
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The killed import cannot remove its unpacked archive: keep it in dir_.
    ::setenv("TMPDIR", tmp.c_str(), 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::string lamina = test::LaminaBinary(), root = Root(), driver = GetParam(),
                archive = dir_.Sub("big.tar");
    ::execl(lamina.c_str(), "lamina", "--root", root.c_str(), "--driver", driver.c_str(), "image",
            "import", archive.c_str(), nullptr);
    ::_exit(127);
  }
  // Wait until the journal names the second layer: the first one is ready.
  std::string journal = Root() + "/images/.journal.json";
  bool caught = false;
  for (int i = 0; i < 6000 && !caught; ++i) {
    if (auto text = ReadFile(journal)) {
      json j = json::parse(*text, nullptr, false);
      caught = !j.is_discarded() && j["layers"].size() >= 2;
    }
    if (!caught) {
      int status;
      if (::waitpid(pid, &status, WNOHANG) == pid) break;
      ::usleep(5000);
    }
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  if (!caught) GTEST_SKIP() << "the import finished before it could be killed";
  EXPECT_GE(json::parse(Ok({"layer", "ls", "--json"})).size(), 1u) << "a ready orphan layer";
  // The killed import's unpacked archive is still there; make it look old.
  auto unpacked = ListDir(tmp);
  ASSERT_TRUE(unpacked);
  ASSERT_EQ(unpacked->size(), 1u);
  std::string left = tmp + "/" + unpacked->front();
  struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, left.c_str(), old, 0), 0);

  // The next image import cleans up both.
  TarBuilder small;
  small.File("x", "x");
  test::WriteTarFile(dir_.Sub("small.tar"), MakeDockerArchive({small.Finish()}, {"small:1"}));
  ::setenv("TMPDIR", tmp.c_str(), 1);
  Ok({"image", "import", dir_.Sub("small.tar")});
  ::unsetenv("TMPDIR");
  EXPECT_FALSE(PathExists(left)) << "the stale unpacked archive is removed";
  EXPECT_TRUE(ListDir(tmp)->empty());
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), 1u);
  EXPECT_FALSE(PathExists(journal));
  EXPECT_EQ(json::parse(Ok({"image", "ls", "--json"})).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Drivers, ImageCli, ::testing::Values("vfs", "overlay"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lamina
