// Fault injection for the acquirer simulator's group commit: writes to the WAL fail in
// bursts while 16 threads charge. Every charge the simulator reported as done must be in
// the database afterwards (a failed group commit must fail every caller in that group,
// never only the last one), and the faults must really have hit some calls.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/sim/acquirer_simulator.hpp"

namespace {
std::atomic<bool> g_fail{false};
sqlite3_vfs* g_base;
sqlite3_vfs g_vfs;
struct WFile { sqlite3_file base; sqlite3_file* real; bool wal; };
sqlite3_io_methods g_io;
#define R(f) (((WFile*)f)->real)
int xClose(sqlite3_file* f){ int rc = R(f)->pMethods ? R(f)->pMethods->xClose(R(f)) : 0; sqlite3_free(R(f)); return rc; }
int xRead(sqlite3_file* f, void* b, int n, sqlite3_int64 o){ return R(f)->pMethods->xRead(R(f),b,n,o); }
int xWrite(sqlite3_file* f, const void* b, int n, sqlite3_int64 o){
  if (((WFile*)f)->wal && g_fail.load()) return SQLITE_IOERR_WRITE;
  return R(f)->pMethods->xWrite(R(f),b,n,o); }
int xTruncate(sqlite3_file* f, sqlite3_int64 s){ return R(f)->pMethods->xTruncate(R(f),s); }
int xSync(sqlite3_file* f, int fl){ return R(f)->pMethods->xSync(R(f),fl); }
int xFileSize(sqlite3_file* f, sqlite3_int64* s){ return R(f)->pMethods->xFileSize(R(f),s); }
int xLock(sqlite3_file* f, int l){ return R(f)->pMethods->xLock(R(f),l); }
int xUnlock(sqlite3_file* f, int l){ return R(f)->pMethods->xUnlock(R(f),l); }
int xCheck(sqlite3_file* f, int* o){ return R(f)->pMethods->xCheckReservedLock(R(f),o); }
int xFcntl(sqlite3_file* f, int op, void* a){ return R(f)->pMethods->xFileControl(R(f),op,a); }
int xSector(sqlite3_file* f){ return R(f)->pMethods->xSectorSize(R(f)); }
int xDev(sqlite3_file* f){ return R(f)->pMethods->xDeviceCharacteristics(R(f)); }
int xShmMap(sqlite3_file* f, int i, int s, int e, void volatile** p){ return R(f)->pMethods->xShmMap(R(f),i,s,e,p); }
int xShmLock(sqlite3_file* f, int o, int n, int fl){ return R(f)->pMethods->xShmLock(R(f),o,n,fl); }
void xShmBarrier(sqlite3_file* f){ R(f)->pMethods->xShmBarrier(R(f)); }
int xShmUnmap(sqlite3_file* f, int d){ return R(f)->pMethods->xShmUnmap(R(f),d); }
int xOpen(sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out){
  WFile* w = (WFile*)f;
  w->real = (sqlite3_file*)sqlite3_malloc(g_base->szOsFile);
  memset(w->real, 0, g_base->szOsFile);
  w->wal = name && strlen(name) > 4 && strcmp(name + strlen(name) - 4, "-wal") == 0;
  int rc = g_base->xOpen(g_base, name, w->real, flags, out);
  f->pMethods = &g_io;
  return rc;
}

}  // namespace

TEST(AcquirerSimulatorFaults, FailedGroupCommitsFailEveryCallerInTheGroup) {
  g_base = sqlite3_vfs_find(nullptr);
  g_vfs = *g_base;
  g_vfs.zName = "ps_failvfs";
  g_vfs.szOsFile = sizeof(WFile);
  g_vfs.xOpen = xOpen;
  g_vfs.pAppData = nullptr;
  // Version 2: no xFetch/xUnfetch (memory-mapped reads), which this wrapper does not pass on;
  // with 3 and null pointers SQLite calls them once the simulator's checkpoints run.
  g_io = sqlite3_io_methods{2, xClose, xRead, xWrite, xTruncate, xSync, xFileSize, xLock, xUnlock, xCheck, xFcntl,
                            xSector, xDev, xShmMap, xShmLock, xShmBarrier, xShmUnmap, nullptr, nullptr};
  ASSERT_EQ(sqlite3_vfs_register(&g_vfs, 1), SQLITE_OK);  // default for the simulator's open
  std::string tmpl = (std::filesystem::temp_directory_path() / "ps_sim_fault_XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::string path = tmpl + "/sim.db";
  std::mutex m;
  std::vector<std::string> ok_ids;
  std::atomic<long> errs{0};
  {
    ps::AcquirerSimOptions o;
    o.db_path = path;
    ps::AcquirerSimulator sim(o);
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 16; ++t)
      ts.emplace_back([&, t] {
        for (long i = 0; !stop && i < 100000; ++i) {
          std::string id = "pay_" + std::to_string(t) + "_" + std::to_string(i);
          auto r = sim.charge(ps::ChargeRequest{id, 100, "EUR", "tok_approve"}, std::chrono::milliseconds(1000));
          if (r) {
            std::lock_guard g(m);
            ok_ids.push_back(id);
          } else {
            ++errs;
          }
        }
      });
    for (int k = 0; k < 20; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      g_fail = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      g_fail = false;
    }
    stop = true;
    for (auto& th : ts) th.join();
  }
  sqlite3_vfs_unregister(&g_vfs);
  sqlite3_vfs_register(g_base, 1);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT 1 FROM charges WHERE payment_id=?", -1, &st, nullptr), SQLITE_OK);
  long missing = 0;
  for (auto& id : ok_ids) {
    sqlite3_bind_text(st, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) ++missing;
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  EXPECT_GT(ok_ids.size(), 100u);
  EXPECT_GT(errs.load(), 0) << "the injected write failures never hit a call";
  EXPECT_EQ(missing, 0) << "charges reported done but not stored, of " << ok_ids.size();
}
