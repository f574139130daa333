// The metrics registry: paystream's own (src/common/metrics) against prometheus-cpp 1.0.1
// (Debian's prometheus-cpp-dev), side by side on what the hot path does: increment a
// counter and observe a latency histogram, through a reference held by the caller (the
// request and stage paths do that) and through a lookup by name and labels per call (what
// code that does not hold a reference pays), on 1 and 2 threads; and rendering the text
// exposition of ~60 series (a scrape). Built and run by run_metrics_candidates.sh; the
// results are in docs/DECISIONS.md ("Metrics library").
#include <benchmark/benchmark.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "common/metrics.hpp"

namespace {

std::vector<double> buckets() { return ps::metrics::latency_buckets_s(); }

// ---- paystream's registry
void Ours_CounterHeld(benchmark::State& st) {
  static auto& c = ps::metrics::registry().counter("bench_total", "b", {{"route", "/v1/payments"}});
  for (auto _ : st) c.inc();
}
void Ours_HistogramHeld(benchmark::State& st) {
  static auto& h = ps::metrics::registry().histogram("bench_seconds", "b", {{"route", "/v1/payments"}});
  double v = 0.0001;
  for (auto _ : st) {
    h.observe(v);
    v = v < 1 ? v * 1.7 : 0.0001;
  }
}
void Ours_CounterLookup(benchmark::State& st) {
  for (auto _ : st)
    ps::metrics::registry()
        .counter("bench_lookup_total", "b", {{"route", "/v1/payments"}, {"method", "POST"}, {"status", "202"}})
        .inc();
}

// ---- prometheus-cpp
prometheus::Registry& their_registry() {
  static prometheus::Registry r;
  return r;
}
void Prom_CounterHeld(benchmark::State& st) {
  static auto& c =
      prometheus::BuildCounter().Name("bench_total").Help("b").Register(their_registry()).Add({{"route", "/v1/payments"}});
  for (auto _ : st) c.Increment();
}
void Prom_HistogramHeld(benchmark::State& st) {
  static auto& h = prometheus::BuildHistogram()
                       .Name("bench_seconds")
                       .Help("b")
                       .Register(their_registry())
                       .Add({{"route", "/v1/payments"}}, prometheus::Histogram::BucketBoundaries(buckets()));
  double v = 0.0001;
  for (auto _ : st) {
    h.Observe(v);
    v = v < 1 ? v * 1.7 : 0.0001;
  }
}
void Prom_CounterLookup(benchmark::State& st) {
  static auto& fam = prometheus::BuildCounter().Name("bench_lookup_total").Help("b").Register(their_registry());
  for (auto _ : st) fam.Add({{"route", "/v1/payments"}, {"method", "POST"}, {"status", "202"}}).Increment();
}

// ---- a scrape: 20 counters, 20 gauges-as-counters, 20 histograms
void Ours_Render(benchmark::State& st) {
  auto& r = ps::metrics::registry();
  for (int i = 0; i < 20; ++i) {
    r.counter("render_total", "b", {{"i", std::to_string(i)}}).inc(i);
    r.gauge("render_gauge", "b", {{"i", std::to_string(i)}}).set(i);
    r.histogram("render_seconds", "b", {{"i", std::to_string(i)}}).observe(0.001 * i);
  }
  for (auto _ : st) benchmark::DoNotOptimize(r.render());
}
void Prom_Render(benchmark::State& st) {
  prometheus::Registry r;
  auto& c = prometheus::BuildCounter().Name("render_total").Help("b").Register(r);
  auto& g = prometheus::BuildGauge().Name("render_gauge").Help("b").Register(r);
  auto& h = prometheus::BuildHistogram().Name("render_seconds").Help("b").Register(r);
  for (int i = 0; i < 20; ++i) {
    c.Add({{"i", std::to_string(i)}}).Increment(i);
    g.Add({{"i", std::to_string(i)}}).Set(i);
    h.Add({{"i", std::to_string(i)}}, prometheus::Histogram::BucketBoundaries(buckets())).Observe(0.001 * i);
  }
  prometheus::TextSerializer ser;
  for (auto _ : st) {
    std::ostringstream os;
    ser.Serialize(os, r.Collect());
    benchmark::DoNotOptimize(os.str());
  }
}

}  // namespace

BENCHMARK(Ours_CounterHeld)->Threads(1)->Threads(2);
BENCHMARK(Prom_CounterHeld)->Threads(1)->Threads(2);
BENCHMARK(Ours_HistogramHeld)->Threads(1)->Threads(2);
BENCHMARK(Prom_HistogramHeld)->Threads(1)->Threads(2);
BENCHMARK(Ours_CounterLookup)->Threads(1)->Threads(2);
BENCHMARK(Prom_CounterLookup)->Threads(1)->Threads(2);
BENCHMARK(Ours_Render);
BENCHMARK(Prom_Render);
BENCHMARK_MAIN();
