// Clock port: the only source of time for stage and API logic (injected in tests).
// Thread-safe.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace ps {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ms() const = 0;  // milliseconds since the Unix epoch
  virtual void sleep_for(std::chrono::milliseconds d) const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }
  void sleep_for(std::chrono::milliseconds d) const override { std::this_thread::sleep_for(d); }
};

// Test clock: time moves only when told to; sleep_for advances it instantly.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t now_ms() const override { return now_.load(); }
  void sleep_for(std::chrono::milliseconds d) const override { now_ += d.count(); }
  void advance(std::chrono::milliseconds d) { now_ += d.count(); }

 private:
  mutable std::atomic<int64_t> now_;
};

}  // namespace ps
