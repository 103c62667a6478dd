#pragma once

#include <utility>

namespace lamina {

// Runs a callable when it leaves scope, unless dismissed.
//   auto cleanup = Defer([&] { RemoveTree(tmp); });
//   ...; cleanup.Dismiss();
template <class F>
class [[nodiscard]] ScopeGuard {
 public:
  explicit ScopeGuard(F fn) : fn_(std::move(fn)) {}
  ScopeGuard(ScopeGuard&& other) noexcept : fn_(std::move(other.fn_)), active_(other.active_) {
    other.active_ = false;
  }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  ~ScopeGuard() {
    if (active_) fn_();
  }
  void Dismiss() { active_ = false; }

 private:
  F fn_;
  bool active_ = true;
};

template <class F>
ScopeGuard<F> Defer(F fn) {
  return ScopeGuard<F>(std::move(fn));
}

}  // namespace lamina
