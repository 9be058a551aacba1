//! Measuring: BPF map memory, iperf3, round trips.

use super::*;

/// A BPF map this process holds a descriptor of.
pub(super) struct MapFd {
    pub(super) id: u32,
    pub(super) memlock: u64,
}

/// The BPF maps among this process's descriptors (/proc/self/fdinfo).
pub(super) fn map_fds() -> anyhow::Result<Vec<MapFd>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
            if !out.iter().any(|m: &MapFd| m.id == id as u32) {
                out.push(MapFd {
                    id: id as u32,
                    memlock,
                });
            }
        }
    }
    Ok(out)
}

pub(super) fn memlock_of(ids: &BTreeSet<u32>) -> anyhow::Result<u64> {
    Ok(map_fds()?
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(|m| m.memlock)
        .sum())
}

/// Starts `iperf3 -s` on the server's port in `netns`, waits until it
/// listens (at most 5 s).
pub(super) fn start_iperf(netns: &Path, clean: &mut Cleanup) -> anyhow::Result<()> {
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-s",
        "-B",
        &SERVER.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = spawn_in(&mut cmd, netns).context("starting iperf3 -s (apt-get install iperf3)")?;
    let pid = child.id();
    clean.servers.push(child);
    let port = format!(":{IPERF_PORT:04X}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        if tcp.lines().skip(1).any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 3 && c[1].ends_with(&port) && c[3] == "0A"
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("iperf3 -s in {} not listening within 5 s", netns.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Round trips from `client` to the server's `port`: `rr` one-byte echoes
/// over one connection (after 200 unmeasured) and `crr` new connections
/// each carrying one echo. Returns (RR p50, RR p99, CRR p50) in us.
pub(super) fn round_trips(
    client: &Path,
    server: &Path,
    rr: usize,
    crr: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    const WARMUP: usize = 200;
    let to = SocketAddr::new(IpAddr::V4(SERVER), RR_PORT);
    let to_crr = SocketAddr::new(IpAddr::V4(SERVER), CRR_PORT);
    let listeners = [
        weft_lab::probe::listen_on(server, to)?,
        weft_lab::probe::listen_on(server, to_crr)?,
    ];
    let cpu = pin_cpu();
    // blocking accepts: a polling server would spin on the CPU the client
    // is pinned to. A connection whose first byte is STOP ends it (sent from
    // the server's own namespace when the client gave up).
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_this_thread(cpu);
        for (i, l) in listeners.iter().enumerate() {
            let conns = if i == 0 { 1 } else { crr };
            for _ in 0..conns {
                let (mut s, _) = l.accept()?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut b = [0u8; 1];
                let n = if i == 0 { rr + WARMUP } else { 1 };
                for _ in 0..n {
                    s.read_exact(&mut b)?;
                    if b[0] == STOP {
                        return Ok(());
                    }
                    s.write_all(&b)?;
                }
            }
        }
        Ok(())
    });
    let measured = run_in(
        client,
        move || -> std::io::Result<(Vec<Duration>, Vec<Duration>)> {
            pin_this_thread(cpu);
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut b = [7u8; 1];
            let mut one = Vec::with_capacity(rr);
            for i in 0..rr + WARMUP {
                let t = Instant::now();
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                if i >= WARMUP {
                    one.push(t.elapsed());
                }
            }
            drop(s);
            let mut new = Vec::with_capacity(crr);
            for _ in 0..crr {
                let t = Instant::now();
                let mut s = TcpStream::connect_timeout(&to_crr, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                new.push(t.elapsed());
            }
            Ok((one, new))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"));
    if measured.as_ref().map_or(true, |m| m.is_err()) {
        for to in [to, to_crr] {
            let _ = run_in(server, move || -> std::io::Result<()> {
                TcpStream::connect_timeout(&to, Duration::from_secs(1))?.write_all(&[STOP])
            });
        }
    }
    let measured = measured?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    let (mut one, mut new) = measured.context("round trips")?;
    served.context("echo server")?;
    let q = |s: &mut Vec<Duration>, p: f64| {
        s.sort();
        s.get(((s.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(f64::NAN)
    };
    Ok((q(&mut one, 0.5), q(&mut one, 0.99), q(&mut new, 0.5)))
}
