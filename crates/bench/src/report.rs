//! What every benchmark shares: the machine a report ran on, latency
//! statistics, readings of /proc, and writing a report with its chart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let q = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
            ms(samples[i])
        };
        Stats {
            n: samples.len(),
            min_ms: q(0.0),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: q(1.0),
        }
    }
}

/// When a benchmark ran and on what: every report carries it, because a
/// figure means little without the machine it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub when_unix: u64,
    pub kernel: String,
    pub cpus: usize,
}

impl Machine {
    pub fn now() -> Machine {
        Machine {
            when_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Writes a report as `<out>/<kind>-<time>.json` and its chart as `.svg`,
/// and as `.png` where rsvg-convert is installed; returns the paths written.
pub fn write_results<R: Serialize>(
    kind: &str,
    machine: &Machine,
    report: &R,
    svg: &str,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = out.join(format!("{kind}-{}", machine.when_unix));
    let json = stem.with_extension("json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)?;
    let svg_path = stem.with_extension("svg");
    std::fs::write(&svg_path, svg)?;
    let mut written = vec![json, svg_path.clone()];
    let png = stem.with_extension("png");
    let png_ok = std::process::Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg_path)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if png_ok {
        written.push(png);
    }
    Ok(written)
}

/// Resident memory (VmRSS) of `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// utime + stime of `pid`, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    proc_cpu(&format!("/proc/{pid}/stat"), false)
}

/// utime + stime (and, with `children`, cutime + cstime) of a
/// `/proc/<pid>/stat`, seconds (clock ticks are 100 Hz on Linux x86_64).
pub fn proc_cpu(path: &str, children: bool) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // after the comm: state is field 0, utime 11, stime 12, cutime 13, cstime 14
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 4 {
        return None;
    }
    let ticks = f[0] + f[1] + if children { f[2] + f[3] } else { 0.0 };
    Some(ticks / 100.0)
}
