// InMemoryVelocityCounter: the embedded VelocityCounter (ports/fast_state.hpp) — a sliding
// window of hit timestamps per key.
// Bounded memory: timestamps at or before now - window are pruned on every hit; a key keeps
// at most max_per_key timestamps (older ones dropped, so counts saturate at max_per_key);
// at most max_keys keys (when full, keys whose newest hit has left its window are swept;
// if still full, a new key is counted without being stored — it reports 1).
// Not durable: a restart forgets every window (fast state is non-authoritative).
// Thread-safety: thread-safe (striped mutexes).
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ports/fast_state.hpp"

namespace ps {

struct VelocityCounterOptions {
  size_t max_per_key = 100'000;
  size_t max_keys = 1'000'000;
};

class InMemoryVelocityCounter final : public VelocityCounter {
 public:
  explicit InMemoryVelocityCounter(VelocityCounterOptions opts = {});
  Result<int64_t> hit(const std::string& key, int64_t now_ms, int64_t window_ms) override;
  size_t key_count() const;   // for tests and diagnostics

 private:
  struct Window {
    std::deque<int64_t> hits;   // ascending-ish timestamps
    int64_t window_ms = 0;
  };
  static constexpr size_t kStripes = 16;
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<std::string, Window> keys;
  };
  void sweep_locked(Stripe& s, int64_t now_ms);

  const VelocityCounterOptions opts_;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace ps
