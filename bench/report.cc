#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace lamina::bench {

namespace {

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

// Seconds with three significant digits at least down to a millisecond.
std::string Seconds(double s) {
  if (s >= 100) return Fixed(s, 1);
  if (s >= 10) return Fixed(s, 2);
  return Fixed(s, 3);
}

std::string XmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// The issue-6 figures of lamina-fuse ("fuse") against its baselines, each
// present when both sides were measured.
struct FuseTargets {
  std::optional<double> meta_speedup_vs_fuse_overlayfs;  // > 1: lamina-fuse faster
  std::optional<double> meta_slowdown_vs_overlay;        // time ratio, < 3 wanted
  std::optional<double> read_big_vs_overlay;             // throughput ratio, >= 0.7 wanted
  std::optional<double> copyup_vs_overlay;               // time ratio, <= 1 wanted
  std::optional<double> rss_vs_fuse_overlayfs;           // <= 1 wanted
};

std::optional<double> Ratio(std::optional<double> a, std::optional<double> b) {
  if (!a || !b || *b <= 0) return std::nullopt;
  return *a / *b;
}

FuseTargets ComputeFuseTargets(const Report& r) {
  FuseTargets t;
  t.meta_speedup_vs_fuse_overlayfs = Ratio(r.GroupGeoMean("meta", "fuse-overlayfs", "fuse"),
                                           r.GroupGeoMean("meta", "fuse", "fuse-overlayfs"));
  t.meta_slowdown_vs_overlay =
      Ratio(r.GroupGeoMean("meta", "fuse", "overlay"), r.GroupGeoMean("meta", "overlay", "fuse"));
  t.read_big_vs_overlay = Ratio(r.Median("read-big", "overlay"), r.Median("read-big", "fuse"));
  t.copyup_vs_overlay = Ratio(r.Median("append-big", "fuse"), r.Median("append-big", "overlay"));
  auto rss = [&](const char* target) -> std::optional<double> {
    auto it = r.rss_kib.find(target);
    if (it == r.rss_kib.end()) return std::nullopt;
    return static_cast<double>(it->second);
  };
  t.rss_vs_fuse_overlayfs = Ratio(rss("fuse"), rss("fuse-overlayfs"));
  return t;
}

}  // namespace

Stats Summarize(std::vector<double> values) {
  Stats s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  s.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  s.min = values.front();
  s.max = values.back();
  return s;
}

std::optional<double> GeoMean(const std::vector<double>& values) {
  if (values.empty()) return std::nullopt;
  double log_sum = 0;
  for (double v : values) {
    if (!(v > 0)) return std::nullopt;
    log_sum += std::log(v);
  }
  return std::exp(log_sum / static_cast<double>(values.size()));
}

const Cell* Report::Find(const std::string& workload, const std::string& target) const {
  auto row = cells.find(workload);
  if (row == cells.end()) return nullptr;
  auto cell = row->second.find(target);
  return cell == row->second.end() ? nullptr : &cell->second;
}

std::optional<double> Report::Median(const std::string& workload, const std::string& target) const {
  const Cell* cell = Find(workload, target);
  if (cell == nullptr || !cell->Measured()) return std::nullopt;
  return Summarize(cell->seconds).median;
}

std::optional<double> Report::GroupGeoMean(const std::string& group, const std::string& target,
                                           const std::string& other) const {
  std::vector<double> medians;
  for (const auto& w : workloads) {
    if (w.group != group) continue;
    auto mine = Median(w.name, target);
    if (!mine) continue;
    if (!other.empty() && !Median(w.name, other)) continue;
    medians.push_back(*mine);
  }
  return GeoMean(medians);
}

nlohmann::json ToJson(const Report& report) {
  using nlohmann::json;
  json out;
  out["schema"] = "lamina-bench/1";
  out["setup"] = report.setup;
  out["targets"] = json::array();
  for (const auto& t : report.targets) {
    out["targets"].push_back({{"name", t.name}, {"usable", t.usable}, {"reason", t.reason}});
  }
  out["workloads"] = json::array();
  for (const auto& w : report.workloads) {
    out["workloads"].push_back(
        {{"name", w.name}, {"group", w.group}, {"description", w.description}});
  }
  out["results"] = json::array();
  for (const auto& w : report.workloads) {
    for (const auto& t : report.targets) {
      const Cell* cell = report.Find(w.name, t.name);
      if (cell == nullptr) continue;
      json r = {{"workload", w.name}, {"target", t.name}};
      if (!cell->na.empty()) {
        r["na"] = cell->na;
      } else {
        Stats s = Summarize(cell->seconds);
        r["runs"] = cell->seconds;
        if (cell->Measured()) {
          r["median"] = s.median;
          r["min"] = s.min;
          r["max"] = s.max;
        }
        if (!cell->extra.empty()) r["extra"] = cell->extra;
        if (!cell->error.empty()) r["error"] = cell->error;
      }
      out["results"].push_back(std::move(r));
    }
  }
  out["rss_kib"] = report.rss_kib;
  json geo = json::object();
  json ratio = json::object();
  auto reference = report.GroupGeoMean("meta", "overlay");
  for (const auto& t : report.targets) {
    if (auto g = report.GroupGeoMean("meta", t.name)) geo[t.name] = *g;
    if (auto r = Ratio(report.GroupGeoMean("meta", t.name, "overlay"),
                       report.GroupGeoMean("meta", "overlay", t.name));
        r && reference) {
      ratio[t.name] = *r;
    }
  }
  out["summary"]["geomean_meta"] = geo;
  out["summary"]["meta_ratio_to_overlay"] = ratio;
  FuseTargets ft = ComputeFuseTargets(report);
  json fuse = json::object();
  auto put = [&](const char* key, std::optional<double> v) {
    if (v) fuse[key] = *v;
  };
  put("meta_speedup_vs_fuse_overlayfs", ft.meta_speedup_vs_fuse_overlayfs);
  put("meta_time_ratio_vs_overlay", ft.meta_slowdown_vs_overlay);
  put("read_big_throughput_vs_overlay", ft.read_big_vs_overlay);
  put("copyup_time_vs_overlay", ft.copyup_vs_overlay);
  put("rss_vs_fuse_overlayfs", ft.rss_vs_fuse_overlayfs);
  out["summary"]["lamina_fuse"] = fuse;
  return out;
}

