// paystream_sim: runs the deterministic simulation (sim_world.hpp) over seeds.
//   paystream_sim --seeds 1000            seeds 1..1000 (what .ci/run runs)
//   paystream_sim --from 5000 --seeds 20000
//   paystream_sim --seed 1234 --trace     one seed, every step printed: replays a failure
// Each failure prints its seed and the command that replays it; the exit status is 1 if
// any seed failed. --check-replay runs every 100th seed twice and compares the digests of
// the two traces (a seed must replay exactly).
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "common/log.hpp"
#include "sim/sim_world.hpp"

int main(int argc, char** argv) {
  uint64_t from = 1, count = 100;
  int steps = 400;
  bool trace = false, check_replay = false;
  auto usage = [] {
    std::cerr << "usage: paystream_sim [--seed S | --from S --seeds N] [--steps K] [--trace] [--check-replay]\n";
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    try {
      if (a == "--seed") {
        const char* v = value();
        if (!v) return usage();
        from = std::stoull(v);
        count = 1;
      } else if (a == "--from") {
        const char* v = value();
        if (!v) return usage();
        from = std::stoull(v);
      } else if (a == "--seeds") {
        const char* v = value();
        if (!v) return usage();
        count = std::stoull(v);
      } else if (a == "--steps") {
        const char* v = value();
        if (!v) return usage();
        steps = std::stoi(v);
      } else if (a == "--trace") {
        trace = true;
      } else if (a == "--check-replay") {
        check_replay = true;
      } else {
        return usage();
      }
    } catch (const std::exception&) {
      return usage();
    }
  }
  ps::log::set_level(trace ? ps::log::Level::warn : ps::log::Level::off);
  const auto tmp = std::filesystem::temp_directory_path();
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t failures = 0;
  ps::sim::SimStats total;
  for (uint64_t seed = from; seed < from + count; ++seed) {
    ps::sim::SimOptions o;
    o.seed = seed;
    o.steps = steps;
    o.trace = trace;
    o.dir = (tmp / ("paystream-sim-" + std::to_string(getpid()) + "-" + std::to_string(seed))).string();
    if (trace) std::cout << "seed " << seed << "\n";
    ps::sim::SimResult r = ps::sim::run_simulation(o);
    if (r.ok && check_replay && (seed - from) % 100 == 0) {
      o.trace = false;
      ps::sim::SimResult again = ps::sim::run_simulation(o);
      if (again.digest != r.digest) {
        r.ok = false;
        r.failure = "the seed did not replay exactly (trace digests " + std::to_string(r.digest) + " and " +
                    std::to_string(again.digest) + ")";
      }
    }
    total.payments_acked += r.stats.payments_acked;
    total.refunds_acked += r.stats.refunds_acked;
    total.crashes += r.stats.crashes;
    total.acquirer_calls += r.stats.acquirer_calls;
    total.webhook_posts += r.stats.webhook_posts;
    total.succeeded += r.stats.succeeded;
    total.failed += r.stats.failed;
    total.dead_letters_replayed += r.stats.dead_letters_replayed;
    if (trace || count == 1)
      std::cout << "seed " << seed << ": " << (r.ok ? "ok" : "FAILED") << ", digest " << std::hex << r.digest
                << std::dec << "\n";
    if (!r.ok) {
      ++failures;
      std::cout << "seed " << seed << " FAILED: " << r.failure << "\n  replay: paystream_sim --seed " << seed
                << " --steps " << steps << " --trace" << std::endl;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "paystream_sim: " << count << " seeds (" << from << ".." << from + count - 1 << "), " << steps
            << " steps each, " << failures << " failed, in " << s << " s; " << total.payments_acked
            << " payments and " << total.refunds_acked << " refunds acknowledged, " << total.succeeded
            << " succeeded, " << total.failed << " failed, " << total.crashes << " crashes, " << total.acquirer_calls
            << " acquirer calls, " << total.webhook_posts << " webhook posts, " << total.dead_letters_replayed
            << " dead letters replayed\n";
  return failures == 0 ? 0 : 1;
}
