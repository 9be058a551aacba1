//! One sorted, stable text of the maps (cilium's `DumpLBMaps`), for golden
//! tests and `weft services`. One line per entry, map by map, each in key
//! order (numeric, so slot 10 follows slot 9):
//!
//! ```text
//! BE: ID=1 ADDR=10.244.1.5:8080/TCP STATE=active
//! MAGLEV: ID=1 SCOPE=ext M=251 1=126 2=125
//! REV: ID=1 ADDR=10.96.0.10:80
//! SVC: ID=1 ADDR=10.96.0.10:80/TCP SCOPE=ext SLOT=0 COUNT=2 KIND=ClusterIP FLAGS=affinity AFFINITY=10800
//! SVC: ID=1 ADDR=10.96.0.10:80/TCP SCOPE=ext SLOT=1 BEID=1
//! ```
//!
//! Maglev tables are summarised as slots per backend ID (the full table is
//! pinned by its own golden test). [`dump_desired`] adds the frontends with
//! their Service names and what was skipped.

use std::collections::BTreeMap;

use crate::endpoints::{BackendAddr, BackendState, Verdict};
use crate::frontend::{Scope, Skipped};
use crate::maps::{flags, Desired, LbMaps};

fn scope(s: Scope) -> &'static str {
    match s {
        Scope::External => "ext",
        Scope::Internal => "int",
    }
}

fn flag_names(f: u16) -> String {
    const NAMES: [(u16, &str); 7] = [
        (flags::TWO_SCOPES, "two-scopes"),
        (flags::LOCAL_ONLY, "local"),
        (flags::AFFINITY, "affinity"),
        (flags::MAGLEV, "maglev"),
        (flags::REJECT, "reject"),
        (flags::DROP, "drop"),
        (flags::TERMINATING, "terminating"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join("+")
    }
}

fn state(s: BackendState) -> &'static str {
    match s {
        BackendState::Active => "active",
        BackendState::Terminating => "terminating",
    }
}

pub fn dump_maps(m: &LbMaps) -> String {
    let mut lines = Vec::new();
    for (id, b) in &m.backends {
        lines.push(format!(
            "BE: ID={id} ADDR={} STATE={}",
            b.addr(),
            state(b.state)
        ));
    }
    for (k, t) in &m.maglev {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for id in t {
            *counts.entry(*id).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(id, n)| format!("{id}={n}")).collect();
        lines.push(format!(
            "MAGLEV: ID={} SCOPE={} M={} {}",
            k.service_id,
            scope(k.scope),
            t.len(),
            counts.join(" ")
        ));
    }
    for (id, r) in &m.rev_nat {
        let a = BackendAddr {
            addr: r.addr,
            port: r.port,
            proto: Default::default(),
        };
        let a = a.to_string();
        let a = a.rsplit_once('/').map_or(a.as_str(), |(a, _)| a);
        lines.push(format!("REV: ID={id} ADDR={a}"));
    }
    for (k, v) in &m.services {
        let head = format!(
            "SVC: ID={} ADDR={} SCOPE={} SLOT={}",
            v.rev_nat_id,
            k.frontend(),
            scope(k.scope),
            k.slot
        );
        if k.slot == 0 {
            let mut line = format!(
                "{head} COUNT={} KIND={:?} FLAGS={}",
                v.count,
                v.kind,
                flag_names(v.flags)
            );
            if v.affinity_timeout != 0 {
                line.push_str(&format!(" AFFINITY={}", v.affinity_timeout));
            }
            lines.push(line);
        } else {
            lines.push(format!("{head} BEID={}", v.backend_id));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

pub fn dump_desired(d: &Desired) -> String {
    let mut lines = Vec::new();
    for f in &d.frontends {
        let port = if f.port_name.is_empty() {
            String::new()
        } else {
            format!(":{}", f.port_name)
        };
        let backends: Vec<String> = f
            .backends
            .iter()
            .map(|(b, s)| match s {
                BackendState::Active => b.to_string(),
                BackendState::Terminating => format!("{b}(terminating)"),
            })
            .collect();
        let to = match f.verdict {
            Verdict::Forward => backends.join(" "),
            Verdict::Reject => "REJECT".into(),
            Verdict::Drop => "DROP".into(),
        };
        lines.push(format!(
            "FE: {}{port} {:?} {} {} -> {to}",
            f.service,
            f.kind,
            f.addr,
            scope(f.scope)
        ));
    }
    for s in &d.skipped {
        lines.push(match s {
            Skipped::ExternalName(n) => format!("SKIP: {n} ExternalName"),
            Skipped::Headless(n) => format!("SKIP: {n} headless"),
            Skipped::OtherProxy(n) => format!("SKIP: {n} service-proxy-name"),
            Skipped::Conflict {
                addr,
                kept,
                dropped,
            } => format!("SKIP: {dropped} {addr} held by {kept}"),
        });
    }
    lines.sort();
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out + &dump_maps(&d.maps)
}
