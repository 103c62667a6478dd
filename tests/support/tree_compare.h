#pragma once

// Compares two directory trees exactly, to prove copies and round trips:
// type, mode, owner, size, content hash (xxh3), symlink target, device
// numbers, xattrs, hard-link structure (which paths share an inode, and
// st_nlink within the tree), and optionally times.

#include <map>
#include <string>
#include <vector>

namespace lamina::test {

struct TreeCompareOptions {
  bool times = true;             // compare mtime (ns); directories included
  bool xattrs = true;            // compare xattrs (values too)
  bool internal_xattrs = false;  // also compare trusted.overlay.* / user.overlay.*
  bool owner = true;
  bool link_structure = true;    // hard-link groups must match
  // Also compare the root directory's own mode, owner, xattrs and mtime (off
  // by default: a tar applied into a fresh directory never sets them).
  bool root_metadata = false;
};

// One line per difference, "path: what (a vs b)"; empty when equal.
std::vector<std::string> CompareTrees(const std::string& a, const std::string& b,
                                      const TreeCompareOptions& options = {});

// A printable listing of a tree, one line per entry with the compared facts,
// sorted; useful for test failure messages and for golden comparisons.
std::string DescribeTree(const std::string& root, const TreeCompareOptions& options = {});

}  // namespace lamina::test
