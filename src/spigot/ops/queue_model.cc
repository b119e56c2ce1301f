#include "spigot/ops/queue_model.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

namespace spigot::ops {

double GeometricSum(double q, std::uint64_t n) {
  if (n == 0 || q <= 0) return 0;
  const double y = std::log(q);
  if (y == 0) return static_cast<double>(n);
  // q (1 - q^n) / (1 - q), with expm1 so that q near 1 loses nothing.
  return q * std::expm1(static_cast<double>(n) * y) / std::expm1(y);
}

double WeightedGeometricSum(double q, std::uint64_t n) {
  if (n == 0 || q <= 0) return 0;
  const double y = std::log(q);
  const double nd = static_cast<double>(n);
  if (std::fabs(nd * y) < 1e-3) {
    // Near q = 1 the closed form below cancels; sum_i i e^(i y) = sum_k y^k / k! sum_i i^(k+1),
    // with Faulhaber's power sums. Four terms leave a relative error of about (n y)^4 / 72 < 2e-14.
    const double s1 = nd * (nd + 1) / 2;
    const double s2 = nd * (nd + 1) * (2 * nd + 1) / 6;
    const double s3 = s1 * s1;
    const double s4 = nd * (nd + 1) * (2 * nd + 1) * (3 * nd * nd + 3 * nd - 1) / 30;
    return s1 + y * s2 + y * y / 2 * s3 + y * y * y / 6 * s4;
  }
  // sum_{j=1..n} sum_{i=j..n} q^i = (sum_{i=1..n} q^i - n q^(n+1)) / (1 - q). Here |n y| >= 1e-3,
  // so the subtraction keeps all but about 2e-13 of the relative precision.
  return (GeometricSum(q, n) - nd * std::exp((nd + 1) * y)) / -std::expm1(y);
}

MmckResult SolveMmck(double lambda, double mu, std::uint32_t c, std::uint64_t k) {
  assert(mu > 0 && c >= 1 && k >= c && lambda >= 0);
  MmckResult r;
  if (lambda <= 0) return r;
  const double cd = c;
  r.utilization = lambda / (cd * mu);
  const double ln_a = std::log(lambda / mu);
  const double ln_rho = ln_a - std::log(cd);
  const std::uint64_t m = k - c;  // waiting places

  // Head: log of the unnormalised p_n for n = 0..c (p_0 = 1).
  std::vector<double> head(c + 1);
  head[0] = 0;
  for (std::uint32_t n = 1; n <= c; ++n) head[n] = head[n - 1] + ln_a - std::log(double(n));
  const double ln_c = head[c];
  const double ln_k = ln_c + static_cast<double>(m) * ln_rho;
  // The largest term: in the head, or at n = K when the tail grows (rho > 1).
  double top = *std::max_element(head.begin(), head.end());
  if (m > 0 && ln_rho > 0) top = std::max(top, ln_k);

  double z_head = 0, n_head = 0;  // sum of p_n and of n p_n over the head, relative to e^top
  for (std::uint32_t n = 0; n <= c; ++n) {
    const double w = std::exp(head[n] - top);
    z_head += w;
    n_head += n * w;
  }
  // Tail n = c + j, j = 1..m: t_j = e^(ln_c - top) rho^j. tail0 = sum t_j, tail1 = sum j t_j.
  double tail0 = 0, tail1 = 0;
  if (m > 0 && ln_rho <= 0) {
    const double rho = std::exp(ln_rho);
    const double e = std::exp(ln_c - top);
    tail0 = e * GeometricSum(rho, m);
    tail1 = e * WeightedGeometricSum(rho, m);
  } else if (m > 0) {
    // Growing tail: count down from n = K, t_{m-i} = e^(ln_k - top) s^i with s = 1 / rho < 1.
    const double s = std::exp(-ln_rho);
    const double e = std::exp(ln_k - top);
    const double md = static_cast<double>(m);
    const double g0 = 1 + GeometricSum(s, m - 1);  // sum_{i=0..m-1} s^i
    tail0 = e * g0;
    tail1 = e * (md * g0 - WeightedGeometricSum(s, m - 1));  // sum (m - i) s^i
  }
  const double z = z_head + tail0;
  r.overflow_probability = std::exp(ln_k - top) / z;
  r.mean_queue_length = tail1 / z;
  r.mean_in_system = (n_head + cd * tail0 + tail1) / z;
  r.throughput = lambda * (1 - r.overflow_probability);
  r.mean_wait_seconds = r.throughput > 0 ? r.mean_queue_length / r.throughput : 0;
  return r;
}

}  // namespace spigot::ops
