// The inline crypto engine: intel-ipsec-mb on the calling thread. Today's data path, and what
// every other engine falls back to.
#pragma once

#include "spigot/engine/crypto_engine.h"

namespace spigot::engine {

class InlineEngine final : public CryptoEngine {
 public:
  const char* name() const override { return "inline"; }
  // Runs every job before it returns: all are accepted.
  std::size_t Submit(std::span<const JobRef> jobs) override;
};

}  // namespace spigot::engine
