#include "spigot/io/clock.h"

namespace spigot::io {

Clock& DefaultClock() {
  static SteadyClock clock;
  return clock;
}

}  // namespace spigot::io
