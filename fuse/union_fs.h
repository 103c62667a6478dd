#pragma once

// The lamina-fuse union filesystem: a libfuse3 low-level filesystem whose
// semantics follow kernel overlayfs (see DESIGN.md, "fuse").
//
// What it adds to the shared on-disk format (DESIGN.md), all hidden from
// users and ignored by the kernel overlay:
//   <ns>.overlay.lamina.origin = "dev:ino" on copied-up objects: the lower
//       origin, so st_ino stays the same across copy-up and remount.
//   work/index/<dev>-<ino>: a hard link to the upper copy of a lower file
//       that had several names (kernel index=on), so the inode is copied up
//       once; <ns>.overlay.lamina.lower on it counts lower names not yet up.
//   work/work/#lamina-*: copy-ups and removals in progress; Create() removes
//       leftovers.
// <ns> is "trusted" when a trial setxattr in the workdir works, else "user";
// readers accept both, plus .wh.NAME whiteouts, .wh..wh..opq and
// user.fuseoverlayfs.opaque. Users may set "<ns>.overlay.X" xattrs; they are
// stored escaped as "<ns>.overlay.overlay.X", as the kernel overlay does.
// Differences from the kernel overlay: names starting with ".wh." cannot be
// created (EINVAL) and are never shown.
//
// Lifetime: Create() opens the layers and checks them; the caller (the
// lamina-fuse main) makes the fuse session with Ops() and `this` as
// userdata, mounts, runs the loop, and destroys the object after the
// session has ended.

#include <fuse_lowlevel.h>

#include <memory>

#include "common/result.h"
#include "fuse/config.h"

namespace lamina::fuse {

class UnionFs {
 public:
  virtual ~UnionFs() = default;

  // Opens every layer directory, checks upper and work are on one
  // filesystem, cleans leftovers of an interrupted copy-up from the work
  // dir. Errors name the offending directory.
  static Result<std::unique_ptr<UnionFs>> Create(const FsConfig& config);

  // The operation table, filled in one place. `userdata` for
  // fuse_session_new must be this object.
  virtual const fuse_lowlevel_ops& Ops() const = 0;

  // Tells the filesystem its session, after fuse_session_new and before the
  // loop runs, so that it can invalidate kernel caches
  // (fuse_lowlevel_notify_inval_*) when its own operations change something
  // the kernel cached. Optional: without it nothing is invalidated.
  virtual void AttachSession(fuse_session* session) { (void)session; }

  // How readdirplus answered so far (UnionFsImpl::PlusWithAttrs): entries
  // of non-directories with and without attributes, and how often the
  // attributes were turned off because nothing used them.
  struct ListingStats {
    uint64_t files_with_attrs = 0;
    uint64_t files_without_attrs = 0;
    uint64_t attrs_turned_off = 0;
    // Kernel listing caches dropped by CheckListingEnd.
    uint64_t caches_dropped = 0;
  };
  virtual ListingStats listing_stats() const = 0;
};

}  // namespace lamina::fuse
