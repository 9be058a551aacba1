//! A stored flow rendered as the API shows it ([`weft_api::Flow`]): codes
//! to names, addresses and ports out of network order, the kernel's
//! monotonic timestamp turned into wall-clock time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_api::{Flow, Peer, Verdict};
use weft_bpf_abi::{
    FlowEvent, DIR_EGRESS, DIR_INGRESS, DROP_NAMES, FLOW_KIND_END, POINT_FROM_POD, POINT_NODEPORT,
    POINT_SOCKET, POINT_TO_POD, VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    VERDICT_TRANSLATED,
};

use super::{Decider, PeerMeta, Stored};

/// The two clocks read together, to turn `bpf_ktime_get_ns()` (monotonic)
/// into Unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub mono_ns: u64,
    pub wall_ns: u64,
}

/// `CLOCK_MONOTONIC` now, in ns: what `bpf_ktime_get_ns()` returns (tests
/// stamp fake events with it).
pub fn mono_now_ns() -> u64 {
    weft_datapath::flows::monotonic_ns()
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono_ns: mono_now_ns(),
            wall_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }

    /// The Unix time of a monotonic timestamp (one from the future, which a
    /// well-behaved program never sends, is taken as now).
    pub fn wall(&self, mono_ns: u64) -> u64 {
        self.wall_ns
            .saturating_sub(self.mono_ns.saturating_sub(mono_ns))
    }
}

pub fn address(family: u8, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        weft_bpf_abi::AF_INET => Some(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).into()),
        weft_bpf_abi::AF_INET6 => Some(Ipv6Addr::from(*raw).into()),
        _ => None,
    }
}

pub fn verdict(code: u8) -> Verdict {
    match code {
        VERDICT_FORWARDED => Verdict::Forwarded,
        VERDICT_DROPPED => Verdict::Dropped,
        VERDICT_AUDIT => Verdict::Audit,
        VERDICT_TRANSLATED => Verdict::Translated,
        _ => Verdict::Unknown,
    }
}

pub fn protocol(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

const TCP_FLAGS: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

pub fn tcp_flags(bits: u8) -> Vec<String> {
    TCP_FLAGS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn point(p: u8) -> &'static str {
    match p {
        POINT_FROM_POD => "FROM_POD",
        POINT_TO_POD => "TO_POD",
        POINT_SOCKET => "SOCKET",
        POINT_NODEPORT => "NODEPORT",
        _ => "UNKNOWN",
    }
}

fn direction(d: u8) -> &'static str {
    match d {
        DIR_INGRESS => "INGRESS",
        DIR_EGRESS => "EGRESS",
        _ => "NONE",
    }
}

/// RFC 3339 in UTC with nanoseconds (`2026-12-03T12:00:00.000000001Z`).
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = unix_ns % 1_000_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn peer(ip: Option<IpAddr>, port: u16, meta: Option<&PeerMeta>) -> Peer {
    Peer {
        ip,
        port,
        namespace: meta.map(|m| m.namespace.clone()),
        pod: meta.map(|m| m.pod.clone()),
        labels: meta.map(|m| m.labels.clone()).unwrap_or_default(),
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// The API's view of one stored flow.
pub fn render(s: &Stored, node: &str) -> Flow {
    let ev: &FlowEvent = &s.ev;
    let ports = has_ports(ev.proto);
    let port = |p: u16| if ports { u16::from_be(p) } else { 0 };
    let v = verdict(ev.verdict);
    let dropped = matches!(v, Verdict::Dropped | Verdict::Audit);
    Flow {
        time: rfc3339(s.wall_ns),
        time_unix_nano: s.wall_ns,
        node: node.to_string(),
        verdict: v,
        drop_reason: dropped.then(|| {
            DROP_NAMES
                .get(usize::from(ev.drop_reason))
                .map(|n| n.to_ascii_uppercase())
                .unwrap_or_else(|| format!("DROP_{}", ev.drop_reason))
        }),
        kind: if ev.kind == FLOW_KIND_END {
            "END"
        } else {
            "DECISION"
        }
        .into(),
        ip_version: if ev.family == weft_bpf_abi::AF_INET6 {
            6
        } else {
            4
        },
        protocol: protocol(ev.proto),
        source: peer(
            address(ev.family, &ev.src),
            port(ev.sport),
            s.src.as_deref(),
        ),
        destination: peer(
            address(ev.family, &ev.dst),
            port(ev.dport),
            s.dst.as_deref(),
        ),
        tcp_flags: if ev.proto == 6 {
            tcp_flags(ev.tcp_flags)
        } else {
            Vec::new()
        },
        traffic_direction: direction(ev.direction).into(),
        observation_point: point(ev.point).into(),
        ifindex: ev.ifindex,
        rule_id: ev.rule_id,
        policy: match s.policy.as_deref() {
            Some(Decider::Policy(p)) => Some(p.clone()),
            _ => None,
        },
        translated_to: (v == Verdict::Translated)
            .then(|| peer(address(ev.family, &ev.xlat_dst), port(ev.xlat_dport), None)),
        service: match s.policy.as_deref() {
            Some(Decider::Service(r)) => Some(r.clone()),
            _ => None,
        },
        packets: ev.packets,
        bytes: ev.bytes,
    }
}
