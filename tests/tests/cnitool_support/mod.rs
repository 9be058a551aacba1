//! Driving weft through cnitool (the CNI project's reference driver, built
//! from Debian's libcni 1.1.2 source by `scripts/build-cnitool.sh`), and the
//! iperf3 and tc/iptables helpers the cnitool tests need.
//!
//! cnitool runs inside the lab's node namespace (`ip netns exec`), under
//! `unshare -m --propagation private` with a directory of the lab bound over
//! `/var/lib`: libcni's result cache (`/var/lib/cni/results`, not
//! configurable) then lands in the lab's directory and goes away with the lab,
//! and the host's `/var/lib/cni` is never touched (it need not even exist).
//! The cache persists between cnitool runs of one test, as libcni needs:
//! CHECK and DEL read the result ADD cached.

#![allow(dead_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use weft_lab::Lab;

/// Where the reference plugins (portmap, bandwidth) live.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// Longest any single cnitool run may take (it is milliseconds normally).
const CNITOOL_TIMEOUT_S: u32 = 30;
/// Longest building cnitool may take (fetching Debian's source + go build).
const BUILD_TIMEOUT_S: u32 = 600;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| workspace_root().join("target"))
}

static CNITOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// cnitool's path, built on first use by `scripts/build-cnitool.sh` (which
/// returns at once when the binary exists). Panics when it cannot be had: a
/// test that needs cnitool and runs as root must fail then, not skip.
pub fn cnitool_or_fail() -> PathBuf {
    // one build per test process: tests run in parallel and must not race
    // two `go build -o` onto the same file
    let got = CNITOOL.get_or_init(|| {
        let out = target_dir().join("tools").join("cnitool");
        let script = workspace_root().join("scripts/build-cnitool.sh");
        let run = Command::new("timeout")
            .args(["-k", "10", &BUILD_TIMEOUT_S.to_string(), "bash"])
            .arg(&script)
            .arg(&out)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !run.status.success() || !out.exists() {
            return Err(format!(
                "{} {} failed ({}): {}",
                script.display(),
                out.display(),
                run.status,
                String::from_utf8_lossy(&run.stderr).trim()
            ));
        }
        Ok(out)
    });
    match got {
        Ok(p) => p.clone(),
        Err(e) => panic!("cnitool is needed and could not be built: {e}"),
    }
}

/// The container id cnitool gives a namespace: `cnitool-` + the first 10
/// bytes of SHA-512 of the (absolute) netns path, in hex.
pub fn cnitool_container_id(netns: &Path) -> String {
    let mut child = Command::new("sha512sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha512sum (coreutils) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(netns.as_os_str().as_encoded_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("cnitool-{}", &hex[..20])
}

/// What one cnitool run produced.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The result JSON cnitool printed (ADD).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("cnitool printed non-JSON ({e}): {:?}", self.stdout))
    }

    #[track_caller]
    pub fn ok(self, what: &str) -> Run {
        assert!(
            self.success,
            "cnitool {what} failed: stdout {:?} stderr {:?}",
            self.stdout, self.stderr
        );
        self
    }
}

/// cnitool pointed at one lab: its own net.d and result cache in the lab's
/// directory, weft-cni of the lab and the reference plugins on CNI_PATH.
pub struct Cnitool {
    pub bin: PathBuf,
    /// NETCONFPATH.
    pub net_dir: PathBuf,
    /// Bound over /var/lib while cnitool runs.
    pub var_lib: PathBuf,
    pub cni_path: String,
    pub node_ns: String,
}

impl Cnitool {
    pub fn new(lab: &Lab) -> Cnitool {
        let base = lab.dir.join("cnitool");
        let net_dir = base.join("net.d");
        let var_lib = base.join("var-lib");
        std::fs::create_dir_all(&net_dir).unwrap();
        std::fs::create_dir_all(var_lib.join("cni")).unwrap();
        Cnitool {
            bin: cnitool_or_fail(),
            net_dir,
            var_lib,
            cni_path: format!("{}:{REFERENCE_PLUGINS}", lab.bin_dir.display()),
            node_ns: lab.node_netns_name(),
        }
    }

    /// Writes a network configuration file (`.conf` or `.conflist`) into
    /// the net.d cnitool reads.
    pub fn write_config(&self, file: &str, conf: &serde_json::Value) {
        std::fs::write(
            self.net_dir.join(file),
            serde_json::to_vec_pretty(conf).unwrap(),
        )
        .unwrap();
    }

    /// Where libcni caches the result of `network` for `container_id`.
    pub fn cache_file(&self, network: &str, container_id: &str) -> PathBuf {
        self.var_lib
            .join("cni/results")
            .join(format!("{network}-{container_id}-eth0"))
    }

