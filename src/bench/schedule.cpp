#include "bench/schedule.hpp"

#include <cmath>
#include <cstdlib>

namespace ps::bench {

Result<std::vector<Step>> parse_steps(const std::string& text) {
  std::vector<Step> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t colon = item.find(':');
    if (colon == std::string::npos)
      return Error::invalid("steps_invalid", "--steps item '" + item + "' is not RATE:SECONDS", "steps");
    std::string r = item.substr(0, colon), s = item.substr(colon + 1);
    char* end = nullptr;
    double rate = std::strtod(r.c_str(), &end);
    bool rate_ok = !r.empty() && end && *end == '\0';
    double secs = std::strtod(s.c_str(), &end);
    bool secs_ok = !s.empty() && end && *end == '\0';
    if (!rate_ok || !secs_ok || !(rate > 0) || !(secs > 0) || !std::isfinite(rate) || !std::isfinite(secs) ||
        rate > 10'000'000 || secs > 86400)
      return Error::invalid("steps_invalid",
                            "--steps item '" + item + "' needs a rate in (0, 1e7] and seconds in (0, 86400]", "steps");
    out.push_back({rate, secs});
    if (out.size() > 1000) return Error::invalid("steps_invalid", "--steps has more than 1000 steps", "steps");
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty()) return Error::invalid("steps_invalid", "--steps is empty", "steps");
  return out;
}

Schedule::Schedule(std::vector<Step> steps, double share) {
  double t = 0, a = 0;
  for (const auto& s : steps) {
    Seg g{t, t + s.seconds, s.rate_per_s * share, a, 0};
    a += g.rate * s.seconds;
    t = g.end_s;
    // Requests i with i < A(end) are due before the end of this step (strictly).
    g.end_index = uint64_t(std::ceil(a - 1e-9));
    segs_.push_back(g);
  }
  length_s_ = t;
  total_ = segs_.empty() ? 0 : segs_.back().end_index;
}

int64_t Schedule::due_ns(uint64_t i) {
  if (cursor_ < segs_.size() && i < (cursor_ ? segs_[cursor_ - 1].end_index : 0)) cursor_ = 0;  // went back
  while (cursor_ + 1 < segs_.size() && i >= segs_[cursor_].end_index) ++cursor_;
  const Seg& g = segs_[cursor_];
  double t = g.start_s + (double(i) - g.first) / g.rate;
  if (t < g.start_s) t = g.start_s;
  return int64_t(std::llround(t * 1e9));
}

}  // namespace ps::bench
