//! Removing everything a run made under one name prefix, for when the run
//! itself cannot: a benchmark stopped by Ctrl-C or SIGTERM never reaches its
//! `Drop` guards, and would leave labs, namespaces and their processes behind.
//!
//! Every lab and bare namespace a benchmark makes is named `<prefix>-…`, where
//! the prefix carries the benchmark's own pid (`wdp<pid>`), so whatever lives in
//! such a namespace was started by that run.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{ip, Lab, LAB_ROOT};

/// Removes every lab named `prefix` or `prefix-…` (its recorded processes first, the way
/// `weft lab down` does), then every namespace named `prefix-…` that no lab
/// recorded, after ending the processes inside it. Goes on past errors and
/// returns them.
pub fn remove_all_with_prefix(prefix: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for lab in names_in(Path::new(LAB_ROOT), prefix) {
        if let Err(e) = Lab::down(&lab) {
            errors.push(format!("{e:#}"));
        }
    }
    for ns in names_in(Path::new("/run/netns"), prefix) {
        end_processes_in(&ns);
        if let Err(e) = ip(&["netns", "del", &ns]) {
            errors.push(format!("{e:#}"));
        }
    }
    errors
}

fn names_in(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == prefix || n.starts_with(&format!("{prefix}-")))
        .collect();
    names.sort();
    names
}

/// SIGTERM to every process in namespace `ns`, SIGKILL to those still there
/// after two seconds.
fn end_processes_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut signal = "-TERM";
    loop {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        // kill(1), like `Lab::down`'s stop_pid: this crate has no unsafe
        let _ = std::process::Command::new("kill")
            .arg(signal)
            .args(pids.iter().map(u32::to_string))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if signal == "-KILL" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= deadline {
            signal = "-KILL";
        }
    }
}

fn pids_in(ns: &str) -> Vec<u32> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
