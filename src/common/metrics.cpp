#include "common/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace ps::metrics {
namespace {
std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}
std::string render_labels(const Labels& labels) {
  std::string s;
  for (const auto& [k, v] : labels) {
    if (!s.empty()) s += ',';
    s += k + "=\"" + escape(v) + "\"";
  }
  return s;
}
std::string fmt_num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load();
  while (!a.compare_exchange_weak(cur, cur + v)) {
  }
}
std::string with_extra(const std::string& base, const std::string& extra) {
  if (base.empty()) return extra;
  return base + "," + extra;
}
}  // namespace

void Counter::inc(double v) { atomic_add(value_, v); }
void Gauge::inc(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}
void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1);
  count_.fetch_add(1);
  atomic_add(sum_, v);
}
Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s{bounds_, {}, 0, sum_.load()};
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += buckets_[i].load();
    s.cumulative.push_back(acc);
  }
  s.count = acc;
  return s;
}

std::vector<double> latency_buckets_s() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

Registry::Family& Registry::family(const std::string& name, const std::string& help, Type type) {
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.type = type;
    it->second.help = help;
  } else if (it->second.type != type) {
    throw std::logic_error("metric " + name + " registered with two types");
  }
  return it->second;
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lk(mu_);
  auto& f = family(name, help, Type::counter);
  auto& slot = f.counters[render_labels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}
Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lk(mu_);
  auto& f = family(name, help, Type::gauge);
  auto& slot = f.gauges[render_labels(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}
Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               const Labels& labels, std::vector<double> bounds) {
  std::lock_guard lk(mu_);
  auto& f = family(name, help, Type::histogram);
  auto& slot = f.histograms[render_labels(labels)];
  if (!slot) slot = std::make_unique<Histogram>(std::move(bounds));
  return *slot;
}

std::string Registry::render() const {
  std::lock_guard lk(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::counter ? "counter" : f.type == Type::gauge ? "gauge" : "histogram";
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + type + "\n";
    auto line = [&](const std::string& n, const std::string& labels, double v) {
      out += n;
      if (!labels.empty()) out += "{" + labels + "}";
      out += " " + fmt_num(v) + "\n";
    };
    for (const auto& [l, c] : f.counters) line(name, l, c->value());
    for (const auto& [l, g] : f.gauges) line(name, l, g->value());
    for (const auto& [l, h] : f.histograms) {
      auto s = h->snapshot();
      for (size_t i = 0; i < s.bounds.size(); ++i)
        line(name + "_bucket", with_extra(l, "le=\"" + fmt_num(s.bounds[i]) + "\""), double(s.cumulative[i]));
      line(name + "_bucket", with_extra(l, "le=\"+Inf\""), double(s.count));
      line(name + "_sum", l, s.sum);
      line(name + "_count", l, double(s.count));
    }
  }
  return out;
}

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace ps::metrics
