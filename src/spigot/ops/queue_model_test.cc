#include "spigot/ops/queue_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace spigot::ops {
namespace {

// The textbook M/M/1/K closed forms (Gross & Harris 2.5.1), rho != 1.
double Mm1kBlocking(double rho, int k) {
  return (1 - rho) * std::pow(rho, k) / (1 - std::pow(rho, k + 1));
}
double Mm1kInSystem(double rho, int k) {
  return rho / (1 - rho) - (k + 1) * std::pow(rho, k + 1) / (1 - std::pow(rho, k + 1));
}

// Brute force: every p_n summed in long double, relative to the largest term found by a scan.
struct Brute {
  long double blocking, queue_length;
};
Brute BruteForce(double lambda, double mu, unsigned c, std::uint64_t k) {
  std::vector<long double> logs(k + 1);
  const long double a = static_cast<long double>(lambda) / mu;
  const long double rho = a / c;
  logs[0] = 0;
  for (std::uint64_t n = 1; n <= k; ++n) {
    logs[n] = logs[n - 1] + (n <= c ? std::log(a / n) : std::log(rho));
  }
  long double top = logs[0];
  for (long double l : logs) top = std::max(top, l);
  long double z = 0, lq = 0;
  for (std::uint64_t n = 0; n <= k; ++n) {
    const long double w = std::exp(logs[n] - top);
    z += w;
    if (n > c) lq += (n - c) * w;
  }
  return {std::exp(logs[k] - top) / z, lq / z};
}

TEST(QueueModel, Mm1kMatchesClosedForm) {
  for (double rho : {0.1, 0.5, 0.9, 1.5, 3.0}) {
    for (int k : {1, 3, 10, 50}) {
      const MmckResult r = SolveMmck(rho * 7, 7, 1, k);
      EXPECT_NEAR(r.utilization, rho, 1e-15);
      EXPECT_NEAR(r.overflow_probability, Mm1kBlocking(rho, k), 1e-12) << rho << " " << k;
      EXPECT_NEAR(r.mean_in_system, Mm1kInSystem(rho, k), 1e-9 * k) << rho << " " << k;
      // Lq = L - (1 - p_0), and p_0 = (1 - rho) / (1 - rho^(K+1)).
      const double p0 = (1 - rho) / (1 - std::pow(rho, k + 1));
      EXPECT_NEAR(r.mean_queue_length, Mm1kInSystem(rho, k) - (1 - p0), 1e-9 * k);
    }
  }
  // rho = 1: every state equally likely, P_K = 1 / (K + 1), L = K / 2.
  const MmckResult r = SolveMmck(4, 4, 1, 9);
  EXPECT_NEAR(r.overflow_probability, 0.1, 1e-15);
  EXPECT_NEAR(r.mean_in_system, 4.5, 1e-12);
}

TEST(QueueModel, TwoServersThreePlacesByHand) {
  // c = 2, K = 3, lambda = 2, mu = 1: a = 2, rho = 1.
  // Unnormalised p_n = a^n / n! for n <= 2, then * rho: 1, 2, 2, 2. Sum 7.
  // P_3 = 2/7; one waits only in state 3: Lq = 2/7; L = (0 + 2 + 4 + 6) / 7 = 12/7;
  // throughput = 2 * (1 - 2/7) = 10/7; Wq = Lq / throughput = 0.2 s.
  MmckResult r = SolveMmck(2, 1, 2, 3);
  EXPECT_NEAR(r.utilization, 1.0, 1e-15);
  EXPECT_NEAR(r.overflow_probability, 2.0 / 7, 1e-15);
  EXPECT_NEAR(r.mean_queue_length, 2.0 / 7, 1e-15);
  EXPECT_NEAR(r.mean_in_system, 12.0 / 7, 1e-14);
  EXPECT_NEAR(r.throughput, 10.0 / 7, 1e-14);
  EXPECT_NEAR(r.mean_wait_seconds, 0.2, 1e-14);

  // lambda = 1, mu = 1: a = 1, rho = 1/2. p_n: 1, 1, 1/2, 1/4. Sum 11/4.
  // P_3 = (1/4) / (11/4) = 1/11 = Lq; L = (1 + 1 + 3/4) / (11/4) = 1.
  r = SolveMmck(1, 1, 2, 3);
  EXPECT_NEAR(r.utilization, 0.5, 1e-15);
  EXPECT_NEAR(r.overflow_probability, 1.0 / 11, 1e-15);
  EXPECT_NEAR(r.mean_queue_length, 1.0 / 11, 1e-15);
  EXPECT_NEAR(r.mean_in_system, 1.0, 1e-14);
}

TEST(QueueModel, NoWaitingRoomIsErlangLoss) {
  // K = c: Erlang B. c = 2, a = 1: B = (1/2) / (1 + 1 + 1/2) = 0.2.
  const MmckResult r = SolveMmck(3, 3, 2, 2);
  EXPECT_NEAR(r.overflow_probability, 0.2, 1e-15);
  EXPECT_EQ(r.mean_queue_length, 0);
}

TEST(QueueModel, OverloadRefusesTheExcess) {
  // rho > 1 and a large queue: the queue sits full and the refused fraction is what capacity
  // cannot take, (rho - 1) / rho.
  for (double rho : {1.25, 2.0, 10.0}) {
    for (unsigned c : {1u, 4u, 64u}) {
      const MmckResult r = SolveMmck(rho * c * 100, 100, c, 65536 + c);
      EXPECT_NEAR(r.overflow_probability, (rho - 1) / rho, 1e-9) << rho << " " << c;
      EXPECT_NEAR(r.throughput, c * 100, 1e-6 * c * 100);
      EXPECT_GT(r.mean_queue_length, 65536 - 1.0 / (rho - 1) - 2);
    }
  }
  // Far past any double power: a^n and rho^K overflow, the log-space solve does not.
  const MmckResult r = SolveMmck(1e9, 1, 1, std::uint64_t{1} << 32);
  EXPECT_NEAR(r.overflow_probability, 1 - 1e-9, 1e-12);
  EXPECT_TRUE(std::isfinite(r.mean_queue_length));
}

TEST(QueueModel, LightLoadAtDefaultQueueNeverOverflows) {
  const MmckResult r = SolveMmck(0.3, 650, 2, 65536 + 2);
  EXPECT_EQ(r.overflow_probability, 0);  // below the smallest double
  EXPECT_NEAR(r.utilization, 0.3 / 1300, 1e-18);
  EXPECT_GE(r.mean_wait_seconds, 0);
  EXPECT_LT(r.mean_wait_seconds, 1e-6);
}

TEST(QueueModel, EmptyWithoutArrivals) {
  const MmckResult r = SolveMmck(0, 1, 2, 10);
  EXPECT_EQ(r.overflow_probability, 0);
  EXPECT_EQ(r.mean_in_system, 0);
  EXPECT_EQ(r.utilization, 0);
}

TEST(QueueModel, MatchesBruteForceAtDefaultQueueSize) {
  // Around rho = 1, where closed-form tails cancel, and with the real K = 65536 + c.
  for (unsigned c : {1u, 2u, 8u, 64u}) {
    for (double rho : {0.5, 0.99, 0.999999, 1 - 1e-9, 1.0, 1 + 1e-9, 1.000001, 1.01, 2.0}) {
      const std::uint64_t k = 65536 + c;
      const double mu = 3.0;
      const MmckResult r = SolveMmck(rho * c * mu, mu, c, k);
      const Brute b = BruteForce(rho * c * mu, mu, c, k);
      EXPECT_NEAR(r.overflow_probability, double(b.blocking), 1e-9 * double(b.blocking) + 1e-300)
          << c << " " << rho;
      EXPECT_NEAR(r.mean_queue_length, double(b.queue_length),
                  1e-9 * double(b.queue_length) + 1e-12)
          << c << " " << rho;
    }
  }
}

TEST(QueueModel, GeometricSums) {
  for (double q : {0.0, 0.3, 0.9, 0.999, 1 - 1e-7, 1 - 1e-12, 1.0}) {
    for (std::uint64_t n : {0, 1, 2, 17, 1000}) {
      long double s0 = 0, s1 = 0, p = 1;
      for (std::uint64_t i = 1; i <= n; ++i) {
        p *= q;
        s0 += p;
        s1 += i * p;
      }
      EXPECT_NEAR(GeometricSum(q, n), double(s0), 1e-12 * double(s0)) << q << " " << n;
      EXPECT_NEAR(WeightedGeometricSum(q, n), double(s1), 1e-12 * double(s1)) << q << " " << n;
    }
  }
  const std::uint64_t big = std::uint64_t{1} << 32;
  const double nb = double(big);
  EXPECT_EQ(GeometricSum(1.0, big), nb);
  EXPECT_EQ(WeightedGeometricSum(1.0, big), nb * (nb + 1) / 2);
  // One ulp below 1 with n = 2^32: n y = -4.8e-7, where the closed forms would cancel. Against
  // the Taylor expansion in y = ln q to second order (the third is below 1e-19 relative):
  //   sum q^i   = n + y n(n+1)/2 + y^2/2 n(n+1)(2n+1)/6
  //   sum i q^i = n(n+1)/2 + y n(n+1)(2n+1)/6 + y^2/2 (n(n+1)/2)^2
  const double q = std::nextafter(1.0, 0.0);
  const long double y = std::log1p(static_cast<long double>(q) - 1);
  const long double n = nb;
  const long double s1 = n * (n + 1) / 2, s2 = n * (n + 1) * (2 * n + 1) / 6;
  EXPECT_NEAR(GeometricSum(q, big), double(n + y * s1 + y * y / 2 * s2), 1e-12 * nb);
  EXPECT_NEAR(WeightedGeometricSum(q, big), double(s1 + y * s2 + y * y / 2 * s1 * s1),
              1e-12 * nb * nb);
}

}  // namespace
}  // namespace spigot::ops
