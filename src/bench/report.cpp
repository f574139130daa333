#include "bench/report.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

#include <set>

namespace ps::bench {
namespace json = boost::json;

namespace {
double ms(uint64_t us) { return double(us) / 1000.0; }

json::object percentiles_ms(const Histogram& h, bool with_p999) {
  json::object o;
  o["count"] = h.count();
  o["p50"] = ms(h.value_at_percentile(50));
  o["p90"] = ms(h.value_at_percentile(90));
  o["p99"] = ms(h.value_at_percentile(99));
  if (with_p999) o["p999"] = ms(h.value_at_percentile(99.9));
  o["max"] = ms(h.max());
  o["mean"] = h.mean() / 1000.0;
  return o;
}

std::string pct_line(const Histogram& h, bool with_p999) {
  std::string s = fmt::format("p50={:.2f} p90={:.2f} p99={:.2f}", ms(h.value_at_percentile(50)),
                              ms(h.value_at_percentile(90)), ms(h.value_at_percentile(99)));
  if (with_p999) s += fmt::format(" p99.9={:.2f}", ms(h.value_at_percentile(99.9)));
  s += fmt::format(" max={:.2f} ms (n={})", ms(h.max()), h.count());
  return s;
}
}  // namespace

double RunOutcome::schedule_length_s() const {
  double s = 0;
  for (const auto& st : cfg->steps) s += st.seconds;
  return s;
}

double RunOutcome::offered_per_s() const {
  double len = schedule_length_s();
  return len > 0 ? double(merged.scheduled) / len : 0;
}

double RunOutcome::achieved_per_s() const {
  if (!merged.start_ns || merged.last_response_ns <= merged.start_ns) return 0;
  double secs = double(merged.last_response_ns - merged.start_ns) / 1e9;
  return double(merged.ok_slot_halves) / 2.0 / secs;
}

double RunOutcome::generator_cpu_us_per_request() const {
  if (merged.requests == 0) return 0;
  return (generator_cpu_s + parent_cpu_s) * 1e6 / double(merged.requests);
}

std::string report_json(const RunOutcome& o) {
  const auto& m = o.merged;
  const auto& c = *o.cfg;
  json::object j;
  j["ok"] = o.failures.empty();
  json::array fl;
  for (const auto& f : o.failures) fl.push_back(json::value(f));
  j["failures"] = std::move(fl);
  j["run_id"] = c.run_id;
  j["url"] = c.raw.url;
  if (!o.merchant_id.empty()) j["merchant_id"] = o.merchant_id;
  j["offered_per_s"] = o.offered_per_s();
  j["achieved_per_s"] = o.achieved_per_s();
  j["duration_s"] = o.schedule_length_s();
  json::array steps;
  for (const auto& s : c.steps) steps.push_back(json::object{{"rate_per_s", s.rate_per_s}, {"seconds", s.seconds}});
  j["steps"] = std::move(steps);
  j["processes"] = c.processes;
  j["connections"] = c.raw.connections;
  j["connections_open_at_start"] = m.connections_open_at_start;
  j["connections_open_max"] = m.connections_open_max;
  j["scheduled"] = m.scheduled;
  j["requests"] = m.requests;
  j["responses"] = m.responses;
  j["status_2xx"] = m.status_2xx;
  {
    std::set<std::string> ids;
    for (const auto& [k, id] : m.accepted) ids.insert(id);
    j["accepted"] = ids.size();
  }
  j["replays_ok"] = m.replays_ok;
  j["conflicts_409"] = m.conflicts_409;
  j["latency_ms"] = percentiles_ms(m.latency_us, true);
  json::object err;
  err["total"] = m.errors_total();
  json::object bs;
  for (const auto& [s, n] : m.by_status) bs[std::to_string(s)] = n;
  err["by_status"] = std::move(bs);
  err["timeout"] = m.timeout;
  err["io"] = m.io;
  err["connect"] = m.connect;
  err["replay_mismatch"] = m.replay_mismatch;
  j["errors"] = std::move(err);
  json::object rec;
  if (o.reconciliation) {
    const auto& r = *o.reconciliation;
    rec["skipped"] = false;
    rec["ok"] = r.ok();
    rec["accepted"] = r.accepted;
    rec["listed"] = r.listed;
    rec["terminal"] = r.terminal;
    rec["processing"] = r.processing;
    rec["succeeded"] = r.succeeded;
    rec["failed"] = r.failed;
    rec["lost"] = r.lost;
    rec["duplicates"] = r.duplicates;
    rec["duplicate_keys"] = r.duplicate_keys;
    rec["replay_mismatch"] = r.replay_mismatch;
    rec["pair_mismatch"] = r.pair_mismatch;
    rec["ledger_balanced"] = r.ledger_balanced;
    rec["entries_checked"] = r.entries_checked;
    rec["credit_per_payment_minor"] = r.credit_per_payment_minor;
    rec["balance_delta_minor"] = r.balance_delta_minor;
    rec["expected_balance_delta_minor"] = r.expected_balance_delta_minor;
    rec["settled"] = r.settled;
    rec["settle_s"] = r.settle_s;
    json::array rf;
    for (const auto& f : r.failures) rf.push_back(json::value(f));
    rec["failures"] = std::move(rf);
    j["e2e_ms"] = percentiles_ms(r.e2e_us, false);
    j["e2e_succeeded_ms"] = percentiles_ms(r.e2e_succeeded_us, false);
  } else {
    rec["skipped"] = c.raw.no_reconcile;
    if (!o.reconcile_error.empty()) rec["error"] = o.reconcile_error;
    rec["accepted"] = nullptr;
    rec["terminal"] = nullptr;
    rec["duplicates"] = m.replay_mismatch + m.pair_mismatch;
    rec["ledger_balanced"] = nullptr;
  }
  j["reconciliation"] = std::move(rec);
  j["generator_cpu_s"] = o.generator_cpu_s;
  j["generator_parent_cpu_s"] = o.parent_cpu_s;
  j["generator_cpu_us_per_request"] = o.generator_cpu_us_per_request();
  j["wall_s"] = o.wall_s;
  if (o.server_rss_max_mib) {
    j["server_rss_max_mib"] = *o.server_rss_max_mib;
    json::object by;
    for (const auto& [pid, mib] : o.server_rss_max_mib_by_pid) by[std::to_string(pid)] = mib;
    j["server_rss_max_mib_by_pid"] = std::move(by);
  }
  json::object cfg;
  cfg["amount"] = c.raw.amount_minor;
  cfg["currency"] = c.raw.currency;
  cfg["decline_share"] = c.raw.decline_share;
  cfg["approve_sources"] = c.raw.approve_sources;
  cfg["retry_share"] = c.raw.retry_share;
  cfg["duplicate_share"] = c.raw.duplicate_share;
  cfg["timeout_ms"] = c.raw.timeout_ms;
  cfg["seed"] = c.seed;
  json::array src;
  for (const auto& a : c.source_addresses) src.push_back(json::value(a));
  cfg["source_addresses"] = std::move(src);
  j["config"] = std::move(cfg);
  return json::serialize(j);
}

std::string report_text(const RunOutcome& o) {
  const auto& m = o.merged;
  const auto& c = *o.cfg;
  std::string s;
  s += fmt::format("paystream bench — run {} against {}\n", c.run_id, c.raw.url);
  s += fmt::format("  schedule     {:.1f} s, {} processes, {} connections ({} open at start, max {})\n",
                   o.schedule_length_s(), c.processes, c.raw.connections, m.connections_open_at_start,
                   m.connections_open_max);
  s += fmt::format("  rate         offered {:.1f}/s, achieved {:.1f}/s\n", o.offered_per_s(), o.achieved_per_s());
  s += fmt::format("  requests     {} sent, {} answered, {} 2xx, {} replays ok, {} expected 409\n", m.requests,
                   m.responses, m.status_2xx, m.replays_ok, m.conflicts_409);
  s += "  latency      " + pct_line(m.latency_us, true) + " (from scheduled send)\n";
  std::string bs;
  for (const auto& [st, n] : m.by_status) bs += fmt::format(" {}:{}", st, n);
  s += fmt::format("  errors       {} total (status{}{} timeout:{} io:{} connect:{} replay_mismatch:{})\n",
                   m.errors_total(), bs.empty() ? " -" : "", bs, m.timeout, m.io, m.connect, m.replay_mismatch);
  if (o.reconciliation) {
    const auto& r = *o.reconciliation;
    s += fmt::format(
        "  reconcile    accepted {} terminal {} (succeeded {} failed {}) lost {} duplicates {} ledger {} "
        "(checked {}, balance Δ {} want {}), settled in {:.1f} s\n",
        r.accepted, r.terminal, r.succeeded, r.failed, r.lost, r.duplicates, r.ledger_balanced ? "balanced" : "UNBALANCED",
        r.entries_checked, r.balance_delta_minor, r.expected_balance_delta_minor, r.settle_s);
    s += "  e2e          " + pct_line(r.e2e_us, false) + " (accepted → terminal)\n";
    s += "  e2e ok       " + pct_line(r.e2e_succeeded_us, false) + " (accepted → succeeded)\n";
  } else if (c.raw.no_reconcile) {
    s += "  reconcile    skipped (--no-reconcile)\n";
  } else {
    s += "  reconcile    FAILED: " + o.reconcile_error + "\n";
  }
  s += fmt::format("  generator    {:.2f} s CPU in workers, {:.2f} s in the parent ({:.1f} µs per request), {:.1f} s wall\n",
                   o.generator_cpu_s, o.parent_cpu_s, o.generator_cpu_us_per_request(), o.wall_s);
  if (o.server_rss_max_mib) s += fmt::format("  server RSS   max {:.1f} MiB\n", *o.server_rss_max_mib);
  s += o.failures.empty() ? "  result       OK\n" : "  result       FAILED\n";
  return s;
}

}  // namespace ps::bench
