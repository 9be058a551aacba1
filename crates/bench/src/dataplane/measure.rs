//! The measurements: iperf3 throughput and in-process TCP round trips,
//! pinned to one CPU where that makes runs comparable.

use super::*;

/// Starts `iperf3 -s` bound to `addr` inside `netns` and waits (at most 5 s)
/// until it listens.
pub(super) fn start_iperf_server(
    netns: &Path,
    addr: IpAddr,
    clean: &mut Cleanup,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-B", &addr.to_string(), "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_in(&mut cmd, netns).context("starting iperf3 -s (apt-get install iperf3)")?;
    let pid = child.id();
    clean.servers.push(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    // /proc/<pid>/net/tcp lists the sockets of the server's own namespace
    let port = format!(":{IPERF_PORT:04X} ");
    loop {
        let listening = ["tcp", "tcp6"].iter().any(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .map(|t| {
                    t.lines().skip(1).any(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() > 3
                            && format!("{} ", cols[1]).ends_with(&port)
                            && cols[3] == "0A"
                    })
                })
                .unwrap_or(false)
        });
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("iperf3 -s in {} not listening within 5 s", netns.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One iperf3 test (see [`iperf_once`]); a server still closing the previous
/// test answers "busy" for a moment: retried, at most 10 times.
pub(crate) fn iperf(
    client: &Path,
    addr: IpAddr,
    streams: usize,
    seconds: u32,
) -> anyhow::Result<f64> {
    let mut tries = 0;
    loop {
        match iperf_once(client, addr, streams, seconds) {
            Err(e) if tries < 10 && format!("{e:#}").contains("busy") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            r => return r,
        }
    }
}

/// One iperf3 test from `client` to `addr` with `streams` streams: the
/// receiver's throughput in Gbit/s. Bounded by `timeout`.
pub(super) fn iperf_once(
    client: &Path,
    addr: IpAddr,
    streams: usize,
    seconds: u32,
) -> anyhow::Result<f64> {
    let limit = (seconds + 15).to_string();
    let cpu = pin_cpu();
    let affinity = format!("{cpu},{cpu}");
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-k",
        "2",
        &limit,
        "iperf3",
        "-c",
        &addr.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ])
    // one stream: client and server on one CPU (see pin_cpu); four streams
    // are left to the scheduler, to use every CPU
    .args(if streams == 1 {
        vec!["-A", affinity.as_str()]
    } else {
        vec![]
    })
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = spawn_in(&mut cmd, client)
        .context("starting iperf3 -c")?
        .wait_with_output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {addr} -P {streams} printed no JSON (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = json["error"].as_str() {
        bail!("iperf3 -c {addr} -P {streams}: {e}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// The CPU the 1-stream tests and the round trips are pinned to: client and
/// server on one CPU (the last), so neither waits on a cross-CPU wake-up
/// whose cost depends on where the scheduler happened to put them. On a
/// shared 2-CPU machine, unpinned runs of the same case are bimodal.
pub(crate) fn pin_cpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .saturating_sub(1)
}

/// Pins the calling thread to `cpu` with `taskset -p` on its thread id
/// (this crate has no unsafe code for sched_setaffinity); false when it
/// could not.
pub(crate) fn pin_this_thread(cpu: usize) -> bool {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    let Some(tid) = me.file_name().map(|t| t.to_string_lossy().into_owned()) else {
        return false;
    };
    Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `n` one-byte request/response round trips over one TCP connection from
/// `client` to a listener in `server` on `addr` (after 200 unmeasured ones):
/// (p50, p99) in microseconds.
pub(super) fn rtt(
    client: &Path,
    server: &Path,
    addr: IpAddr,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    const WARMUP: usize = 200;
    let listener: TcpListener = weft_lab::probe::listen_in(server, addr)?;
    let to = listener.local_addr()?;
    let total = n + WARMUP;
    let deadline = Instant::now() + Duration::from_secs(10);
    let cpu = pin_cpu();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_this_thread(cpu);
        listener.set_nonblocking(true)?;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "nobody connected",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 1];
        for _ in 0..total {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(())
    });
    let client_side = run_in(client, move || -> std::io::Result<Vec<Duration>> {
        pin_this_thread(cpu);
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut samples = Vec::with_capacity(n);
        let mut b = [7u8; 1];
        for i in 0..total {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            if i >= WARMUP {
                samples.push(t.elapsed());
            }
        }
        Ok(samples)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    let mut samples = client_side.with_context(|| format!("round trips to {to}"))?;
    served.with_context(|| format!("echo on {to}"))?;
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    if samples.is_empty() {
        bail!("no round trips measured");
    }
    Ok((q(0.5), q(0.99)))
}
