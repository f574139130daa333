// Histogram: a log-linear latency histogram over non-negative integer values (the bench
// records microseconds), written for `paystream bench` (no HdrHistogram package here).
//
// Buckets: values below 2^(kSubBits+1) = 256 have one bucket each (exact). Above that,
// every power-of-two range [2^m, 2^(m+1)) is split into 2^kSubBits = 128 equal
// sub-buckets, so a bucket's width is at most 1/128 of its lower bound. Values up to
// kMaxTrackable (2^33 - 1 µs ≈ 2.4 h) are tracked; larger values are clamped into the top
// bucket, while max() keeps the exact largest value recorded.
//
// Error bound: value_at_percentile() returns the midpoint of the bucket that holds the
// requested rank (clamped to [min, max]); its relative error against the true sample at
// that rank is at most 1/256 for values >= 256 and 0 below.
//
// Not thread-safe; each worker owns its own and the parent merges. serialize()/parse()
// give a compact text form for the worker result files.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ps::bench {

class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;        // 128
  static constexpr int kMaxExponent = 33;                                // tracks < 2^33
  static constexpr uint64_t kMaxTrackable = (uint64_t{1} << kMaxExponent) - 1;
  static constexpr size_t kBucketCount = (kMaxExponent - kSubBits) * kSubCount + kSubCount;

  Histogram();

  void record(uint64_t value, uint64_t times = 1);
  void merge(const Histogram& other);
  void reset();

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }              // exact; 0 when empty
  uint64_t min() const { return count_ ? min_ : 0; } // exact; 0 when empty
  double mean() const { return count_ ? double(sum_) / double(count_) : 0.0; }
  // The value at percentile p (0 < p <= 100): the smallest bucket whose cumulative count
  // reaches ceil(p/100 * count). 0 when empty; p >= 100 returns max().
  uint64_t value_at_percentile(double p) const;

  // Bucket geometry (exposed for tests).
  static size_t bucket_index(uint64_t value);
  static uint64_t bucket_lower(size_t index);
  static uint64_t bucket_width(size_t index);

  // "count;min;max;sum;idx:n,idx:n,..." — only non-empty buckets.
  std::string serialize() const;
  static std::optional<Histogram> parse(std::string_view text);

  bool operator==(const Histogram& o) const = default;

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
  uint64_t sum_ = 0;
};

}  // namespace ps::bench
