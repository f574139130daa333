// The subcommands of the paystream binary. Each returns the process exit code.
#pragma once
#include <cstdint>
#include <string>

#include "app/config.hpp"

namespace ps::app {

int run_serve(const ServeConfig& cfg);                       // paystream serve
int run_dlq_list(const std::string& data_dir, int64_t limit);    // paystream dlq list
int run_dlq_show(const std::string& data_dir, int64_t offset);   // paystream dlq show OFFSET
int run_dlq_replay(const std::string& data_dir, int64_t offset); // paystream dlq replay OFFSET
int run_routes();                                            // paystream routes (JSON)

}  // namespace ps::app
