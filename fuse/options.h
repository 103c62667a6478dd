#pragma once

// The lamina-fuse command line: everything fuse-overlayfs accepts, parsed
// into a plain FsConfig (fuse/config.h) plus the few things only the main
// needs (help, version, the positional source, session tuning).
//
//   lamina-fuse [SOURCE] MOUNTPOINT -o lowerdir=L1:L2,upperdir=U,workdir=W[,...]
//               [-f] [-d|--debug] [-s] [-V|--version] [-h|--help]
//
// Grammar of an -o group (after the shell has done its quoting):
//   - items are separated by ",", empty items (",,", a trailing ",") are
//     skipped;
//   - a backslash escapes the next character: "\," is a comma inside a value,
//     "\:" a colon inside one path of lowerdir= (not a layer separator),
//     "\\" a backslash. The kernel's overlayfs reads its options the same way.
//   - a value may be wrapped in double quotes (context="a,b"), which also
//     protects commas.
// Several -o groups (also "-oX" glued) add up; a later value of an option
// replaces an earlier one.
//
// Options that change nothing here (fstab's noauto/nofail/_netdev/x-*,
// libfuse's clone_fd, atime flags libfuse cannot pass on...) are accepted
// silently. Everything else unknown fails. Every failure is
// Fail(EINVAL, "<message naming the option>").

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "fuse/config.h"

namespace lamina::fuse {

// What the parse needs from the process (passed in so tests can vary it).
struct ParseEnv {
  // Defaults follow fuse-overlayfs: root mounts get allow_other and suid.
  uid_t euid = 0;
};

struct CommandLine {
  FsConfig config;
  // The positional source argument (mount.fuse3 passes one); may be empty.
  std::string source;
  bool show_help = false;
  bool show_version = false;

  // Session tuning (libfuse's -o clone_fd, max_threads=, max_idle_threads=).
  bool clone_fd = false;
  int max_threads = -1;       // -1: libfuse's default
  int max_idle_threads = -1;  // -1: libfuse's default
  // The spelled values of redirect_dir= and xino= (config keeps booleans):
  // "on", "off", "follow", "nofollow" / "on", "off", "auto"; empty if unset.
  std::string redirect_dir_mode;
  std::string xino_mode;
  int fast_ino = 0;
};

// Parses argv without argv[0]. Syntax only: paths are kept as written (see
// ResolvePaths). Fails with EINVAL and a message naming the option for an
// unknown option, a bad number, a bad mapping, a missing mount point, more
// than two positional arguments, upperdir without workdir or without
// lowerdir (as fuse-overlayfs). With --help or --version the rest is not
// checked.
Result<CommandLine> ParseCommandLine(const std::vector<std::string>& args, const ParseEnv& env);

// Parses one -o group into `cl` (exposed for tests).
Result<void> ParseOptionGroup(std::string_view group, CommandLine* cl);

// Makes every path absolute and canonical: lowers (symlinks resolved),
// upper, work (relative paths against `cwd`), and the mount point (its
// parent resolved, the last component kept, so a dead FUSE mount that
// answers ENOTCONN can still be mounted over). Fails with the errno of the
// lookup and the option in the context ("lowerdir l/A: No such file...").
Result<void> ResolvePaths(FsConfig* config, const std::string& cwd);

// Splits a lowerdir= value on unescaped ":" and undoes the escapes.
// Empty items are skipped. Exposed for tests.
std::vector<std::string> SplitLowerDirs(std::string_view value);

// Parses "inner:outer:count[:inner:outer:count...]" (a leading ":" and
// empty items allowed, as fuse-overlayfs). Fails (EINVAL) on a non-number,
// a count of 0, an incomplete triple, a range past 2^32, or ranges that
// overlap on either side.
Result<std::vector<IdMapRange>> ParseIdMapping(std::string_view option, std::string_view value);

// The -o string that parses back into `config` (lowerdir, upperdir,
// workdir, every non-default option; paths escaped). Not the mount point,
// -f or -d.
std::string FormatOptions(const FsConfig& config);
std::string FormatIdMapping(const std::vector<IdMapRange>& ranges);
// Escapes "\", ",", ":" (and '"') with a backslash, for a path in an -o value.
std::string EscapePath(std::string_view path);

// The libfuse arguments for fuse_session_new: argv[0], "-o" with fsname,
// subtype, allow_other, default_permissions, ro, the kernel flags libfuse
// passes on, and "-d" when debugging.
std::vector<std::string> SessionArgs(const FsConfig& config, const std::string& argv0);

// The usage text for --help.
std::string UsageText(std::string_view argv0);

}  // namespace lamina::fuse
