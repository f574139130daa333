// Periodic: a thread that calls `fn` at once and then every `interval` until destroyed;
// destruction wakes it at once (it does not wait out the interval) and joins it. For the
// background samplers (Redis INFO, pg_stat_activity).
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace ps {

class Periodic {
 public:
  Periodic(std::chrono::milliseconds interval, std::function<void()> fn)
      : interval_(std::max(interval, std::chrono::milliseconds(10))), fn_(std::move(fn)), thread_([this] { run(); }) {}
  ~Periodic() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Periodic(const Periodic&) = delete;
  Periodic& operator=(const Periodic&) = delete;

 private:
  void run() {
    std::unique_lock lk(mu_);
    while (!stopping_) {
      lk.unlock();
      fn_();
      lk.lock();
      cv_.wait_for(lk, interval_, [&] { return stopping_; });
    }
  }
  const std::chrono::milliseconds interval_;
  const std::function<void()> fn_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace ps
