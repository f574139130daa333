// A small Prometheus registry: counters, gauges and histograms with labels, rendered in
// the text exposition format (0.0.4). Debian ships prometheus-cpp 1.0.1; measured side by
// side (docs/DECISIONS.md, "Metrics library") it costs more on the hot path (a held
// histogram's observe 19 ns against 8.7 ns), so this hand-written registry stays. The
// exposition is checked by a strict parser (tests/e2e/promtext.py, test_metrics.py) and
// scraped by the real Prometheus in the observability test.
// Thread-safety: all methods are thread-safe; returned references live for ever.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ps::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(double v = 1.0);
  double value() const { return value_.load(); }
 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v); }
  void inc(double v = 1.0);
  void dec(double v = 1.0) { inc(-v); }
  double value() const { return value_.load(); }
 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  struct Snapshot { std::vector<double> bounds; std::vector<uint64_t> cumulative; uint64_t count; double sum; };
  Snapshot snapshot() const;
 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Default latency buckets in seconds (0.5 ms .. 10 s).
std::vector<double> latency_buckets_s();

class Registry {
 public:
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, const Labels& labels = {},
                       std::vector<double> bounds = latency_buckets_s());
  std::string render() const;

 private:
  enum class Type { counter, gauge, histogram };
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, std::unique_ptr<Counter>> counters;   // key: rendered label set
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, const std::string& help, Type type);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// The process-wide registry served on /metrics.
Registry& registry();

}  // namespace ps::metrics
