//! `weft bench policy --scale`: NetworkPolicy at scale in a lab cluster with
//! the real API server (issue 12: "time from a policy change at the API
//! server to enforcement, one change among 1k policies; weftd RSS and CPU
//! with 1k policies over 1k pods; bytes of map per rule").
//!
//! One node, P pods made by the lab kubelet (a client, a server serving
//! TCP 80, the rest fillers with a label each), N NetworkPolicies: N - 1
//! fillers (policy i isolates filler pod i mod F and lets filler i+1 in on
//! one port) and `probe`, which isolates the server and lets the client in
//! on 80, or lets nobody in. Then K times the probe policy is patched (a
//! merge patch through `kubectl proxy` on a unix socket: one persistent
//! client, no kubectl start-up in the figure) so the client's verdict flips,
//! while a thread in the client's namespace opens a new connection to the
//! server every ~1 ms. Per change:
//! (i) the patch sent -> weftd's policy thread woke to it,
//! (ii) woke -> the round's map writes done (weftd's own timestamps, from
//!     `weft policy list`'s `last_change`),
//! (iii) the patch sent -> the probe's verdict flipped (the first of three
//!     probes in a row with the new verdict).
//! weftd's RSS and CPU come from /proc, steady and during the changes; map
//! bytes from the kernel's accounting of weftd's maps (`bpftool`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use weft_lab::{Lab, LabSpec};

use super::scale_probe::{flip_after, Prober};
use crate::dataplane::Spread;
use crate::report::Machine;

const NS: &str = "scale";
const SERVER_PORT: u16 = 80;
/// How long one change may take to show before the run gives up.
const CHANGE_LIMIT: Duration = Duration::from_secs(20);
/// Quiet time between changes (the probe keeps running).
const SETTLE: Duration = Duration::from_millis(300);
/// The steady-state CPU window.
const STEADY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// The lab's name (at most 16 characters).
    pub name: String,
    pub bin_dir: PathBuf,
    /// Pods, the client and the server included (at least 3).
    pub pods: usize,
    /// NetworkPolicies, the probed one included (at least 1).
    pub policies: usize,
    /// Changes of the probed policy.
    pub changes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MapUse {
    pub name: String,
    /// As weftd counts them (the ipcache and policy maps only).
    pub entries: Option<usize>,
    pub max_entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
    /// The kernel's accounting (`memlock`).
    pub memlock_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub machine: Machine,
    pub pods: usize,
    pub policies: usize,
    pub changes: usize,
    /// /proc/loadavg's 1-minute figure at the start and at the end.
    pub load_start: f64,
    pub load_end: f64,
    /// Pods Running and every policy compiled, seconds from the first apply.
    pub pods_s: f64,
    pub policies_s: f64,
    /// (i), (ii), (iii) per change, ms.
    pub api_to_seen_ms: Spread,
    pub seen_to_written_ms: Spread,
    pub api_to_enforced_ms: Spread,
    /// Of (ii): the compile, and the rest (cut, plan, writes).
    pub compile_ms: Spread,
    pub write_ms: Spread,
    pub map_writes: Spread,
    /// Endpoints each change's round compiled (weftd before the
    /// incremental compile reports 0: it compiled all of them).
    pub recompiled: Spread,
    /// The merge patch's round trip through kubectl proxy.
    pub patch_ms: Spread,
    pub weftd_rss_steady_bytes: u64,
    pub weftd_rss_changes_bytes: u64,
    /// CPU of one core, percent: idle with everything loaded, and over
    /// the changes (the probe's traffic included).
    pub weftd_cpu_steady_pct: f64,
    pub weftd_cpu_changes_pct: f64,
    /// Of weftd's CPU during the changes: its `policy` thread's, seconds.
    pub policy_thread_cpu_changes_s: f64,
    pub identities: usize,
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    /// NetworkPolicy rules (one peer and one port each).
    pub rules: usize,
    pub maps: Vec<MapUse>,
    /// memlock of the policy and ipcache maps over the rules.
    pub map_bytes_per_rule: f64,
    pub seconds: f64,
}

