//! `weft ui` in headless Chromium against a lab cluster driven through the
//! real API server: a NetworkPolicy lets x's pods in only from x; the
//! probes make allowed and denied connections; the page (served by
//! `weft --lab X ui`) must show the denied flow as DROPPED naming the
//! policy, narrow its table by verdict and by pod, draw both edges on the
//! service map, and compute a policy matrix equal to the probed one and to
//! the policy's known table. `WEFT_UI_SCREENSHOT=PATH` keeps the page's
//! screenshot (docs/ui.png is made so).

mod common;
mod netpol_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netpol_support::{apply, LabDriver};
use serde_json::{json, Value};
use weft_api::PolicyMatrix;
use weft_netpol_cases::Driver;
use weft_policy::Protocol;

const PATIENCE: Duration = Duration::from_secs(240);
/// The page check's bound: Chromium's start, a few polls, the matrix.
const PAGE_LIMIT: Duration = Duration::from_secs(120);
const NODE_MODULES: &str = "/var/cache/weft/ui-node/node_modules";
const CHROMIUM: &str = "/usr/bin/chromium";
const DENY: &str = "ingress: denied by the default deny of x/x-only";

/// A process group of our own (the ui server; node and its Chromium),
/// killed by its id and reaped when dropped, pass or fail.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // the group this test made for the child (its id is the child's)
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weft(lab: &str) -> Command {
    let mut c = Command::new(bin_dir().join("weft"));
    c.args(["--lab", lab]);
    c
}

/// `weft --lab X ui --listen 127.0.0.1:0`, and the address it printed.
fn start_ui(lab: &str) -> (Group, String) {
    let mut child = weft(lab)
        .args(["ui", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("weft ui starts");
    let stdout = child.stdout.take().unwrap();
    let group = Group(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("weft ui: serving ")
        .unwrap_or_else(|| panic!("weft ui printed {line:?}"))
        .to_string();
    (group, url)
}

/// Runs the Playwright script on `spec`; its one JSON line.
fn check_page(dir: &Path, spec: &Value) -> Value {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(NODE_MODULES).join("playwright-core").exists(),
        "{CHROMIUM} or {NODE_MODULES}/playwright-core missing: run scripts/setup.sh (make test does)"
    );
    let spec_file = dir.join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/check.cjs");
    let child = Command::new("node")
        .arg(&script)
        .arg(&spec_file)
        .env("NODE_PATH", NODE_MODULES)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("node runs");
    let mut group = Group(child);
    let started = Instant::now();
    while group.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < PAGE_LIMIT,
            "the page check ran past {PAGE_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    group
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    group
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = group.0.wait().unwrap();
    assert!(status.success(), "page check failed:\n{err}");
    eprintln!("page checked in {:.1} s", started.elapsed().as_secs_f64());
    serde_json::from_str(out.lines().last().unwrap_or_default()).expect("the check's JSON line")
}

#[test]
fn ui_shows_flows_the_map_and_the_policy_matrix_in_chromium_privileged() {
    if !root_or_skip("ui_shows_flows_the_map_and_the_policy_matrix_in_chromium_privileged") {
        return;
    }
    let started = Instant::now();
    let lab = kube::kube_lab("ui", PATIENCE, |spec| {
        spec.nodes = 2;
        spec.etcd_members = 1;
    });
    let mut k = LabDriver::new(&lab, PATIENCE);
    let cells = ["x/a", "x/b", "y/a"];
    k.start(&cells, &[], &[]);
    apply(
        &lab,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "x-only", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}]}}),
    );
    k.wait_compiled(&["x/x-only".into()]);
    // the known table: into x only from x; y is not isolated
    let expected: BTreeMap<(String, String), bool> = cells
        .iter()
        .flat_map(|f| cells.iter().map(move |t| (f, t)))
        .filter(|(f, t)| f != t)
        .map(|(f, t)| {
            (
                (f.to_string(), t.to_string()),
                !(f.starts_with("y/") && t.starts_with("x/")),
            )
        })
        .collect();
    // probing makes the connections the page must show (y/a -> x/a denied,
    // x/b -> x/a allowed), and is the network's own truth table
    let mut probed = BTreeMap::new();
    let converged = eventually(Duration::from_secs(20), || {
        probed = k.matrix(80, Protocol::Tcp);
        probed == expected
    });
    assert!(converged, "probed {probed:?}, expected {expected:?}");

    let (_ui, url) = start_ui(&lab.name);
    eprintln!("weft ui serving {url}");
    let tmp = TempDir(std::env::temp_dir().join(format!("{}-ui", lab.name)));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let shot = tmp.0.join("ui.png");
    let out = check_page(
        &tmp.0,
        &json!({
            "url": url,
            "profile": tmp.0.join("profile"),
            "screenshot": shot,
            "dropped": {"from": "y/a", "to": "x/a", "policy": "x/x-only"},
            "allowed": {"from": "x/b", "to": "x/a"},
            "matrix": {"pods": cells, "port": 80, "protocol": "tcp"},
        }),
    );
    eprintln!(
        "page: {} flows, filtered {}, drop shown as {:?}",
        out["unfiltered"], out["filtered"], out["dropped_why"]
    );

    // the page's matrix is the known table and the probed one
    let mut seen = 0;
    for c in out["matrix"].as_array().expect("matrix cells") {
        let (from, to, state, by) = (
            c[0].as_str().unwrap(),
            c[1].as_str().unwrap(),
            c[2].as_str().unwrap(),
            c[3].as_str().unwrap_or_default(),
        );
        if from == to {
            assert_eq!(state, "self", "{c}");
            continue;
        }
        let key = (from.to_string(), to.to_string());
        let want = if expected[&key] { "allowed" } else { "denied" };
        assert_eq!(state, want, "{from} -> {to}: {c}");
        assert_eq!(probed[&key], expected[&key]);
        if state == "denied" {
            assert_eq!(by, DENY, "{c}");
        }
        seen += 1;
    }
    assert_eq!(seen, expected.len());

    // `weft policy matrix` answers the same from the same endpoint
    let cli = weft(&lab.name)
        .args([
            "-o",
            "json",
            "policy",
            "matrix",
            "--pods",
            "x/a,x/b,y/a",
            "--port",
            "80/tcp",
        ])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(1), "a denied cell exits 1");
    let m: PolicyMatrix = serde_json::from_slice(&cli.stdout).expect("matrix json");
    for (i, from) in m.pods.iter().enumerate() {
        for (j, to) in m.pods.iter().enumerate() {
            let c = &m.rows[i][j];
            let want = if from == to {
                "self"
            } else if expected[&(from.clone(), to.clone())] {
                "allowed"
            } else {
                "denied"
            };
            assert_eq!(c.state, want, "{from} -> {to}: {c:?}");
        }
    }

    let table = weft(&lab.name)
        .args([
            "policy",
            "matrix",
            "--pods",
            "x/a,x/b,y/a",
            "--port",
            "80/tcp",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    for to in ["x/a", "x/b"] {
        let line = format!("y/a -> {to}: denied ({DENY})");
        assert!(table.contains(&line), "{line:?} in:\n{table}");
    }
    eprintln!("weft policy matrix:\n{table}");

    if let Ok(dest) = std::env::var("WEFT_UI_SCREENSHOT") {
        std::fs::copy(&shot, &dest).expect("copying the screenshot");
        eprintln!("screenshot kept at {dest}");
    }
    eprintln!("ui checked in {:.1} s", started.elapsed().as_secs_f64());
}
