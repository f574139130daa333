// PgActivityMonitor: a background thread that samples pg_stat_activity of the database
// paystream uses and exports what its sessions wait on, so lock contention shows up in
// Prometheus (docs/OPERATIONS.md):
//   paystream_postgres_waiting_sessions{wait_event_type}  non-idle client sessions of the
//     database waiting on Lock (row and table locks: contention), LWLock, IO, IPC, Client,
//     Timeout, BufferPin or Extension; each type is exported, 0 when none waits on it.
//   paystream_postgres_lock_wait_seconds_max  the longest statement among sessions waiting
//     on a Lock now (now() - query_start: an upper bound of the wait), 0 when none.
// The sample sees every session of the database (other processes included), so one
// monitor per database is enough: the gateways run it; dashboards take max over instances.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "adapters/postgres/pg_tls.hpp"

namespace ps {

class PgActivityMonitor {
 public:
  // Connects lazily (and again after a failure) with its own connection to `url`.
  PgActivityMonitor(std::string url, std::chrono::milliseconds interval, PgTls tls = {});
  ~PgActivityMonitor();
  PgActivityMonitor(const PgActivityMonitor&) = delete;
  PgActivityMonitor& operator=(const PgActivityMonitor&) = delete;
  // One sample now (the thread calls it every interval); false if PostgreSQL did not answer.
  bool sample_once();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ps
