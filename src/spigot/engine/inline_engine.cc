#include "spigot/engine/inline_engine.h"

namespace spigot::engine {

std::size_t InlineEngine::Submit(std::span<const JobRef> jobs) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  // Claimed kCapacity at a time and run together (CBC + HMAC through the multi-buffer lanes).
  esp::CryptoBatch batch;
  JobRef claimed[esp::CryptoBatch::kCapacity];
  std::size_t n = 0;
  const auto run = [&] {
    ExecuteAndComplete(mgr, batch, {claimed, n});
    counters_.completed.fetch_add(n, kRelaxed);
    n = 0;
  };
  for (const JobRef& ref : jobs) {
    counters_.submitted.fetch_add(1, kRelaxed);
    if (!Claim(ref)) {
      counters_.late_discarded.fetch_add(1, kRelaxed);
      continue;
    }
    claimed[n++] = ref;
    if (n == esp::CryptoBatch::kCapacity) run();
  }
  run();
  return jobs.size();
}

}  // namespace spigot::engine
