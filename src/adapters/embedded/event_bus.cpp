#include "adapters/embedded/event_bus.hpp"

#include <algorithm>

namespace ps {

EventBus::EventBus(std::vector<Subscription> registered) : registered_(std::move(registered)) {
  for (const auto& s : registered_)
    for (const auto& t : s.topics) subscribers_[t].push_back(s.group);
}

int64_t EventBus::floor_locked(const std::string& topic) const {
  auto it = subscribers_.find(topic);
  if (it == subscribers_.end()) return -1;  // nobody registered: keep everything
  int64_t floor = kNone;
  for (const auto& g : it->second) {
    auto p = positions_.find({g, topic});
    floor = std::min(floor, p == positions_.end() ? int64_t(-1) : p->second);
  }
  return floor;
}

void EventBus::trim_locked(const std::string& topic) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) return;
  const int64_t floor = floor_locked(topic);
  auto& q = it->second;
  while (!q.empty() && q.front().offset <= floor) q.pop_front();
}

void EventBus::append(Record r) {
  {
    std::lock_guard lk(mu_);
    ++appended_[r.topic];
    if (r.offset <= floor_locked(r.topic)) return;
    topics_[r.topic].push_back(std::move(r));
    ++version_;
  }
  cv_.notify_all();
}

std::vector<Record> EventBus::poll(const std::string& group, const std::vector<std::string>& topics, size_t max,
                                   std::chrono::milliseconds wait) {
  std::vector<Record> out;
  if (topics.empty() || max == 0) return out;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock lk(mu_);
  for (;;) {
    for (const auto& topic : topics) {
      auto it = topics_.find(topic);
      if (it == topics_.end()) continue;
      auto p = positions_.find({group, topic});
      const int64_t after = p == positions_.end() ? -1 : p->second;
      const auto& q = it->second;
      auto from = std::upper_bound(q.begin(), q.end(), after,
                                   [](int64_t off, const Record& r) { return off < r.offset; });
      for (size_t n = 0; from != q.end() && n < max; ++from, ++n) out.push_back(*from);
    }
    if (!out.empty()) {
      std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) { return a.offset < b.offset; });
      if (out.size() > max) out.resize(max);
      return out;
    }
    const uint64_t seen = version_;
    if (!cv_.wait_until(lk, deadline, [&] { return version_ != seen; })) return out;
  }
}

void EventBus::commit(const std::string& group, const std::map<std::string, int64_t>& positions) {
  std::lock_guard lk(mu_);
  for (const auto& [topic, offset] : positions) {
    auto& p = positions_.try_emplace({group, topic}, int64_t(-1)).first->second;
    p = std::max(p, offset);
    trim_locked(topic);
  }
}

int64_t EventBus::position(const std::string& group, const std::string& topic) const {
  std::lock_guard lk(mu_);
  auto p = positions_.find({group, topic});
  return p == positions_.end() ? 0 : p->second;
}

int64_t EventBus::oldest_unconsumed() const {
  std::lock_guard lk(mu_);
  int64_t oldest = kNone;
  for (const auto& [topic, groups] : subscribers_) {
    auto it = topics_.find(topic);
    if (it == topics_.end()) continue;
    for (const auto& g : groups) {
      auto p = positions_.find({g, topic});
      const int64_t after = p == positions_.end() ? -1 : p->second;
      auto from = std::upper_bound(it->second.begin(), it->second.end(), after,
                                   [](int64_t off, const Record& r) { return off < r.offset; });
      if (from != it->second.end()) oldest = std::min(oldest, from->offset);
    }
  }
  return oldest;
}

uint64_t EventBus::appended(const std::string& topic) const {
  std::lock_guard lk(mu_);
  auto it = appended_.find(topic);
  return it == appended_.end() ? 0 : it->second;
}

size_t EventBus::kept() const {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (const auto& [t, q] : topics_) n += q.size();
  return n;
}

}  // namespace ps