    /// `cnitool <verb> <network> <netns>` in the node namespace. `cap_args`
    /// is CAP_ARGS (runtimeConfig), `cni_args` CNI_ARGS.
    pub fn run(
        &self,
        verb: &str,
        network: &str,
        netns: &Path,
        cap_args: Option<&serde_json::Value>,
        cni_args: Option<&str>,
    ) -> Run {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CNITOOL_TIMEOUT_S.to_string()])
            .args(["unshare", "-m", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                r#"mount --bind "$1" /var/lib && shift && exec ip netns exec "$@""#,
                "sh",
            ])
            .arg(&self.var_lib)
            .arg(&self.node_ns)
            .arg(&self.bin)
            .args([verb, network])
            .arg(netns)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", &self.net_dir)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::null());
        if let Some(c) = cap_args {
            cmd.env("CAP_ARGS", c.to_string());
        }
        if let Some(a) = cni_args {
            cmd.env("CNI_ARGS", a);
        }
        let start = Instant::now();
        let out = cmd.output().expect("timeout/unshare/ip run");
        let run = Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        };
        eprintln!(
            "cnitool {verb} {network} {}: {} in {:?}",
            netns.display(),
            if run.success { "ok" } else { "FAILED" },
            run.elapsed
        );
        run
    }
}

/// A pod namespace named `<lab>-<pod>` (so `Lab::down` removes it too).
pub fn pod_netns(lab: &Lab, pod: &str) -> PathBuf {
    let name = format!("{}-{pod}", lab.name);
    weft_lab::ip(&["netns", "add", &name]).unwrap();
    weft_lab::ip(&["-n", &name, "link", "set", "lo", "up"]).unwrap();
    PathBuf::from("/run/netns").join(name)
}

/// The addresses (without prefix length) of a CNI result.
pub fn result_ips(result: &serde_json::Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|s| s.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses with prefix length, as `ipnet::IpNet`.
pub fn result_nets(result: &serde_json::Value) -> Vec<ipnet::IpNet> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stdout of a command (empty when it cannot run).
pub fn out_of(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub fn tc_qdiscs(netns: &str, dev: Option<&str>) -> String {
    match dev {
        Some(d) => out_of("tc", &["-n", netns, "qdisc", "show", "dev", d]),
        None => out_of("tc", &["-n", netns, "qdisc", "show"]),
    }
}

pub fn nat_rules(netns: &str) -> String {
    out_of(
        "ip",
        &["netns", "exec", netns, "iptables-save", "-t", "nat"],
    ) + &out_of(
        "ip",
        &["netns", "exec", netns, "ip6tables-save", "-t", "nat"],
    )
}

/// An iperf3 server this test started inside a namespace; killed by its pid
/// (and reaped) when dropped.
pub struct Iperf3Server {
    child: Child,
    pub port: u16,
}

impl Iperf3Server {
    /// Starts `iperf3 -s` in `netns` on `port` and waits (≤ 5 s) until it
    /// listens.
    pub fn start(netns: &str, port: u16) -> Iperf3Server {
        // `ip netns exec` execs iperf3 itself: the child's pid is iperf3's
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "iperf3",
                "-s",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 starts");
        let server = Iperf3Server { child, port };
        let listening = crate::common::eventually(Duration::from_secs(5), || {
            !out_of(
                "ip",
                &[
                    "netns",
                    "exec",
                    netns,
                    "ss",
                    "-Hltn",
                    &format!("sport = :{port}"),
                ],
            )
            .trim()
            .is_empty()
        });
        assert!(listening, "iperf3 -s in {netns} did not listen on {port}");
        server
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an iperf3 client run measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Receiver side, bits per second over the whole run.
    pub received_bps: f64,
    pub sent_bps: f64,
}

/// `iperf3 -c <to> -t <secs> -J [-R]` from `netns`, bounded by `timeout`.
pub fn iperf3_client(netns: &str, to: IpAddr, port: u16, secs: u32, reverse: bool) -> Measured {
    let limit = (secs + 10).to_string();
    let mut args = vec![
        "-k".to_string(),
        "3".into(),
        limit,
        "ip".into(),
        "netns".into(),
        "exec".into(),
        netns.into(),
        "iperf3".into(),
        "-c".into(),
        to.to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        secs.to_string(),
        "--connect-timeout".into(),
        "3000".into(),
        "-J".into(),
    ];
    if reverse {
        args.push("-R".into());
    }
    let out = Command::new("timeout")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("iperf3 client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "iperf3 -c {to} printed no JSON ({e}, {}): {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && json.get("error").is_none(),
        "iperf3 -c {to} failed ({}): {}",
        out.status,
        json["error"]
    );
    let bps = |k: &str| {
        json["end"][k]["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("iperf3 JSON lacks end.{k}.bits_per_second: {json}"))
    };
    Measured {
        received_bps: bps("sum_received"),
        sent_bps: bps("sum_sent"),
    }
}