std::string FormatTable(const Report& report) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"workload (s)"};
  for (const auto& t : report.targets) header.push_back(t.name);
  rows.push_back(header);
  for (const auto& w : report.workloads) {
    std::vector<std::string> row = {w.name};
    for (const auto& t : report.targets) {
      const Cell* cell = report.Find(w.name, t.name);
      if (cell == nullptr) {
        row.push_back("-");
      } else if (!cell->na.empty()) {
        row.push_back("n/a");
      } else if (!cell->Measured()) {
        row.push_back("failed");
      } else {
        Stats s = Summarize(cell->seconds);
        std::string text = Seconds(s.median);
        if (cell->seconds.size() > 1 && s.median > 0) {
          text += " ±" + Fixed(50 * (s.max - s.min) / s.median, 0) + "%";
        }
        if (!cell->error.empty()) text += " (!)";
        row.push_back(text);
      }
    }
    rows.push_back(row);
  }
  std::vector<std::string> geo = {"geomean meta"};
  for (const auto& t : report.targets) {
    auto g = report.GroupGeoMean("meta", t.name);
    geo.push_back(g ? Seconds(*g) : "-");
  }
  rows.push_back(geo);

  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      // "±" is two bytes and one column.
      size_t cols = row[i].size() - (row[i].find("±") != std::string::npos ? 1 : 0);
      widths[i] = std::max(widths[i], cols);
    }
  }
  std::ostringstream out;
  for (const auto& s : {"kernel", "backing_fs", "image", "runs", "open_file_limit", "fuse_params"}) {
    auto it = report.setup.find(s);
    if (it != report.setup.end()) out << "# " << s << ": " << it->second << "\n";
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      size_t cols = row[i].size() - (row[i].find("±") != std::string::npos ? 1 : 0);
      std::string pad(widths[i] - cols, ' ');
      line += i == 0 ? row[i] + pad : pad + row[i];
      if (i + 1 < row.size()) line += "  ";
    }
    out << line << "\n";
  }
  for (const auto& t : report.targets) {
    if (!t.usable) out << "# " << t.name << ": not used: " << t.reason << "\n";
  }
  for (const auto& w : report.workloads) {
    for (const auto& t : report.targets) {
      const Cell* cell = report.Find(w.name, t.name);
      if (cell != nullptr && !cell->error.empty()) {
        out << "# " << w.name << " on " << t.name << " failed: " << cell->error << "\n";
      }
    }
  }
  if (!report.rss_kib.empty()) {
    out << "daemon RSS after ls -lR:";
    for (const auto& [target, kib] : report.rss_kib) {
      out << " " << target << " " << Fixed(static_cast<double>(kib) / 1024, 1) << " MiB";
    }
    out << "\n";
  }
  FuseTargets ft = ComputeFuseTargets(report);
  auto line = [&](const char* what, std::optional<double> v, const char* goal) {
    if (v) out << "lamina-fuse " << what << ": " << Fixed(*v, 2) << "x (target " << goal << ")\n";
  };
  line("metadata geomean speedup over fuse-overlayfs", ft.meta_speedup_vs_fuse_overlayfs, ">= 2");
  line("metadata geomean time vs overlay", ft.meta_slowdown_vs_overlay, "<= 3");
  line("big-file read throughput vs overlay", ft.read_big_vs_overlay, ">= 0.7");
  line("copy-up time of the big file vs overlay", ft.copyup_vs_overlay, "<= 1");
  line("daemon RSS vs fuse-overlayfs", ft.rss_vs_fuse_overlayfs, "<= 1");
  return out.str();
}

