//! Builders and the two-way checker shared by the test files: every verdict
//! a test looks at is computed by the compiler + lookup *and* by the
//! evaluator, and the two must agree to the attribution.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::*;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn namespace_labels(ns: &str) -> Labels {
    labels(&[("ns", ns), ("kubernetes.io/metadata.name", ns)])
}

pub fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)], addr: &str, node: &str) -> Workload {
    Workload {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(pod_labels),
        namespace_labels: namespace_labels(ns),
        ips: vec![ip(addr)],
        named_ports: BTreeMap::new(),
        host_network: false,
        node: node.into(),
    }
}

pub fn node(name: &str, addr: &str) -> Node {
    Node {
        name: name.into(),
        ips: vec![ip(addr)],
    }
}

// The policies' builders are shared with the lab's e2e port of the
// upstream suite.
#[allow(unused_imports, reason = "not every test file builds policies")]
pub use weft_netpol_cases::builders::*;

/// Compiles and returns the state with its inputs, for many checks.
pub struct Checked {
    pub policies: Vec<NetworkPolicy>,
    pub inventory: Inventory,
    pub compiled: Compiled,
}

impl Checked {
    pub fn new(policies: &[NetworkPolicy], inventory: &Inventory) -> Self {
        let mut alloc = MemoryAllocator::new();
        let compiled =
            compile(policies, inventory, &mut alloc).expect("in-memory allocation cannot fail");
        Checked {
            policies: policies.to_vec(),
            inventory: inventory.clone(),
            compiled,
        }
    }

    /// The verdict of both ways, which must agree exactly.
    pub fn verdict(&self, flow: &Flow) -> Verdict {
        let by_maps = self.compiled.check(flow);
        let by_docs = evaluate(&self.policies, &self.inventory, flow);
        assert_eq!(
            by_maps,
            by_docs,
            "compiled state and evaluator disagree on {flow:?}\n{}",
            self.compiled.explain(flow)
        );
        by_maps
    }

    pub fn allowed(&self, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
        self.verdict(&Flow {
            src: ip(src),
            dst: ip(dst),
            proto,
            port,
        })
        .allowed
    }
}

/// Shorthand: compile and check one flow.
pub fn allowed(
    policies: &[NetworkPolicy],
    inv: &Inventory,
    src: &str,
    dst: &str,
    proto: Protocol,
    port: u16,
) -> bool {
    Checked::new(policies, inv).allowed(src, dst, proto, port)
}

/// A tiny deterministic RNG (splitmix64): the randomized tests are bounded
/// and replayable from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}
pub mod netpol;

/// The small cluster the semantics tables use:
///
/// | pod       | labels  | address      | node   | named ports          |
/// |-----------|---------|--------------|--------|----------------------|
/// | x/web     | app=web | 10.244.0.10  | node-1 | http=8080/tcp        |
/// | x/web2    | app=web | 10.244.0.12  | node-2 | http=80/tcp          |
/// | x/db      | app=db  | 10.244.0.11  | node-2 | pg=5432/tcp          |
/// | y/web     | app=web | 10.244.1.10  | node-1 | http=80/tcp, dns=53/udp |
/// | y/cli     | app=cli | 10.244.1.11  | node-2 |                      |
/// | x/agent   | hostNetwork on node-1 (198.18.0.1)                      |
///
/// Namespaces: x {team=a}, y {team=b}. Nodes: node-1 198.18.0.1, node-2
/// 198.18.0.2. Outside: 192.0.2.1, 192.0.2.130, 203.0.113.5.
pub fn small_cluster() -> Inventory {
    let with_ns = |mut w: Workload, team: &str| {
        w.namespace_labels.insert("team".into(), team.into());
        w
    };
    let mut x_web = pod("x", "web", &[("app", "web")], X_WEB, "node-1");
    x_web
        .named_ports
        .insert("http".into(), (8080, Protocol::Tcp));
    let mut x_web2 = pod("x", "web2", &[("app", "web")], X_WEB2, "node-2");
    x_web2
        .named_ports
        .insert("http".into(), (80, Protocol::Tcp));
    let mut x_db = pod("x", "db", &[("app", "db")], X_DB, "node-2");
    x_db.named_ports.insert("pg".into(), (5432, Protocol::Tcp));
    let mut y_web = pod("y", "web", &[("app", "web")], Y_WEB, "node-1");
    y_web.named_ports.insert("http".into(), (80, Protocol::Tcp));
    y_web.named_ports.insert("dns".into(), (53, Protocol::Udp));
    let y_cli = pod("y", "cli", &[("app", "cli")], Y_CLI, "node-2");
    let mut agent = pod("x", "agent", &[("app", "web")], NODE_1, "node-1");
    agent.host_network = true;
    Inventory {
        workloads: vec![
            with_ns(x_web, "a"),
            with_ns(x_web2, "a"),
            with_ns(x_db, "a"),
            with_ns(y_web, "b"),
            with_ns(y_cli, "b"),
            with_ns(agent, "a"),
        ],
        nodes: vec![node("node-1", NODE_1), node("node-2", NODE_2)],
    }
}

pub const X_WEB: &str = "10.244.0.10";
pub const X_WEB2: &str = "10.244.0.12";
pub const X_DB: &str = "10.244.0.11";
pub const Y_WEB: &str = "10.244.1.10";
pub const Y_CLI: &str = "10.244.1.11";
pub const NODE_1: &str = "198.18.0.1";
pub const NODE_2: &str = "198.18.0.2";
pub const WORLD_1: &str = "192.0.2.1";
pub const WORLD_130: &str = "192.0.2.130";
pub const WORLD_OTHER: &str = "203.0.113.5";

pub fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::labels(pairs.iter().copied())
}
