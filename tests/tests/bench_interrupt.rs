//! A benchmark stopped by SIGTERM (or Ctrl-C) removes what it made: its
//! labs, namespaces and the weftds, etcds and clients in them. The default
//! action of the signal would end the process before any `Drop` guard runs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Removes the run's leftovers if the test fails half way.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        weft_lab::sweep::remove_all_with_prefix(&self.0);
    }
}

fn named_with(dir: &str, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n == prefix || n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bench_stopped_by_sigterm_leaves_nothing_behind_privileged() {
    if !root_or_skip("bench_stopped_by_sigterm_leaves_nothing_behind_privileged") {
        return;
    }
    let out = std::env::temp_dir().join(format!("weft-bench-interrupt-{}", std::process::id()));
    let mut child = Command::new(bin_dir().join("weft"))
        .args(["bench", "cni", "--pods", "400", "--rounds", "4", "--out"])
        .arg(&out)
        .arg("--bin-dir")
        .arg(bin_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft bench cni");
    let prefix = format!("wbench{}", child.id());
    let _sweep = Sweep(prefix.clone());
    // mid-run: its lab is up and weftd is serving ADDs
    let started = eventually(Duration::from_secs(60), || {
        !named_with(weft_lab::LAB_ROOT, &prefix).is_empty()
            && !named_with("/run/netns", &prefix).is_empty()
    });
    assert!(started, "the bench made no lab named {prefix}* within 60 s");
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let ended = eventually(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(ended, "weft bench cni still running 60 s after SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "exit status; stderr:\n{stderr}"
    );
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
    assert_eq!(
        named_with("/run/netns", &prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    assert_eq!(
        named_with(weft_lab::LAB_ROOT, &prefix),
        Vec::<String>::new(),
        "labs left"
    );
}