std::string RenderSvg(const Report& report, const std::string& reference) {
  struct Bar {
    std::string target;
    double ratio;
  };
  struct Group {
    std::string workload;
    std::vector<Bar> bars;
  };
  std::vector<std::string> others;
  for (const auto& t : report.targets) {
    if (t.name == reference) continue;
    bool measured =
        std::any_of(report.workloads.begin(), report.workloads.end(),
                    [&](const WorkloadInfo& w) { return report.Median(w.name, t.name); });
    if (measured) others.push_back(t.name);
  }
  std::vector<Group> groups;
  double lo = 0.5, hi = 2;
  for (const auto& w : report.workloads) {
    auto ref = report.Median(w.name, reference);
    if (!ref || *ref <= 0) continue;
    Group g{w.name, {}};
    for (const auto& t : others) {
      auto m = report.Median(w.name, t);
      if (!m || *m <= 0) continue;
      double ratio = *m / *ref;
      g.bars.push_back({t, ratio});
      lo = std::min(lo, ratio);
      hi = std::max(hi, ratio);
    }
    if (!g.bars.empty()) groups.push_back(std::move(g));
  }
  // Log2 axis over whole powers of two around the data, at most 1/64x to
  // 64x: a bar beyond ends at the edge (its label keeps the value), so one
  // near-zero time (a copy-up that a full copy never needs) does not squash
  // the rest.
  int lo_exp = std::max(-6, static_cast<int>(std::floor(std::log2(lo))));
  int hi_exp = std::min(6, static_cast<int>(std::ceil(std::log2(hi))));
  const double kLabelW = 120, kPlotW = 560, kBarH = 12, kGap = 10, kTop = 60;
  double height = kTop + 40;
  for (const auto& g : groups) height += g.bars.size() * kBarH + kGap;
  double width = kLabelW + kPlotW + 90;
  auto x_of = [&](double ratio) {
    double e =
        std::clamp(std::log2(ratio), static_cast<double>(lo_exp), static_cast<double>(hi_exp));
    return kLabelW + (e - lo_exp) / (hi_exp - lo_exp) * kPlotW;
  };
  static const char* kColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                  "#76b7b2", "#b07aa1", "#edc948", "#9c755f"};
  auto color = [&](const std::string& target) {
    auto it = std::find(others.begin(), others.end(), target);
    return kColors[(it - others.begin()) % std::size(kColors)];
  };

  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << Fixed(width, 0) << "\" height=\""
      << Fixed(height, 0) << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << Fixed(kLabelW, 0) << "\" y=\"18\" font-size=\"14\">"
      << XmlEscape("lamina bench: time as a ratio to " + reference + " (log scale, left is faster)")
      << "</text>\n";
  // Legend.
  double lx = kLabelW;
  for (const auto& t : others) {
    svg << "<rect x=\"" << Fixed(lx, 0) << "\" y=\"28\" width=\"10\" height=\"10\" fill=\""
        << color(t) << "\"/><text x=\"" << Fixed(lx + 14, 0) << "\" y=\"37\">" << XmlEscape(t)
        << "</text>\n";
    lx += 24 + 7 * t.size();
  }
  // Grid lines at the powers of two.
  double plot_bottom = height - 30;
  for (int e = lo_exp; e <= hi_exp; ++e) {
    double x = x_of(std::exp2(e));
    svg << "<line x1=\"" << Fixed(x, 1) << "\" y1=\"" << Fixed(kTop - 8, 0) << "\" x2=\""
        << Fixed(x, 1) << "\" y2=\"" << Fixed(plot_bottom, 0) << "\" stroke=\""
        << (e == 0 ? "#000" : "#ddd") << "\"/>\n"
        << "<text x=\"" << Fixed(x, 1) << "\" y=\"" << Fixed(plot_bottom + 14, 0)
        << "\" text-anchor=\"middle\">"
        << (e >= 0 ? Fixed(std::exp2(e), 0) : "1/" + Fixed(std::exp2(-e), 0)) << "x</text>\n";
  }
  double y = kTop;
  double one = x_of(1);
  for (const auto& g : groups) {
    double group_h = g.bars.size() * kBarH;
    svg << "<text x=\"" << Fixed(kLabelW - 6, 0) << "\" y=\"" << Fixed(y + group_h / 2 + 4, 1)
        << "\" text-anchor=\"end\">" << XmlEscape(g.workload) << "</text>\n";
    for (const auto& b : g.bars) {
      double x = x_of(b.ratio);
      double left = std::min(x, one), w = std::max(std::abs(x - one), 1.0);
      svg << "<rect x=\"" << Fixed(left, 1) << "\" y=\"" << Fixed(y + 1, 1) << "\" width=\""
          << Fixed(w, 1) << "\" height=\"" << Fixed(kBarH - 2, 0) << "\" fill=\"" << color(b.target)
          << "\"><title>" << XmlEscape(g.workload + " " + b.target + ": " + Fixed(b.ratio, 2))
          << "x</title></rect>\n"
          << "<text x=\"" << Fixed(std::max(x, one) + 3, 1) << "\" y=\"" << Fixed(y + kBarH - 2, 1)
          << "\" font-size=\"9\">" << (b.ratio < 0.01 ? "&lt;0.01" : Fixed(b.ratio, 2))
          << "</text>\n";
      y += kBarH;
    }
    y += kGap;
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace lamina::bench
