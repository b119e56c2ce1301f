// The M/M/c/K queue: `spigot plan`'s model of the negotiation queue (DESIGN.md cause 2).
//
// Negotiations arrive as a Poisson stream at `lambda` per second; c workers each complete one in
// an exponentially distributed time with rate `mu`; at most K negotiations are in the system
// (c in service, K - c waiting: the queue of `max_queue`); an arrival that finds K is refused
// (STATUS_IPSEC_QUEUE_OVERFLOW). The stationary distribution is, with a = lambda / mu and
// rho = a / c (Kleinrock, Queueing Systems I, 3.7; Gross & Harris, Fundamentals of Queueing
// Theory, 2.5):
//   p_n = p_0 a^n / n!                 for 0 <= n <= c
//   p_n = p_0 a^c / c! rho^(n - c)     for c <  n <= K
// P_K is the probability that an arrival is refused (PASTA).
//
// K may be 2^32 and rho far above 1, where a^n overflows and the sums cancel: the solver works
// with logarithms relative to the largest term, sums the c + 1 head terms directly and the
// geometric tail in closed form, in O(c) time whatever K is.
#pragma once

#include <cstdint>

namespace spigot::ops {

struct MmckResult {
  double utilization = 0;           // rho = lambda / (c mu), the offered load (may exceed 1)
  double overflow_probability = 0;  // P_K: an arrival finds the system full and is refused
  double mean_queue_length = 0;     // Lq: mean number waiting (not in service)
  double mean_in_system = 0;        // L: waiting plus in service
  double throughput = 0;            // lambda (1 - P_K): admitted negotiations per second
  double mean_wait_seconds = 0;     // Wq = Lq / throughput, for admitted negotiations (Little)
};

// Requires mu > 0, c >= 1, k >= c, lambda >= 0 (lambda == 0 gives the empty system).
MmckResult SolveMmck(double lambda, double mu, std::uint32_t c, std::uint64_t k);

// Sums of the geometric tail, exposed for tests: for 0 <= q <= 1,
//   GeometricSum(q, n)         = sum_{i=1..n} q^i
//   WeightedGeometricSum(q, n) = sum_{i=1..n} i q^i
// accurate (to ~1e-12 relative) also when q is within rounding of 1 and n is 2^32.
double GeometricSum(double q, std::uint64_t n);
double WeightedGeometricSum(double q, std::uint64_t n);

}  // namespace spigot::ops
