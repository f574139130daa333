// Histogram: bucket geometry, the relative error bound, exact small values, percentiles of
// a known distribution, merge, max and the text form.
#include "bench/histogram.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace ps::bench {
namespace {

TEST(Histogram, BucketsCoverEveryValueWithBoundedWidth) {
  for (size_t i = 0; i < Histogram::kBucketCount; ++i) {
    uint64_t lo = Histogram::bucket_lower(i), w = Histogram::bucket_width(i);
    EXPECT_EQ(Histogram::bucket_index(lo), i) << i;
    EXPECT_EQ(Histogram::bucket_index(lo + w - 1), i) << i;
    if (i + 1 < Histogram::kBucketCount) {
      EXPECT_EQ(Histogram::bucket_lower(i + 1), lo + w) << i;
    }
    if (lo >= 256) {
      EXPECT_LE(double(w) / double(lo), 1.0 / 128.0) << i;
    }
  }
  EXPECT_GE(Histogram::kMaxTrackable, uint64_t(3600) * 1'000'000);  // at least an hour in µs
}

TEST(Histogram, SmallValuesAreExact) {
  for (uint64_t v = 0; v < 256; ++v) {
    Histogram h;
    h.record(v);
    EXPECT_EQ(h.value_at_percentile(50), v);
    EXPECT_EQ(h.value_at_percentile(99.9), v);
  }
}

TEST(Histogram, RelativeErrorIsBoundedForManyValues) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) {
    // log-uniform over 1 µs .. ~2 h
    uint64_t v = uint64_t(std::exp(std::uniform_real_distribution<double>(0, std::log(7.0e9))(rng)));
    Histogram h;
    h.record(v);
    h.record(Histogram::kMaxTrackable);  // so the percentile is not clamped to max
    uint64_t got = h.value_at_percentile(50);
    double err = std::abs(double(got) - double(v)) / double(std::max<uint64_t>(v, 1));
    ASSERT_LE(err, 1.0 / 256.0 + 1e-12) << "v=" << v << " got=" << got;
  }
}

TEST(Histogram, PercentilesOfAUniformDistribution) {
  Histogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100000u);
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9}) {
    double want = p / 100.0 * 100000.0;
    double got = double(h.value_at_percentile(p));
    EXPECT_LE(std::abs(got - want) / want, 1.0 / 128.0) << "p" << p << " got " << got;
  }
  EXPECT_EQ(h.value_at_percentile(100), 100000u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_NEAR(h.mean(), 50000.5, 1e-6);
}

TEST(Histogram, MaxIsExactEvenAboveTheTrackableRange) {
  Histogram h;
  h.record(123456789);
  h.record(3);
  EXPECT_EQ(h.max(), 123456789u);
  uint64_t huge = Histogram::kMaxTrackable * 4;
  h.record(huge);
  EXPECT_EQ(h.max(), huge);
  EXPECT_EQ(h.value_at_percentile(100), huge);
  EXPECT_LE(h.value_at_percentile(99), huge);
}

TEST(Histogram, MergeEqualsRecordingIntoOne) {
  std::mt19937_64 rng(7);
  Histogram a, b, all;
  for (int i = 0; i < 50000; ++i) {
    uint64_t v = rng() % 5'000'000;
    (i % 3 ? a : b).record(v);
    all.record(v);
  }
  Histogram m = a;
  m.merge(b);
  EXPECT_TRUE(m == all);
  for (double p : {50.0, 90.0, 99.0, 99.9}) EXPECT_EQ(m.value_at_percentile(p), all.value_at_percentile(p));
  EXPECT_EQ(m.max(), all.max());
  EXPECT_EQ(m.count(), all.count());
}

TEST(Histogram, SerializeRoundTrips) {
  Histogram h;
  for (uint64_t v : {0ull, 5ull, 300ull, 70000ull, 70001ull, 9'000'000'000ull}) h.record(v, 3);
  auto back = Histogram::parse(h.serialize());
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == h);
  Histogram empty;
  auto e = Histogram::parse(empty.serialize());
  ASSERT_TRUE(e);
  EXPECT_EQ(e->count(), 0u);
  EXPECT_FALSE(Histogram::parse("3;1;1;3;5:2"));  // counts do not add up
  EXPECT_FALSE(Histogram::parse("garbage"));
  EXPECT_FALSE(Histogram::parse("1;1;1;1;999999:1"));  // no such bucket
}

TEST(Histogram, PercentilesAreMonotonic) {
  Histogram h;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 10000; ++i) h.record(rng() % 1'000'000);
  uint64_t prev = 0;
  for (double p = 1; p <= 100; p += 0.5) {
    uint64_t v = h.value_at_percentile(p);
    EXPECT_GE(v, prev);
    prev = v;
  }
}

}  // namespace
}  // namespace ps::bench
