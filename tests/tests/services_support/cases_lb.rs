//! A LoadBalancer Service's ingress IP, from pods, from a node and from
//! outside the cluster. The lab has no cloud load balancer: the test writes
//! `status.loadBalancer.ingress` itself, as a cloud controller (or MetalLB)
//! would, and routes the address to node 0 on the fabric client (lab host
//! 2, in no lab cgroup), as an external load balancer forwarding to a node
//! does.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use weft_lab::probe::{Outcome, Transport};

use super::cases::{node, CLIENT};
use super::{within, Cluster, NS, WAIT};

/// In the lab's 198.18.0.0/15, on no node.
const INGRESS_IP: &str = "198.19.250.20";

/// A host route on one lab node's netns, removed when dropped (also when
/// the case fails).
struct Route {
    netns: PathBuf,
    dst: String,
}

impl Route {
    fn add(netns: PathBuf, dst: &str, via: IpAddr) -> Route {
        let r = Route {
            netns,
            dst: format!("{dst}/32"),
        };
        r.ip(&["route", "replace", &r.dst, "via", &via.to_string()]);
        r
    }

    fn ip(&self, args: &[&str]) -> bool {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        let dst = self.dst.clone();
        self.ip(&["route", "del", &dst]);
    }
}

/// The ingress IP answers once the Service's status names it: the
/// frontends come from `status.loadBalancer.ingress[].ip`.
pub fn load_balancer_ingress_ip(c: &Cluster) {
    c.case("LoadBalancer ingress IP from pods, a node and outside");
    c.service("lb", json!({"app": "web"}), json!({"type": "LoadBalancer"}));
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": INGRESS_IP}]}}});
    c.kubectl(&[
        "patch",
        "-n",
        NS,
        "service",
        "lb",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let all = ["web-0", "web-1", "web-2"];
    c.wait_backends(CLIENT, INGRESS_IP, 80, "tcp", &all);
    c.wait_backends(&node(c, 1), INGRESS_IP, 80, "tcp", &all);
    let outside = c.lab.nodes()[2].netns.clone();
    let _route = Route::add(outside, INGRESS_IP, c.node_ip(0));
    let to = SocketAddr::new(INGRESS_IP.parse().expect("an address"), 80);
    within(WAIT, "the ingress IP answers from outside", || {
        match c.ask_outside(2, to, Transport::Tcp, "hostname") {
            Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(()),
            _ => None,
        }
    });
}
