// The deterministic simulation of the embedded pipeline (docs/TESTING.md "Simulation").
//
// One seed is one run: a world of the real stage logic (fraud, processor, ledger,
// notifier, the webhook dispatcher), the real log engine in stepped mode over an in-memory
// file system that loses what was not synced at a crash, the real SQLite projection, an
// injected clock, and a simulated acquirer and webhook receiver (sim_externals.hpp). One
// thread runs everything: each step is chosen by the seed's random stream (submit
// payments and refunds, also several with one idempotency key at once; admit; write the
// log; run one stage or the dispatcher; project; advance the clock; deliver late acquirer
// requests; crash; change the faults), so a seed replays exactly.
// After every step the invariants of SPEC §2 are checked; at the end the faults stop, an
// operator replays the dead letters, the pipeline drains, and the end-state invariants
// are checked (every acknowledged payment and refund terminal, charges = succeeded
// payments, every event delivered at least once).
#pragma once
#include <cstdint>
#include <string>

namespace ps::sim {

struct SimOptions {
  uint64_t seed = 1;
  int steps = 400;
  bool trace = false;   // print every step
  std::string dir;      // scratch directory (the SQLite files); made and removed per run
};

struct SimStats {
  int payments_acked = 0, refunds_acked = 0, crashes = 0, acquirer_calls = 0, webhook_posts = 0;
  int succeeded = 0, failed = 0, dead_letters_replayed = 0;
};

struct SimResult {
  bool ok = true;
  std::string failure;   // the first violated invariant, with the step
  uint64_t digest = 0;   // of the trace: the same seed gives the same digest
  SimStats stats;
};

SimResult run_simulation(const SimOptions& opts);

}  // namespace ps::sim
