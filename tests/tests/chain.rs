//! weft-cni as the first plugin of a chain with the reference portmap and
//! bandwidth plugins, run the way libcni runs a conflist.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn weft_chains_with_portmap_and_bandwidth_privileged() {
    if !root_or_skip("weft_chains_with_portmap_and_bandwidth_privileged") {
        return;
    }
    let lab = lab("chn", |_| {});
    let ns_name = format!("{}-web", lab.name);
    weft_lab::ip(&["netns", "add", &ns_name]).unwrap();
    weft_lab::ip(&["-n", &ns_name, "link", "set", "lo", "up"]).unwrap();
    let netns = format!("/run/netns/{ns_name}");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "weft-chain",
        "plugins": [
            {"type": "weft-cni", "agentSocket": lab.socket(), "spoolDir": lab.spool_dir()},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    let rc = serde_json::json!({
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 1_000_000, "egressRate": 8_000_000, "egressBurst": 1_000_000}
    });
    let result = lab
        .run_chain("ADD", "web", &netns, "web", &conflist, &rc, None)
        .expect("chain ADD");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(
        ips.len(),
        2,
        "weft's addresses pass through the chain: {result}"
    );
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host_if.starts_with("weft"), "{result}");

    // the host port reaches the pod: from the fabric to the node's address
    let pod_v4: std::net::IpAddr = ips[0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let listener =
        weft_lab::probe::listen_on(&lab_netns(&ns_name), std::net::SocketAddr::new(pod_v4, 80))
            .expect("listen in the pod");
    let node_port = std::net::SocketAddr::new(lab.node_underlay_v4, 18080);
    weft_lab::probe::tcp_roundtrip_to(
        &lab.fabric_netns,
        &listener,
        node_port,
        Duration::from_secs(3),
    )
    .expect("hostPort 18080 on the node reaches the pod's port 80");

    // the bandwidth limit is applied on the host side of the pod's veth
    let node = netns_name(&lab.node_netns);
    let qdisc = ip_tc(&node, &host_if);
    assert!(qdisc.contains("tbf"), "no shaping on {host_if}: {qdisc}");

    // DEL in reverse order removes the mapping and the shaping
    lab.run_chain("DEL", "web", &netns, "web", &conflist, &rc, Some(&result))
        .expect("chain DEL");
    let nat = std::process::Command::new("ip")
        .args(["netns", "exec", &node, "iptables-save", "-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(!nat.contains("18080"), "port mapping left behind: {nat}");
    assert!(
        eventually(Duration::from_secs(5), || !ip_tc(&node, &host_if)
            .contains("tbf")),
        "shaping left behind"
    );
    assert!(endpoints(&lab).is_empty());
}

fn lab_netns(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/run/netns").join(name)
}

fn ip_tc(netns: &str, dev: &str) -> String {
    std::process::Command::new("tc")
        .args(["-n", netns, "qdisc", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
