// The acquirer simulator's WAL stays bounded while it is charged without pause: its
// checkpointer copies the WAL into the database and the WAL is rewound, so neither the
// disk nor the recovery after a kill -9 grows with the number of charges.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "adapters/sim/acquirer_simulator.hpp"

namespace {

TEST(AcquirerSimulatorWal, StaysBoundedUnderContinuousCharges) {
  const auto dir = std::filesystem::temp_directory_path() / ("ps-sim-wal-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "acquirer-sim.db").string();
  uintmax_t largest = 0;
  {
    ps::AcquirerSimOptions o;
    o.db_path = path;
    o.sync_full = false;
    ps::AcquirerSimulator sim(o);
    std::atomic<int> next{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < 40000;) {
          ps::ChargeRequest r{"pay_" + std::to_string(i), 1000, "EUR", "tok_approve"};
          auto c = sim.charge(r, std::chrono::milliseconds(5000));
          ASSERT_TRUE(c.ok()) << c.error().message;
          if (i % 4 == 0) ASSERT_TRUE(sim.lookup_charge(r.payment_id, std::chrono::milliseconds(5000)).ok());
        }
      });
    std::thread watch([&] {
      while (!done) {
        std::error_code ec;
        largest = std::max(largest, std::filesystem::file_size(path + "-wal", ec));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    for (auto& t : threads) t.join();
    done = true;
    watch.join();
    EXPECT_EQ(*sim.charge_count(), 40000);
    std::error_code ec;
    EXPECT_GT(std::filesystem::file_size(path, ec), uintmax_t(1) << 20) << "the checkpoints copy into the database";
  }
  // 40,000 charges wrote about 200 MB of WAL frames in all (before the fix the WAL held all
  // of them). It is rewound past 16 MiB; it may grow a little further between two passes.
  EXPECT_LT(largest, uintmax_t(32) << 20) << "the WAL grew to " << largest << " bytes";
  std::filesystem::remove_all(dir);
}

}  // namespace
