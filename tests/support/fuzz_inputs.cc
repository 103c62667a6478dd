#include "tests/support/fuzz_inputs.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/tar.h"
#include "fuse/options.h"
#include "store/image_oci.h"
#include "store/image_parse.h"

namespace lamina::test {

std::string FuzzFuseOptions(std::string_view input) {
  using namespace lamina::fuse;
  std::vector<std::string> args;
  for (size_t start = 0; start <= input.size();) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    args.emplace_back(input.substr(start, end - start));
    start = end + 1;
  }
  // Root and non-root defaults differ (allow_other, suid).
  ParseEnv env{.euid = (input.size() % 2 == 0) ? 0u : 1000u};
  auto cl = ParseCommandLine(args, env);
  if (cl && !cl->show_help && !cl->show_version) {
    std::string formatted = FormatOptions(cl->config);
    auto again = ParseCommandLine({"-o", formatted, "/mnt"}, env);
    if (!again)
      return "formatted options do not parse: " + formatted + ": " + again.error().message();
    if (FormatOptions(again->config) != formatted) {
      return "options change in a round trip: " + formatted + " -> " + FormatOptions(again->config);
    }
    if (again->config.lowers != cl->config.lowers)
      return "lowerdir changes in a round trip: " + formatted;
  }
  for (const auto& arg : args) {
    (void)ParseIdMapping("uidmapping", arg);
    (void)SplitLowerDirs(arg);
    CommandLine scratch;
    (void)ParseOptionGroup(arg, &scratch);
    if (!arg.empty()) {
      auto paths = SplitLowerDirs(EscapePath(arg));
      if (paths.size() != 1 || paths[0] != arg)
        return "EscapePath/SplitLowerDirs round trip: " + arg;
    }
  }
  return "";
}

std::string FuzzImageParse(std::string_view input) {
  using namespace lamina::store::oci;
  auto j = ParseJson(std::string(input), "fuzz");
  if (!j) return "";
  (void)ParseIndex(*j, "index", /*non_empty=*/true);
  (void)PickPlatform(*j, "index");
  (void)ParseManifest(*j, "manifest");
  (void)ParseImageConfig(*j, "config");
  (void)ParseDockerManifest(*j, "manifest.json");
  (void)ParseDescriptor(*j, "descriptor");
  if (j->is_string()) (void)DigestHex(j->get<std::string>());
  return "";
}

std::string MakeTarScratch(const std::string& scratch) {
  auto written = WriteFileAtomic(scratch + "/canary", "canary\n");
  return written ? "" : written.error().message();
}

std::string FuzzTarApply(std::string_view input, const std::string& scratch) {
  int raw = ::memfd_create("fuzz-tar", MFD_CLOEXEC);
  if (raw < 0) return "memfd_create failed";
  Fd tar(raw);
  if (::write(tar.get(), input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
    return "write to the memfd failed";
  }
  bool root = ::geteuid() == 0;
  for (WhiteoutMode mode : {WhiteoutMode::kUnion, WhiteoutMode::kFullTree}) {
    std::string target = scratch + "/root";
    if (::mkdir(target.c_str(), 0755) != 0) return "mkdir " + target + " failed";
    if (::lseek(tar.get(), 0, SEEK_SET) != 0) return "lseek failed";
    ApplyOptions options;
    options.whiteouts = mode;
    options.xattr_ns = root ? XattrNamespace::kTrusted : XattrNamespace::kUser;
    options.same_owner = root && mode == WhiteoutMode::kUnion;
    options.max_entry_bytes = 1 << 20;
    options.max_total_bytes = 4 << 20;
    (void)ApplyTar(tar.get(), target, options);
    // The applied tree may hold read-only directories: RemoveTree copes.
    if (auto removed = RemoveTree(target); !removed) {
      return "cannot remove the applied tree: " + removed.error().message();
    }
    auto names = ListDir(scratch);
    if (!names || names->size() != 1 || (*names)[0] != "canary") {
      return "an entry escaped the target directory";
    }
    auto canary = ReadFile(scratch + "/canary");
    if (!canary || *canary != "canary\n") return "the canary beside the target changed";
  }
  return "";
}

}  // namespace lamina::test
