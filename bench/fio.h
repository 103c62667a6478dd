#pragma once

// fio workloads: the job files of bench/fio/*.fio (compiled in), running one,
// and reading fio's JSON output.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/result.h"

namespace lamina::bench {

// The job files, by name without ".fio" ("seq-write", "seq-read",
// "rand-read", "rand-write"). They take FIO_DIR, FIO_SIZE and FIO_IO_SIZE
// from the environment (fio's ${VAR} expansion).
const std::map<std::string, std::string>& FioJobs();

// What one job did, both directions added up.
struct FioResult {
  double seconds = 0;  // the job's run time
  uint64_t bytes = 0;  // bytes read plus written
  double bytes_per_s = 0;
  double iops = 0;
};

// Parses the output of `fio --output-format=json` (anything before the first
// '{' is skipped: fio prints warnings there). The first job counts. EINVAL
// for text that is not fio JSON; the job's own errno when it failed.
Result<FioResult> ParseFioJson(std::string_view text);

struct FioRun {
  std::string job;       // a key of FioJobs()
  std::string dir;       // where the job's file lives
  uint64_t size = 0;     // bytes of the file
  uint64_t io_size = 0;  // bytes the random jobs move
  std::string scratch;   // a directory for the job file, the JSON and fio's stderr
};

// Runs one job and parses its result.
Result<FioResult> RunFio(const FioRun& run);

}  // namespace lamina::bench
