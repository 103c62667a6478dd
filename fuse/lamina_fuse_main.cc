// lamina-fuse: the union filesystem daemon, command-line compatible with
// fuse-overlayfs (see fuse/options.h for the grammar).
//
// Life cycle: parse -> resolve paths -> UnionFs::Create -> fuse_session_new
// -> fuse_session_mount -> fuse_daemonize (unless -f: the parent exits 0
// only after the mount is live, so `lamina-fuse ... && ls MNT` works) ->
// session loop -> unmount -> exit 0. SIGTERM/SIGINT/SIGHUP end the loop and
// unmount; `fusermount3 -u` / `umount` end the loop from outside. Every
// error before the daemon detaches exits 1 with one line on stderr.

#include <fuse_lowlevel.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/result.h"
#include "common/scope_guard.h"
#include "fuse/options.h"
#include "fuse/union_fs.h"

#ifndef LAMINA_VERSION
#define LAMINA_VERSION "0.0.0"
#endif

namespace lamina::fuse {

namespace {

int Die(const std::string& message) {
  std::fprintf(stderr, "lamina-fuse: %s\n", message.c_str());
  return 1;
}

// The daemon keeps an fd per open layer directory and inode: raise the
// soft limit to the hard one, as fuse-overlayfs does.
void RaiseFileLimit() {
  struct rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

int Run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = ParseCommandLine(args, ParseEnv{::geteuid()});
  if (!parsed) return Die(parsed.error().message());
  CommandLine cl = std::move(*parsed);
  FsConfig& config = cl.config;

  if (cl.show_help) {
    std::fputs(UsageText(argc > 0 ? argv[0] : "lamina-fuse").c_str(), stdout);
    return 0;
  }
  if (cl.show_version) {
    std::printf("lamina-fuse version %s\n", LAMINA_VERSION);
    std::printf("FUSE library version %s\n", fuse_pkgversion());
    std::fflush(stdout);
    fuse_lowlevel_version();
    return 0;
  }

  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return Die("getcwd: " + std::string(strerror(errno)));
  if (auto resolved = ResolvePaths(&config, cwd); !resolved) {
    return Die(resolved.error().message());
  }
  if (auto logging = InitLogging(config.debug ? "debug" : ""); !logging) {
    return Die(logging.error().message());
  }
  RaiseFileLimit();
  // The daemon's own work (copy-up, whiteouts, the workdir) sets modes
  // explicitly; a create takes the caller's umask for its thread (DoMake).
  ::umask(0);

  auto created = UnionFs::Create(config);
  if (!created) return Die(created.error().message());
  std::unique_ptr<UnionFs> fs = std::move(*created);

  std::vector<std::string> session_args = SessionArgs(config, argc > 0 ? argv[0] : "lamina-fuse");
  std::vector<char*> session_argv;
  for (auto& a : session_args) session_argv.push_back(a.data());
  session_argv.push_back(nullptr);
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(session_args.size()), session_argv.data());

  fuse_session* se = fuse_session_new(&fargs, &fs->Ops(), sizeof(fuse_lowlevel_ops), fs.get());
  fuse_opt_free_args(&fargs);
  if (se == nullptr)
    return Die("cannot create the FUSE session (options: " + FormatOptions(config) + ")");
  auto destroy = Defer([&] { fuse_session_destroy(se); });
  fs->AttachSession(se);

  // libfuse leaves a signal alone when it is ignored (as `cmd &` in a
  // script ignores SIGINT); these three always unmount lamina-fuse.
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::signal(sig, SIG_DFL);
  if (fuse_set_signal_handlers(se) != 0) return Die("cannot set signal handlers");
  auto remove_handlers = Defer([&] { fuse_remove_signal_handlers(se); });

  if (fuse_session_mount(se, config.mountpoint.c_str()) != 0) {
    return Die("cannot mount on " + config.mountpoint);
  }
  auto unmount = Defer([&] { fuse_session_unmount(se); });

  // Forks: the parent waits until the child has detached, then exits 0; the
  // mount is already live at this point.
  if (fuse_daemonize(config.foreground ? 1 : 0) != 0) return Die("cannot daemonize");

  int ret = 0;
  if (config.threaded) {
    fuse_loop_config* loop = fuse_loop_cfg_create();
    if (loop == nullptr) return Die("out of memory");
    auto free_loop = Defer([&] { fuse_loop_cfg_destroy(loop); });
    fuse_loop_cfg_set_clone_fd(loop, cl.clone_fd ? 1 : 0);
    if (cl.max_threads > 0)
      fuse_loop_cfg_set_max_threads(loop, static_cast<unsigned>(cl.max_threads));
    if (cl.max_idle_threads >= 0) {
      fuse_loop_cfg_set_idle_threads(loop, static_cast<unsigned>(cl.max_idle_threads));
    }
    ret = fuse_session_loop_mt(se, loop);
  } else {
    ret = fuse_session_loop(se);
  }
  UnionFs::ListingStats listed = fs->listing_stats();
  spdlog::debug(
      "readdirplus: {} files with attributes, {} without, attributes turned off {} times; "
      "kernel listing caches dropped {} times",
      listed.files_with_attrs, listed.files_without_attrs, listed.attrs_turned_off,
      listed.caches_dropped);
  // ret > 0: ended by a signal; 0: unmounted from outside. Both are a clean end.
  if (ret < 0) {
    spdlog::error("session loop: {}", strerror(-ret));
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace lamina::fuse

int main(int argc, char** argv) {
  try {
    return lamina::fuse::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lamina-fuse: %s\n", e.what());
    return 1;
  }
}
