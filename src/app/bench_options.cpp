#include "app/bench_options.hpp"

namespace ps::app {

void add_bench_options(CLI::App& c, ps::bench::BenchConfig& b) {
  c.add_option("--url", b.url, "API base URL, http://HOST:PORT (required)");
  c.add_option("--api-key", b.api_key, "drive this merchant (sk_...); exclusive with --admin-key");
  c.add_option("--admin-key", b.admin_key,
               "create a fresh merchant bench-<run id> with a huge rate limit and drive it (recommended)");
  c.add_option("--rate", b.rate_per_s, "arrival rate, requests per second (with --duration-s)");
  c.add_option("--duration-s", b.duration_s, "length of the constant-rate schedule, seconds");
  c.add_option("--steps", b.steps, "stepped schedule RATE:SECONDS,RATE:SECONDS,... (instead of --rate/--duration-s)");
  c.add_option("--connections", b.connections, "keep-alive connections in total (1..60000)")->capture_default_str();
  c.add_option("--processes", b.processes, "worker processes (default ceil(connections/10000); <= 15000 connections each)");
  c.add_option("--source-addresses", b.source_addresses,
               "comma list of local addresses; worker k binds the (k mod n)-th (default 127.0.0.(2+k) "
               "for a 127.x target with several processes or > 10000 connections)")
      ->delimiter(',');
  c.add_option("--amount", b.amount_minor, "payment amount, minor units")->capture_default_str();
  c.add_option("--currency", b.currency, "payment currency")->capture_default_str();
  c.add_option("--decline-share", b.decline_share, "share of new payments with source tok_decline")->capture_default_str();
  c.add_option("--approve-sources", b.approve_sources,
               "approving payments use N distinct sources tok_approve_<i> (1: just tok_approve), so the "
               "per-source fraud velocity limit does not decline them")
      ->capture_default_str();
  c.add_option("--retry-share", b.retry_share, "share of slots re-sending an accepted key (must replay)")
      ->capture_default_str();
  c.add_option("--duplicate-share", b.duplicate_share,
               "share of slots sending a new key twice at once on two connections (409 or replay)")
      ->capture_default_str();
  c.add_option("--timeout-ms", b.timeout_ms, "a request unanswered this long after its scheduled time is a timeout")
      ->capture_default_str();
  c.add_option("--settle-timeout-s", b.settle_timeout_s, "how long reconciliation waits for processing payments")
      ->capture_default_str();
  c.add_flag("--no-reconcile", b.no_reconcile, "skip the reconciliation through the API");
  c.add_option("--verify-entries", b.verify_entries, "succeeded payments whose journal entries are checked")
      ->capture_default_str();
  c.add_option("--watch-pid", b.watch_pids, "report the max VmRSS of this process (repeatable; summed)");
  c.add_option("--out", b.out_path, "write the JSON report to this file");
  c.add_option("--seed", b.seed, "random seed of the request mix (default: from the clock)");
  c.add_option("--run-id", b.run_id, "run id used in keys and metadata (default: random)");
  c.add_option("--progress-interval-s", b.progress_interval_s, "progress line period on stderr, 0 = off")
      ->capture_default_str();
  c.add_option("--connect-concurrency", b.connect_concurrency, "connects in flight while opening connections")
      ->capture_default_str();
}

}  // namespace ps::app
