//! The peers' rules (Calico-style iptables, an nftables set) and installing them.

use super::*;

/// The filter table Calico's iptables data plane (felix) renders for these
/// two workloads, ipset-free: `cali-FORWARD` from FORWARD clears the mark
/// bits and dispatches by interface (`cali-from-wl-dispatch`,
/// `cali-to-wl-dispatch`, goto per endpoint); each endpoint chain accepts
/// conntrack RELATED,ESTABLISHED first and drops INVALID, clears the accept
/// mark, then jumps to each policy chain `cali-pi-<policy>` in order while
/// no policy has passed the packet (mark 0x20000 clear), returning as soon
/// as one set the accept mark 0x10000, and drops at the end ("Drop if no
/// policies passed packet"). A policy chain has one rule per peer (felix
/// would match an ipset of the selector's members) setting the accept mark,
/// then returns on it. The client's endpoint has no policy: its profile
/// accepts. Packets that come back with the accept mark are accepted at
/// the end of `cali-FORWARD`.
pub fn calico_rules(n: usize, host_c: &str, host_s: &str) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let chains = [
        "cali-FORWARD".to_string(),
        "cali-from-wl-dispatch".into(),
        "cali-to-wl-dispatch".into(),
        format!("cali-fw-{host_c}"),
        format!("cali-fw-{host_s}"),
        format!("cali-tw-{host_c}"),
        format!("cali-tw-{host_s}"),
        "cali-pri-kns.bench".into(),
    ];
    for c in &chains {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    let names: Vec<String> = (0..=n)
        .map(|i| {
            if i < n {
                format!("cali-pi-_p{i:05}")
            } else {
                "cali-pi-_zz-allow-client".into()
            }
        })
        .collect();
    for c in &names {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    s.push_str(
        "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n\
         -A cali-FORWARD -j MARK --set-xmark 0x0/0xe0000\n\
         -A cali-FORWARD -i cali+ -j cali-from-wl-dispatch\n\
         -A cali-FORWARD -o cali+ -j cali-to-wl-dispatch\n\
         -A cali-FORWARD -m mark --mark 0x10000/0x10000 -m comment --comment \"Policy explicitly accepted packet.\" -j ACCEPT\n\
         -A cali-pri-kns.bench -j MARK --set-xmark 0x10000/0x10000\n\
         -A cali-pri-kns.bench -m mark --mark 0x10000/0x10000 -j RETURN\n",
    );
    for (dispatch, dir, flag) in [
        ("cali-from-wl-dispatch", "fw", "-i"),
        ("cali-to-wl-dispatch", "tw", "-o"),
    ] {
        for h in [host_c, host_s] {
            s.push_str(&format!("-A {dispatch} {flag} {h} -g cali-{dir}-{h}\n"));
        }
        s.push_str(&format!(
            "-A {dispatch} -m comment --comment \"Unknown interface\" -j DROP\n"
        ));
    }
    let head = |chain: &str| {
        format!(
            "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A {chain} -m conntrack --ctstate INVALID -j DROP\n\
             -A {chain} -j MARK --set-xmark 0x0/0x10000\n"
        )
    };
    // endpoints without policy: the namespace profile accepts
    for chain in [
        format!("cali-fw-{host_c}"),
        format!("cali-fw-{host_s}"),
        format!("cali-tw-{host_c}"),
    ] {
        s.push_str(&head(&chain));
        s.push_str(&format!(
            "-A {chain} -j cali-pri-kns.bench\n-A {chain} -m mark --mark 0x10000/0x10000 -j RETURN\n-A {chain} -j DROP\n"
        ));
    }
    let tw = format!("cali-tw-{host_s}");
    s.push_str(&head(&tw));
    s.push_str(&format!(
        "-A {tw} -m comment --comment \"Start of policies\" -j MARK --set-xmark 0x0/0x20000\n"
    ));
    for c in &names {
        s.push_str(&format!(
            "-A {tw} -m mark --mark 0x0/0x20000 -j {c}\n-A {tw} -m mark --mark 0x10000/0x10000 -j RETURN\n"
        ));
    }
    s.push_str(&format!(
        "-A {tw} -m mark --mark 0x0/0x20000 -m comment --comment \"Drop if no policies passed packet\" -j DROP\n"
    ));
    for (i, c) in names.iter().enumerate() {
        let (peer, ports) = if i < n {
            let (a, p) = decoy(i);
            (a, p.to_string())
        } else {
            (CLIENT, PORTS.map(|p| p.to_string()).join(","))
        };
        s.push_str(&format!(
            "-A {c} -p tcp -s {peer}/32 -m multiport --dports {ports} -j MARK --set-xmark 0x10000/0x10000\n\
             -A {c} -m mark --mark 0x10000/0x10000 -j RETURN\n"
        ));
    }
    s.push_str("COMMIT\n");
    s
}

/// nftables with one set: conntrack first, then every packet to the server
/// looks its (source, port) up in a hash set, whatever its size.
pub fn nft_set_rules(n: usize, host_s: &str) -> String {
    let mut elems: Vec<String> = (0..n)
        .map(|i| {
            let (a, p) = decoy(i);
            format!("{a} . {p}")
        })
        .collect();
    elems.extend(PORTS.iter().map(|p| format!("{CLIENT} . {p}")));
    format!(
        "table inet weftbench {{}}\ndelete table inet weftbench\n\
         table inet weftbench {{\n\
         \tset allowed {{ type ipv4_addr . inet_service; elements = {{ {} }} }}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\t\tct state invalid drop\n\
         \t\toifname \"{host_s}\" jump to_server\n\t}}\n\
         \tchain to_server {{ ip saddr . tcp dport @allowed accept\n\t\tdrop\n\t}}\n}}\n",
        elems.join(", ")
    )
}

/// Feeds `input` to `prog` run inside netns `ns`.
pub(super) fn feed(ns: &str, prog: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {prog} (apt-get install iptables nftables)"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{prog} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs `n` rules for `case`; returns the seconds it took.
pub(super) fn install(case: &mut Case, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let node = case.node.clone().unwrap_or_default();
    match case.enforcer {
        Enforcer::None => return Ok(0.0),
        Enforcer::Weft => {
            let state = policies(n)?;
            let compiled = t.elapsed().as_secs_f64();
            let writes = case
                .maps
                .as_mut()
                .context("weft case without maps")?
                .replace(&state, &lookup)?;
            case.note = format!(
                "compile {compiled:.2} s, {writes} map writes {:.2} s",
                t.elapsed().as_secs_f64() - compiled
            );
        }
        Enforcer::Iptables(bin) => feed(
            &node,
            &format!("{bin}-restore"),
            &[],
            &calico_rules(n, &case.host_c, &case.host_s),
        )?,
        Enforcer::NftSets => feed(&node, "nft", &["-f", "-"], &nft_set_rules(n, &case.host_s))?,
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Proves the rules are live: the allowed port answers, and for a case
/// that enforces, a port no rule allows does not (a listener is there).
pub(super) fn check_enforced(case: &Case) -> anyhow::Result<()> {
    let t = Duration::from_millis(500);
    let server = IpAddr::V4(SERVER);
    let allowed = weft_lab::probe::listen_on(&case.server, SocketAddr::new(server, CRR_PORT))?;
    weft_lab::probe::tcp_roundtrip(&case.client, &allowed, Duration::from_secs(3))
        .context("the allowed port does not answer")?;
    drop(allowed);
    let other = weft_lab::probe::tcp_check(&case.client, &case.server, server, t);
    match (case.enforcer, other) {
        (Enforcer::None, Err(e)) => Err(e.context("a port without policy does not answer")),
        (Enforcer::None, Ok(())) | (_, Err(_)) => Ok(()),
        (_, Ok(())) => bail!("a port no rule allows answers: the rules are not enforced"),
    }
}

/// Whether nftables can queue packets to userspace in `case`'s node (the
/// `queue` expression, CONFIG_NFT_QUEUE): kube-network-policies v0.8.0
/// judges every new connection that way, and without it its nftables sync
/// fails ("netlink receive: no such file or directory") and nothing is
/// enforced. The probe table is removed again.
pub(super) fn nft_queue_support(case: &Case) -> anyhow::Result<()> {
    let node = case.node.clone().unwrap_or_default();
    let probe = "table inet weftqprobe {\n chain f {\n  type filter hook forward priority 10; policy accept;\n  ip saddr 192.0.2.1 queue num 100 bypass\n }\n}\n";
    let r = feed(&node, "nft", &["-f", "-"], probe);
    let _ = feed(&node, "nft", &["-f", "-"], "delete table inet weftqprobe\n");
    r.context("nftables has no `queue` (kernel without CONFIG_NFT_QUEUE)")
}
