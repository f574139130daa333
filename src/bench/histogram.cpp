#include "bench/histogram.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

namespace ps::bench {

Histogram::Histogram() : counts_(kBucketCount, 0) {}

size_t Histogram::bucket_index(uint64_t v) {
  if (v > kMaxTrackable) v = kMaxTrackable;
  const int msb = 63 - std::countl_zero(v | 1);
  const int shift = std::max(0, msb - kSubBits);
  return size_t(shift) * kSubCount + size_t(v >> shift);
}

uint64_t Histogram::bucket_lower(size_t i) {
  if (i < 2 * kSubCount) return i;
  const uint64_t shift = i / kSubCount - 1;
  const uint64_t mantissa = i % kSubCount + kSubCount;
  return mantissa << shift;
}

uint64_t Histogram::bucket_width(size_t i) {
  if (i < 2 * kSubCount) return 1;
  return uint64_t{1} << (i / kSubCount - 1);
}

void Histogram::record(uint64_t value, uint64_t times) {
  if (times == 0) return;
  counts_[bucket_index(value)] += times;
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  count_ += times;
  sum_ += value * times;
}

void Histogram::merge(const Histogram& o) {
  if (o.count_ == 0) return;
  for (size_t i = 0; i < kBucketCount; ++i) counts_[i] += o.counts_[i];
  if (count_ == 0 || o.min_ < min_) min_ = o.min_;
  max_ = std::max(max_, o.max_);
  count_ += o.count_;
  sum_ += o.sum_;
}

void Histogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = min_ = max_ = sum_ = 0;
}

uint64_t Histogram::value_at_percentile(double p) const {
  if (count_ == 0) return 0;
  if (p >= 100.0) return max_;
  if (p < 0) p = 0;
  uint64_t rank = uint64_t(std::ceil(p / 100.0 * double(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      uint64_t mid = bucket_lower(i) + (bucket_width(i) - 1) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

std::string Histogram::serialize() const {
  std::string s = std::to_string(count_) + ";" + std::to_string(min_) + ";" + std::to_string(max_) + ";" +
                  std::to_string(sum_) + ";";
  bool first = true;
  for (size_t i = 0; i < kBucketCount; ++i) {
    if (!counts_[i]) continue;
    if (!first) s += ',';
    first = false;
    s += std::to_string(i);
    s += ':';
    s += std::to_string(counts_[i]);
  }
  return s;
}

namespace {
bool take_u64(std::string_view& s, char stop, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc{}) return false;
  size_t used = size_t(p - s.data());
  if (used >= s.size()) {
    if (stop != '\0') return false;
    s = {};
    return true;
  }
  if (s[used] != stop) return false;
  s.remove_prefix(used + 1);
  return true;
}
}  // namespace

std::optional<Histogram> Histogram::parse(std::string_view s) {
  Histogram h;
  uint64_t count = 0, mn = 0, mx = 0, sum = 0;
  if (!take_u64(s, ';', count) || !take_u64(s, ';', mn) || !take_u64(s, ';', mx) || !take_u64(s, ';', sum))
    return std::nullopt;
  uint64_t total = 0;
  while (!s.empty()) {
    uint64_t idx = 0, n = 0;
    if (!take_u64(s, ':', idx)) return std::nullopt;
    size_t comma = s.find(',');
    std::string_view num = s.substr(0, comma);
    if (!take_u64(num, '\0', n) || idx >= kBucketCount) return std::nullopt;
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
    h.counts_[idx] += n;
    total += n;
  }
  if (total != count) return std::nullopt;
  h.count_ = count;
  h.min_ = mn;
  h.max_ = mx;
  h.sum_ = sum;
  return h;
}

}  // namespace ps::bench
