// For a test that waits on another thread's progress which signals nothing it could block on
// (an engine counter, a pool's bookkeeping after a job returns): yields until `done` holds.
// Nothing here depends on how fast the machine is; `limit` (30 s) only stops a broken test
// from hanging. Prefer a real condition (a latch, a future, an fd) where the code offers one.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace spigot::test_tools {

inline bool WaitUntil(const std::function<bool()>& done,
                      std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace spigot::test_tools
