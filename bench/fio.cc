#include "bench/fio.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "bench/process.h"
#include "common/fs.h"

namespace lamina::bench {

Result<FioResult> ParseFioJson(std::string_view text) {
  size_t brace = text.find('{');
  if (brace == std::string_view::npos) return Fail(EINVAL, "fio output has no JSON");
  auto json = nlohmann::json::parse(text.substr(brace), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return Fail(EINVAL, "fio output is not JSON");
  if (!json.contains("jobs") || !json["jobs"].is_array() || json["jobs"].empty()) {
    return Fail(EINVAL, "fio JSON has no jobs");
  }
  const auto& job = json["jobs"][0];
  if (!job.is_object()) return Fail(EINVAL, "fio JSON job is not an object");
  int error = job.value("error", 0);
  if (error != 0) return Fail(error, "fio job " + job.value("jobname", std::string("?")));
  FioResult r;
  double runtime_ms = job.value("job_runtime", 0.0);
  double bw = 0;
  for (const char* dir : {"read", "write"}) {
    if (!job.contains(dir) || !job[dir].is_object()) continue;
    const auto& d = job[dir];
    r.bytes += d.value("io_bytes", uint64_t{0});
    r.iops += d.value("iops", 0.0);
    bw += d.value("bw_bytes", 0.0);
    runtime_ms = std::max(runtime_ms, d.value("runtime", 0.0));
  }
  // The run times are whole milliseconds; a short job's byte rate is finer.
  r.seconds = std::max(runtime_ms / 1000, bw > 0 ? static_cast<double>(r.bytes) / bw : 0.0);
  if (r.bytes == 0 || r.seconds <= 0) return Fail(EINVAL, "fio job moved no data");
  r.bytes_per_s = static_cast<double>(r.bytes) / r.seconds;
  return r;
}

Result<FioResult> RunFio(const FioRun& run) {
  auto job = FioJobs().find(run.job);
  if (job == FioJobs().end()) return Fail(EINVAL, "no fio job " + run.job);
  std::string job_file = run.scratch + "/" + run.job + ".fio";
  std::string json_file = run.scratch + "/" + run.job + ".json";
  std::string log = run.scratch + "/fio.log";
  LAMINA_CHECK(WriteFileAtomic(job_file, job->second));
  SpawnOptions options;
  options.stderr_path = log;
  options.env = {"FIO_DIR=" + run.dir, "FIO_SIZE=" + std::to_string(run.size),
                 "FIO_IO_SIZE=" + std::to_string(std::max<uint64_t>(run.io_size, 4096))};
  LAMINA_CHECK(
      RunChecked({"fio", "--output-format=json", "--output=" + json_file, job_file}, options));
  std::string text = LAMINA_TRY(ReadFile(json_file));
  auto result = ParseFioJson(text);
  if (!result) return Fail(result.error().Wrap("fio " + run.job));
  return result;
}

}  // namespace lamina::bench
