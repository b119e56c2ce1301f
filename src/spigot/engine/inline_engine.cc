#include "spigot/engine/inline_engine.h"

namespace spigot::engine {

std::size_t InlineEngine::Submit(std::span<const JobRef> jobs) {
  crypto::ImbManager& mgr = crypto::ImbManager::ForThisThread();
  for (const JobRef& ref : jobs) {
    counters_.submitted.fetch_add(1, kRelaxed);
    if (!Claim(ref)) {
      counters_.late_discarded.fetch_add(1, kRelaxed);
      continue;
    }
    Complete(ref, Execute(mgr, *ref.job));
    counters_.completed.fetch_add(1, kRelaxed);
  }
  return jobs.size();
}

}  // namespace spigot::engine
