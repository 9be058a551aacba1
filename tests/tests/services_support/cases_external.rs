//! The externalTrafficPolicy twins of `cases::fallback_to_terminating_endpoints`:
//! the same KEP-1669 rule for clients outside the cluster, through a
//! NodePort from the fabric (lab host 2, in no lab cgroup).

use std::net::SocketAddr;

use serde_json::{json, Value};
use weft_lab::probe::{Outcome, Transport};

use super::cases::slice_of;
use super::{within, Cluster, WAIT};

/// Waits until the fabric's client reaches `want` at `to`, then checks the
/// next answers all come from it (the other endpoint is not a candidate).
fn only_backend(c: &Cluster, to: SocketAddr, want: &str) {
    let ask = || match c.ask_outside(2, to, Transport::Tcp, "hostname") {
        Outcome::Connected { reply: Some(r) } => Some(r),
        _ => None,
    };
    within(WAIT, &format!("{to} answers from {want}"), || {
        ask().filter(|r| r == want)
    });
    for _ in 0..6 {
        let r = within(WAIT, &format!("{to} answers"), ask);
        assert_eq!(r, want, "{to}: only {want} is a candidate");
    }
}

/// service.go "should fallback to terminating endpoints when there are no
/// ready endpoints with externalTrafficPolicy=Cluster" and "should fallback
/// to local terminating endpoints when there are no ready endpoints with
/// externalTrafficPolicy=Local".
pub fn fallback_to_terminating_endpoints_external(c: &Cluster) {
    c.case("fallback to serving terminating endpoints through a NodePort (ETP Cluster and Local)");
    let (n0, n1) = (c.node_ip(0), c.node_ip(1));
    // Cluster: web-1 (node 1), terminating but serving, is the only
    // endpoint: node 0's NodePort forwards to it
    c.service("fallback-etp", Value::Null, json!({"type": "NodePort"}));
    c.apply(&slice_of(
        c,
        "fallback-etp",
        &[("web-1", 1, false, true, true)],
    ));
    let np = c.node_port("fallback-etp", "tcp");
    only_backend(c, SocketAddr::new(n0, np), "web-1");
    // a ready endpoint appears: the terminating one is left
    c.apply(&slice_of(
        c,
        "fallback-etp",
        &[
            ("web-1", 1, false, true, true),
            ("web-2", 2, true, true, false),
        ],
    ));
    only_backend(c, SocketAddr::new(n0, np), "web-2");
    // Local: node 0's only endpoint (web-0) terminates while web-1 on node
    // 1 is ready; node 0's NodePort falls back to web-0, not to web-1
    c.service(
        "fallback-etp-local",
        Value::Null,
        json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
    );
    c.apply(&slice_of(
        c,
        "fallback-etp-local",
        &[
            ("web-0", 0, false, true, true),
            ("web-1", 1, true, true, false),
        ],
    ));
    let np = c.node_port("fallback-etp-local", "tcp");
    only_backend(c, SocketAddr::new(n0, np), "web-0");
    only_backend(c, SocketAddr::new(n1, np), "web-1");
}
