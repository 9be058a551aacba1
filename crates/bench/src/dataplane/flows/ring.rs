//! The flow ring under load, and weftd's memory with its buffer full.
//!
//! Rate: the programs are loaded with policy enforced (nothing attached,
//! no device: BPF_PROG_TEST_RUN), the server isolated for ingress with
//! nothing allowed, and `weft_to_container` run on SYNs of distinct flows
//! (a new source address or port each), so each is a DROPPED event (drops
//! are reported once a second per flow: distinct flows defeat that on
//! purpose). weftd's reader drains into a 4096-flow buffer meanwhile. Each
//! rate runs for `rate_seconds`, paced in 1 ms steps; the kernel's lost
//! counter says whether the ring overflowed. The run stops at the first
//! loss, or when the driver cannot reach the rate (one CPU's worth of test
//! runs).
//!
//! RSS: a one-node lab whose weftd runs the test-only selftest program
//! (every TCP and UDP packet a pod sends is an event); a bounded burst of
//! datagrams fills the buffer, VmRSS of weftd's pid before and after.

use weft_datapath::bpf::SkbCtx;
use weft_datapath::fastpath::{FastPath, TO_CONTAINER};

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct RateStep {
    /// Events per second asked for.
    pub target: u64,
    /// Events per second the driver made (test runs, each one event).
    pub achieved: f64,
    pub sent: u64,
    /// Read by weftd's reader.
    pub read: u64,
    /// Counted lost by the programs (the ring was full).
    pub lost: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RingReport {
    pub ring_bytes: u64,
    pub steps: Vec<RateStep>,
    /// The highest achieved rate with no event lost.
    pub max_lossless_per_s: f64,
    /// Whether the run ended because the driver could not go faster (the
    /// ring never lost an event): the true limit is higher.
    pub driver_limited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    /// weftd's VmRSS with pods attached and the buffer empty.
    pub before_kib: u64,
    /// After the buffer filled.
    pub full_kib: u64,
    /// After two more bursts through the full buffer.
    pub after_more_kib: u64,
    pub buffer_flows: u64,
    /// What the README states for a full 4096-flow buffer.
    pub stated_kib: u64,
    pub lost: u64,
}

/// An Ethernet + IPv4 + TCP SYN frame to the server.
fn syn_frame() -> Vec<u8> {
    let mut f = vec![0xee; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0x12, 0x34, 0, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&[100, 64, 0, 1]);
    ip.extend_from_slice(&SERVER.octets());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&1024u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    f.extend_from_slice(&tcp);
    f
}

/// The i-th distinct flow: source 100.64.0.0/10 (no pod), then the port.
fn set_flow(frame: &mut [u8], i: u64) {
    let addr = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (i % (1 << 22)) as u32;
    frame[26..30].copy_from_slice(&addr.to_be_bytes());
    let port = 1024 + ((i >> 22) % 60_000) as u16;
    frame[34..36].copy_from_slice(&port.to_be_bytes());
}

/// Drives the ring at `spec.rates` in turn (see the module docs).
pub fn rate(spec: &FlowsSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<RingReport> {
    let pools = vec!["10.244.0.0/16".parse()?];
    let fp = FastPath::load_with_policy(&pools, 0, None, PolicyMode::Enforce)?;
    let mut maps = fp.policy_maps(NODE, RuleIds::new())?;
    maps.replace(&compiled(false)?, &lookup)?;
    let counters = fp
        .flow_source()?
        .context("the programs have no flow ring")?;
    let ring_bytes = counters.ring_bytes();
    let mut for_reader = fp.flow_source()?;
    let provider: SourceProvider = Box::new(move || {
        for_reader
            .take()
            .map(|s| Box::new(s) as Box<dyn FlowSource>)
    });
    let hub = Hub::new(NODE, weft_agent::flows::DEFAULT_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(
        hub.clone(),
        provider,
        Box::new(HashMap::new()),
        Arc::new(OnceLock::new()),
        stop.clone(),
    );
    let result = drive(spec, &fp, &counters, &hub, ring_bytes, progress);
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    drop(fp);
    result
}

fn drive(
    spec: &FlowsSpec,
    fp: &FastPath,
    counters: &weft_datapath::flows::KernelFlowSource,
    hub: &Hub,
    ring_bytes: u64,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<RingReport> {
    let prog = fp.program(TO_CONTAINER)?;
    let ctx = SkbCtx::default();
    let mut frame = syn_frame();
    let r = prog.test_run(&frame, &ctx, 1)?;
    if r.retval != weft_bpf_abi::TCX_DROP {
        bail!(
            "the policy program passed a flow it should drop (verdict {})",
            r.retval
        );
    }
    // the reader has the program's first event in hand before any step
    std::thread::sleep(Duration::from_millis(300));
    let mut next = 1u64;
    let mut steps = Vec::new();
    let mut driver_limited = false;
    let dur = Duration::from_secs_f64(spec.rate_seconds.max(0.2));
    for &target in &spec.rates {
        let lost0 = counters.counters()?.lost;
        let read0 = read_so_far(hub);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed() < dur {
            let due = (target as f64 * t0.elapsed().as_secs_f64()) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            for _ in 0..(due - sent).min(256) {
                set_flow(&mut frame, next);
                next += 1;
                prog.test_run(&frame, &ctx, 1)?;
                sent += 1;
            }
        }
        let achieved = sent as f64 / t0.elapsed().as_secs_f64();
        // the reader's last drains of this step
        let settle = Instant::now();
        while read_so_far(hub) - read0 + (counters.counters()?.lost - lost0) < sent
            && settle.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let step = RateStep {
            target,
            achieved,
            sent,
            read: read_so_far(hub) - read0,
            lost: counters.counters()?.lost - lost0,
        };
        progress(&format!(
            "  {target:>8}/s asked  {achieved:>10.0}/s made  {} read  {} lost",
            step.read, step.lost
        ));
        let lost = step.lost > 0;
        steps.push(step);
        if lost {
            break;
        }
        if achieved < 0.9 * target as f64 {
            driver_limited = true;
            break;
        }
    }
    let max_lossless_per_s = steps
        .iter()
        .filter(|s| s.lost == 0)
        .map(|s| s.achieved)
        .fold(0.0, f64::max);
    Ok(RingReport {
        ring_bytes,
        steps,
        max_lossless_per_s,
        driver_limited,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

const METRICS: &str = "127.0.0.1:9964";

/// One sample of weftd's metrics (in the node netns), by exact name.
fn metric(node: &Path, name: &str) -> anyhow::Result<f64> {
    let text = run_in(node, || -> std::io::Result<String> {
        let mut s =
            TcpStream::connect_timeout(&METRICS.parse().expect("addr"), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        Ok(raw)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))??;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in weftd's metrics"))
}

/// weftd's RSS as its buffer fills (see the module docs).
pub(super) fn rss(
    spec: &FlowsSpec,
    clean: &mut Cleanup,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<RssReport> {
    let name = format!("{}-r", spec.name);
    let mut ls = LabSpec::new(&name, &spec.bin_dir);
    ls.weftd_args.extend(
        [
            "--fastpath=off",
            "--flow-selftest",
            &format!("--metrics-listen={METRICS}"),
        ]
        .map(String::from),
    );
    clean.labs.push(name.clone());
    let mut lab = Lab::up(&ls, &mut |m| progress(&format!("  [{name}] {m}")))?;
    let a = lab.add_pod("a")?;
    let b = lab.add_pod("b")?;
    let to = first_v4(&b.ips)?;
    let pid = lab.nodes()[0].weftd_pid.context("weftd is not running")?;
    let node = lab.node_netns.clone();
    let capacity = metric(&node, "weft_flow_buffer_capacity")? as u64;
    std::thread::sleep(Duration::from_millis(500));
    let before_kib = rss_kib(pid);
    let burst = |n: usize| {
        run_in(&a.netns, move || -> std::io::Result<()> {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..n {
                // the discard port; an unanswered datagram is still an event
                let _ = s.send_to(&[0u8; 32], (to, 9));
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("sending datagrams")
    };
    let fill = |what: &str| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&node, "weft_flow_buffer_flows")? < capacity as f64 {
            if Instant::now() > deadline {
                bail!("weftd's flow buffer not full within 10 s after {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    burst(capacity as usize * 3 / 2)?;
    fill("the first burst")?;
    let full_kib = rss_kib(pid);
    for _ in 0..2 {
        burst(capacity as usize)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    fill("more bursts")?;
    let after_more_kib = rss_kib(pid);
    let lost = metric(&node, "weft_flow_events_lost_total")? as u64;
    progress(&format!(
        "  weftd RSS {before_kib} KiB empty, {full_kib} KiB with {capacity} flows, {after_more_kib} KiB after two more bursts"
    ));
    let _ = lab.del_pod("a");
    let _ = lab.del_pod("b");
    Ok(RssReport {
        before_kib,
        full_kib,
        after_more_kib,
        buffer_flows: capacity,
        stated_kib: 544,
        lost,
    })
}

pub fn render(r: &RingReport, rss: Option<&RssReport>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flow ring ({} KiB), distinct dropped flows through the policy program:",
        r.ring_bytes / 1024
    );
    for st in &r.steps {
        let _ = writeln!(
            s,
            "  {:>8}/s asked {:>10.0}/s made {:>9} read {:>7} lost",
            st.target, st.achieved, st.read, st.lost
        );
    }
    let _ = writeln!(
        s,
        "highest rate with no event lost: {:.0}/s{}",
        r.max_lossless_per_s,
        if r.driver_limited {
            " (the driver's limit: the ring lost nothing)"
        } else {
            ""
        }
    );
    if let Some(m) = rss {
        let _ = writeln!(
            s,
            "weftd RSS: {} KiB empty, {} KiB with {} flows buffered (+{} KiB; stated {} KiB), {} KiB after two more bursts",
            m.before_kib,
            m.full_kib,
            m.buffer_flows,
            m.full_kib.saturating_sub(m.before_kib),
            m.stated_kib,
            m.after_more_kib
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn flows_are_distinct_and_outside_the_pods() {
        let mut f = syn_frame();
        let mut seen = HashSet::new();
        for i in [0u64, 1, 2, (1 << 22) - 1, 1 << 22, (1 << 22) + 1, 5 << 22] {
            set_flow(&mut f, i);
            assert_eq!(f[26], 100);
            assert_eq!(f[27] & 0xc0, 64, "inside 100.64.0.0/10");
            assert!(seen.insert(f[26..36].to_vec()), "flow {i} repeats");
        }
        assert_eq!(f.len(), 14 + 20 + 20);
    }
}