pub fn run(spec: &ScaleSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<ScaleReport> {
    if spec.name.len() > 16 {
        bail!("run name {:?} too long (at most 16 characters)", spec.name);
    }
    if spec.pods < 3 || spec.policies < 1 || spec.changes < 1 {
        bail!("--pods needs at least 3, --policies and --changes at least 1");
    }
    let started = Instant::now();
    let load_start = load_average();
    progress(&format!(
        "a 1-node lab cluster, {} pods, {} NetworkPolicies, {} changes",
        spec.pods, spec.policies, spec.changes
    ));
    let mut lspec = LabSpec::new(&spec.name, &spec.bin_dir);
    lspec.etcd_members = 1;
    lspec.kubernetes = Some(weft_lab::kube::KubeSpec {
        ready_timeout: Duration::from_secs(300),
        ..Default::default()
    });
    let lab = Lab::up(&lspec, &mut |m| {
        if !m.starts_with(' ') {
            progress(&format!("    {m}"))
        }
    })?;
    let mut proxy = None;
    let out = in_lab(&lab, spec, &mut proxy, progress);
    if let Some(mut p) = proxy {
        let _ = p.kill();
        let _ = p.wait();
    }
    if let Err(e) = Lab::down(&spec.name) {
        progress(&format!("    removing lab {}: {e:#}", spec.name));
    }
    let mut r = out?;
    r.load_start = load_start;
    r.load_end = load_average();
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn kubectl(lab: &Lab, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<String> {
    let kube = lab.kube().context("no cluster")?;
    let o = lab.kubectl_as(&kube.admin_kubeconfig.clone(), args, stdin)?;
    if !o.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn apply(lab: &Lab, items: Vec<Value>) -> anyhow::Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl(
        lab,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(list.to_string().as_bytes()),
    )?;
    Ok(())
}

fn pod(name: &str, node: &str, port: Option<u16>) -> Value {
    let ports: Vec<Value> = port
        .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
        .into_iter()
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "weft.test/agnhost", "ports": ports}]}})
}

/// Filler policy `i` of `fillers` filler pods.
fn filler_policy(i: usize, fillers: usize) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{i}"), "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": format!("p{}", i % fillers)}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("p{}", (i + 1) % fillers)}}}],
                "ports": [{"port": 1000 + (i % 60000) as u32, "protocol": "TCP"}]}]}})
}

/// The probed policy's spec: the server lets `from` in on 80.
fn probe_spec(from: &str) -> Value {
    json!({"podSelector": {"matchLabels": {"app": "server"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}}],
            "ports": [{"port": SERVER_PORT, "protocol": "TCP"}]}]})
}

