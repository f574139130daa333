#include "domain/pipeline_backlog.hpp"

#include <algorithm>
#include <limits>

#include "common/metrics.hpp"

namespace ps {
namespace {
metrics::Gauge& backlog_gauge() {
  static auto& g = metrics::registry().gauge("paystream_pipeline_backlog_records",
                                             "Accepted records the settling stages have not consumed yet");
  return g;
}
}  // namespace

PipelineBacklog::PipelineBacklog(std::vector<Settling> settling) {
  for (auto& s : settling)
    for (auto& t : s.topics) queues_.push_back(Queue{s.group, t, {}});
  backlog_gauge().set(0);   // exported from the start
}

std::vector<std::pair<std::string, std::string>> PipelineBacklog::tracked() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& q : queues_) out.emplace_back(q.group, q.topic);
  return out;
}

void PipelineBacklog::append_locked(std::string_view topic, int64_t offset, int64_t at_ms) {
  for (auto& q : queues_) {
    if (q.topic != topic) continue;
    if (!q.waiting.empty() && q.waiting.back().first >= offset) continue;   // already known
    q.waiting.emplace_back(offset, at_ms);
    ++total_;
  }
}

void PipelineBacklog::consume_locked(std::string_view group, std::string_view topic, int64_t position) {
  for (auto& q : queues_) {
    if (q.group != group || q.topic != topic) continue;
    while (!q.waiting.empty() && q.waiting.front().first <= position) {
      q.waiting.pop_front();
      --total_;
    }
  }
}

void PipelineBacklog::appended(std::string_view topic, int64_t offset, int64_t at_ms) {
  std::lock_guard lk(mu_);
  append_locked(topic, offset, at_ms);
  backlog_gauge().set(double(total_));
}

void PipelineBacklog::consumed(std::string_view group, std::string_view topic, int64_t position) {
  std::lock_guard lk(mu_);
  consume_locked(group, topic, position);
  backlog_gauge().set(double(total_));
}

void PipelineBacklog::apply(const Change& change, int64_t at_ms) {
  if (change.empty()) return;
  std::lock_guard lk(mu_);
  for (const auto& [group, topic, position] : change.consumed) consume_locked(group, topic, position);
  for (const auto& [topic, offset] : change.appended) append_locked(topic, offset, at_ms);
  backlog_gauge().set(double(total_));
}

Backlog PipelineBacklog::pipeline_backlog(int64_t now_ms) const {
  std::lock_guard lk(mu_);
  Backlog b;
  b.records = total_;
  int64_t oldest = std::numeric_limits<int64_t>::max();
  for (const auto& q : queues_)
    if (!q.waiting.empty()) oldest = std::min(oldest, q.waiting.front().second);
  if (b.records > 0) b.oldest_age_ms = std::max<int64_t>(0, now_ms - oldest);
  return b;
}

}  // namespace ps
