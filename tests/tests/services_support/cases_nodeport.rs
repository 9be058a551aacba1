//! service.go "should be able to switch session affinity for NodePort
//! service": the ClusterIP switch (`cases::session_affinity_switched_on_and_off`)
//! through a node port, from a client on the fabric (lab host 2, in no lab
//! cgroup).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::json;
use weft_lab::probe::{Outcome, Transport};

use super::{within, Cluster, PROGRAMMED, WAIT};

/// The backends answering `count` connections from the fabric to `to`.
fn seen_from_outside(c: &Cluster, to: SocketAddr, count: usize) -> BTreeSet<String> {
    (0..count)
        .filter_map(|_| match c.ask_outside(2, to, Transport::Tcp, "hostname") {
            Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(r),
            _ => None,
        })
        .collect()
}

pub fn nodeport_session_affinity_switched(c: &Cluster) {
    c.case("NodePort session affinity switched on and off");
    let spec = |affinity: &str| json!({"type": "NodePort", "sessionAffinity": affinity});
    c.service("switch-np", json!({"app": "web"}), spec("None"));
    let to = SocketAddr::new(c.node_ip(0), c.node_port("switch-np", "tcp"));
    let spread = |what: &str| {
        within(WAIT, what, || {
            (seen_from_outside(c, to, 12).len() == 3).then_some(())
        })
    };
    spread("the NodePort spreads over the three backends");
    c.service("switch-np", json!({"app": "web"}), spec("ClientIP"));
    within(
        PROGRAMMED,
        "ClientIP affinity pins the fabric client",
        || (seen_from_outside(c, to, 10).len() == 1).then_some(()),
    );
    c.service("switch-np", json!({"app": "web"}), spec("None"));
    spread("without affinity the NodePort spreads again");
}