fn in_lab(
    lab: &Lab,
    spec: &ScaleSpec,
    proxy: &mut Option<Child>,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<ScaleReport> {
    let node = lab.node(0)?.clone();
    let weftd = node.weftd_pid.context("weftd's pid")?;
    kubectl(lab, &["create", "namespace", NS], None)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kubectl(lab, &["get", "serviceaccount", "-n", NS, "default"], None).is_err() {
        if Instant::now() > deadline {
            bail!("no default ServiceAccount in {NS} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let t = Instant::now();
    let fillers = spec.pods - 2;
    let mut pods = vec![
        pod("server", &node.name, Some(SERVER_PORT)),
        pod("client", &node.name, None),
    ];
    pods.extend((0..fillers).map(|i| pod(&format!("p{i}"), &node.name, None)));
    for chunk in pods.chunks(200) {
        apply(lab, chunk.to_vec())?;
    }
    let ips = wait_running(lab, spec.pods, progress)?;
    let pods_s = t.elapsed().as_secs_f64();
    progress(&format!("    {} pods Running in {pods_s:.1} s", spec.pods));

    let t = Instant::now();
    let mut policies: Vec<Value> = (0..spec.policies - 1)
        .map(|i| filler_policy(i, fillers))
        .collect();
    policies.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "probe", "namespace": NS}, "spec": probe_spec("client")}),
    );
    for chunk in policies.chunks(250) {
        apply(lab, chunk.to_vec())?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let list = loop {
        let l = policy_list(&node.socket)?;
        if l.policies.len() == spec.policies && l.last_error.is_none() {
            break l;
        }
        if Instant::now() > deadline {
            bail!(
                "weftd compiled {} of {} policies after 600 s ({:?})",
                l.policies.len(),
                spec.policies,
                l.last_error
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let policies_s = t.elapsed().as_secs_f64();
    progress(&format!(
        "    {} policies compiled in {policies_s:.1} s: {} identities, {} ipcache and {} policy entries",
        spec.policies, list.identities, list.ipcache_entries, list.policy_entries
    ));

    // the patch goes through one kubectl proxy on a unix socket in the lab
    let kube = lab.kube().context("no cluster")?;
    let sock = lab.dir.join("scale-proxy.sock");
    let mut cmd = Command::new(kube.kubectl_bin());
    cmd.arg(format!("--kubeconfig={}", kube.admin_kubeconfig.display()))
        .args(["proxy", "--unix-socket"])
        .arg(&sock)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    *proxy = Some(
        weft_datapath::netns::spawn_in(&mut cmd, &lab.fabric_netns)
            .context("starting kubectl proxy")?,
    );
    let path = format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http(&sock, "GET", &path, "").is_ok_and(|(s, _)| s == 200) {
        if Instant::now() > deadline {
            bail!("kubectl proxy does not answer on {}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let cpu0 = cpu_seconds(weftd);
    std::thread::sleep(STEADY);
    let cpu_steady = (cpu_seconds(weftd) - cpu0) / STEADY.as_secs_f64() * 100.0;
    let rss_steady = rss_bytes(weftd);

    let client_ns = weft_lab::kubelet::netns_of(lab, &format!("{NS}/client"))?;
    // a thousand connections a second: the client's TIME_WAIT sockets are
    // reused (a per-namespace setting, of the lab's pod only)
    let o = Command::new("nsenter")
        .arg(format!("--net={}", client_ns.display()))
        .args(["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
        .output()
        .context("running nsenter")?;
    if !o.status.success() {
        bail!(
            "tcp_tw_reuse in the client pod: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let server = std::net::SocketAddr::new(ips["server"], SERVER_PORT);
    let prober = Prober::start(client_ns, server)?;
    // allowed at the start (the probe policy lets the client in)
    let deadline = Instant::now() + Duration::from_secs(60);
    while !prober.last_ok() {
        if Instant::now() > deadline {
            bail!("the client does not reach the server with the probe policy allowing it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (mut seen, mut written, mut enforced) = (Vec::new(), Vec::new(), Vec::new());
    let (mut compile, mut write, mut writes, mut patch, mut recompiled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rss_max = 0;
    let t_changes = Instant::now();
    let cpu1 = cpu_seconds(weftd);
    let policy1 = thread_cpu_seconds(weftd, "policy");
    let mut last_gen = list.last_change.as_ref().map(|c| c.generation);
    for k in 0..spec.changes {
        let allow = k % 2 == 1;
        let body = json!({"spec": probe_spec(if allow { "client" } else { "nobody" })});
        let sent = unix_us(SystemTime::now());
        let t = Instant::now();
        let (status, reply) = http(&sock, "PATCH", &path, &body.to_string())?;
        patch.push(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("patching the probe policy: HTTP {status}: {reply}");
        }
        let deadline = Instant::now() + CHANGE_LIMIT;
        let flipped = loop {
            if let Some(f) = flip_after(&prober.samples(), sent, allow) {
                break f;
            }
            if Instant::now() > deadline {
                bail!("change {k}: the probe's verdict did not flip within {CHANGE_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // weftd's own timestamps of the round the change started
        let change = loop {
            let l = policy_list(&node.socket)?;
            match l.last_change {
                Some(c) if Some(c.generation) != last_gen && c.seen_unix_us >= sent => break c,
                _ if Instant::now() > deadline => {
                    bail!("change {k}: weftd reports no round for it")
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        last_gen = Some(change.generation);
        seen.push((change.seen_unix_us as f64 - sent as f64) / 1e3);
        written.push((change.written_unix_us as f64 - change.seen_unix_us as f64) / 1e3);
        enforced.push((flipped as f64 - sent as f64) / 1e3);
        compile.push(change.compile_us as f64 / 1e3);
        write.push(change.write_us as f64 / 1e3);
        writes.push(change.writes as f64);
        recompiled.push(change.recompiled as f64);
        rss_max = rss_max.max(rss_bytes(weftd));
        progress(&format!(
            "    change {}/{} ({}): seen {:.1} ms after the patch, written {:.1} ms after (compile {:.1} ms of {} endpoints{}, {} writes), enforced {:.1} ms after the patch",
            k + 1,
            spec.changes,
            if allow { "allow" } else { "deny" },
            seen[k],
            written[k],
            compile[k],
            change.recompiled,
            change
                .whole
                .as_deref()
                .map(|w| format!(", whole: {w}"))
                .unwrap_or_default(),
            change.writes,
            enforced[k]
        ));
        std::thread::sleep(SETTLE);
    }
    let cpu_changes = (cpu_seconds(weftd) - cpu1) / t_changes.elapsed().as_secs_f64() * 100.0;
    let policy_cpu = thread_cpu_seconds(weftd, "policy") - policy1;
    prober.stop();

    let list = policy_list(&node.socket)?;
    let entries = BTreeMap::from([
        ("weft_ipcache", list.ipcache_entries),
        ("weft_policy", list.policy_entries),
    ]);
    let maps = map_use(weftd, &entries).unwrap_or_else(|e| {
        progress(&format!("    map sizes not read: {e:#}"));
        Vec::new()
    });
    let rules = spec.policies;
    let memlock: u64 = maps
        .iter()
        .filter(|m| entries.contains_key(m.name.as_str()))
        .map(|m| m.memlock_bytes)
        .sum();
    Ok(ScaleReport {
        machine: Machine::now(),
        pods: spec.pods,
        policies: spec.policies,
        changes: spec.changes,
        load_start: 0.0,
        load_end: 0.0,
        pods_s,
        policies_s,
        api_to_seen_ms: Spread::of(&seen),
        seen_to_written_ms: Spread::of(&written),
        api_to_enforced_ms: Spread::of(&enforced),
        compile_ms: Spread::of(&compile),
        write_ms: Spread::of(&write),
        map_writes: Spread::of(&writes),
        recompiled: Spread::of(&recompiled),
        patch_ms: Spread::of(&patch),
        weftd_rss_steady_bytes: rss_steady,
        weftd_rss_changes_bytes: rss_max,
        weftd_cpu_steady_pct: cpu_steady,
        weftd_cpu_changes_pct: cpu_changes,
        policy_thread_cpu_changes_s: policy_cpu,
        identities: list.identities,
        ipcache_entries: list.ipcache_entries,
        policy_entries: list.policy_entries,
        rules,
        maps,
        map_bytes_per_rule: memlock as f64 / rules as f64,
        seconds: 0.0,
    })
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn policy_list(socket: &Path) -> anyhow::Result<weft_api::PolicyList> {
    let r = weft_api::http::call(
        socket,
        "GET",
        weft_api::paths::POLICY,
        b"",
        Duration::from_secs(30),
    )?;
    if r.status != 200 {
        bail!("weft policy list: HTTP {}", r.status);
    }
    Ok(serde_json::from_slice(&r.body)?)
}

/// One HTTP/1.1 request over a unix socket (kubectl proxy's); the status
/// and the body. A PATCH is a JSON merge patch.
fn http(sock: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let ctype = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status from kubectl proxy")?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

/// Waits until the namespace's `n` pods are Running; their addresses.
/// Polls only the pods not yet Running (a field selector: the API server
/// filters in its cache and sends only those), every 2 s: a full
/// `get pods -o json` each second cost the API server and kubectl most of
/// a 2-CPU machine at 900 pods and slowed the very start it waited on.
fn wait_running(
    lab: &Lab,
    n: usize,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<BTreeMap<String, std::net::IpAddr>> {
    let limit = Duration::from_secs(60 + n as u64);
    let started = Instant::now();
    let mut last = 0;
    loop {
        let waiting = kubectl(
            lab,
            &[
                "get",
                "pods",
                "-n",
                NS,
                "--field-selector=status.phase!=Running",
                "-o",
                "name",
            ],
            None,
        )?
        .lines()
        .count();
        let running = n.saturating_sub(waiting);
        if waiting == 0 {
            break;
        }
        if running / 100 != last / 100 {
            progress(&format!("    {running} of {n} pods Running"));
        }
        last = running;
        if started.elapsed() > limit {
            bail!(
                "{running} of {n} pods Running after {} s (load {:.1}): the lab \
                 kubelet starts pods one by one; try fewer --pods or a quieter machine",
                limit.as_secs(),
                load_average()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let v: Value = serde_json::from_str(&kubectl(
        lab,
        &["get", "pods", "-n", NS, "-o", "json"],
        None,
    )?)?;
    let got: BTreeMap<String, std::net::IpAddr> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                p["status"]["podIP"].as_str()?.parse().ok()?,
            ))
        })
        .collect();
    if got.len() != n {
        bail!("{} of {n} pods Running with an address", got.len());
    }
    Ok(got)
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of `pid`'s threads named `name` (`/proc/PID/task/*/comm`).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            (ticks(11) + ticks(12)) / 100.0
        })
        .sum()
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// weftd's policy maps as the kernel accounts them: the map ids from its
/// fds, the sizes from `bpftool map show` (other labs' maps have the same
/// names; the ids tell them apart).
fn map_use(pid: u32, entries: &BTreeMap<&str, usize>) -> anyhow::Result<Vec<MapUse>> {
    let mut ids = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = std::fs::read_to_string(fd?.path()).unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            ids.insert(id);
        }
    }
    let o = Command::new("bpftool")
        .args(["map", "show", "-j"])
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    let all: Vec<Value> = serde_json::from_slice(&o.stdout)?;
    let mut out: Vec<MapUse> = all
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|i| ids.contains(&i)))
        .filter_map(|m| {
            let name = m["name"].as_str()?;
            weft_datapath::policy::POLICY_MAPS
                .contains(&name)
                .then(|| MapUse {
                    name: name.to_string(),
                    entries: entries.get(name).copied(),
                    max_entries: m["max_entries"].as_u64().unwrap_or(0),
                    key_bytes: m["bytes_key"].as_u64().unwrap_or(0),
                    value_bytes: m["bytes_value"].as_u64().unwrap_or(0),
                    memlock_bytes: m["bytes_memlock"].as_u64().unwrap_or(0),
                })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

pub fn render_table(r: &ScaleReport) -> String {
    let s = |x: &Spread| format!("{:.1} ({:.1}–{:.1})", x.median, x.min, x.max);
    let mut t = format!(
        "{} pods, {} NetworkPolicies, {} changes of one (load {:.1} -> {:.1})\n",
        r.pods, r.policies, r.changes, r.load_start, r.load_end
    );
    t += &format!(
        "patch sent -> weftd saw it:      {} ms\n",
        s(&r.api_to_seen_ms)
    );
    t += &format!(
        "weftd saw it -> maps written:    {} ms\n",
        s(&r.seen_to_written_ms)
    );
    t += &format!(
        "  of which the compile:          {} ms ({} endpoints compiled)\n",
        s(&r.compile_ms),
        s(&r.recompiled)
    );
    t += &format!("  cut, plan and map writes:      {} ms\n", s(&r.write_ms));
    t += &format!(
        "patch sent -> verdict flipped:   {} ms\n",
        s(&r.api_to_enforced_ms)
    );
    t += &format!("the patch's own round trip:      {} ms\n", s(&r.patch_ms));
    t += &format!(
        "weftd RSS {:.1} MiB steady, {:.1} MiB during the changes; CPU {:.1}% steady, {:.1}% during ({:.2} s of it the policy thread's)\n",
        r.weftd_rss_steady_bytes as f64 / 1048576.0,
        r.weftd_rss_changes_bytes as f64 / 1048576.0,
        r.weftd_cpu_steady_pct,
        r.weftd_cpu_changes_pct,
        r.policy_thread_cpu_changes_s
    );
    t += &format!(
        "{} identities, {} ipcache and {} policy entries for {} rules; {:.0} bytes of map (memlock) per rule\n",
        r.identities, r.ipcache_entries, r.policy_entries, r.rules, r.map_bytes_per_rule
    );
    for m in &r.maps {
        t += &format!(
            "  {:<16} {:>7} entries of {:>7}, key {} + value {} bytes, memlock {} bytes\n",
            m.name,
            m.entries.map_or("-".into(), |e| e.to_string()),
            m.max_entries,
            m.key_bytes,
            m.value_bytes,
            m.memlock_bytes
        );
    }
    t
}
