//! Truth tables for ipBlock: except, pods and nodes inside blocks, blocks
//! of several policies overlapping, the ipcache's pieces, and IPv6.

mod common;

use common::*;
use weft_policy::Protocol::Tcp;
use weft_policy::*;

fn egress_from_web(peers: Vec<Peer>) -> NetworkPolicy {
    np("x", "p", sel(&[("app", "web")])).egress_rules(vec![from(peers)])
}

#[test]
fn ip_block_with_except_truth_table() {
    let inv = small_cluster();
    let dsts = [
        WORLD_1,
        WORLD_130,
        WORLD_OTHER,
        X_DB,
        Y_WEB,
        Y_CLI,
        NODE_1,
        NODE_2,
    ];
    let rows: Vec<(&str, &[&str], [bool; 8])> = vec![
        (
            "192.0.2.0/24",
            &["192.0.2.128/25"],
            [true, false, false, false, false, false, false, false],
        ),
        (
            "192.0.2.0/24",
            &[],
            [true, true, false, false, false, false, false, false],
        ),
        (
            "0.0.0.0/0",
            &["10.0.0.0/8"],
            [true, true, true, false, false, false, true, true],
        ),
        (
            "10.244.1.0/24",
            &[],
            [false, false, false, false, true, true, false, false],
        ),
        (
            "10.244.1.0/24",
            &["10.244.1.10/32"],
            [false, false, false, false, false, true, false, false],
        ),
        (
            "198.18.0.0/15",
            &[],
            [false, false, false, false, false, false, true, true],
        ),
        ("10.0.0.0/8", &["10.244.0.0/16"], [false; 8]),
    ];
    for (block, except, want) in rows {
        let c = Checked::new(&[egress_from_web(vec![cidr(block, except)])], &inv);
        let got: Vec<bool> = dsts.iter().map(|d| c.allowed(X_WEB, d, Tcp, 80)).collect();
        assert_eq!(got, want, "{block} except {except:?} over {dsts:?}");
    }
}

#[test]
fn ip_blocks_of_different_policies_overlap_cleanly() {
    let inv = small_cluster();
    let policies = [
        np("x", "a-wide", sel(&[("app", "web")]))
            .egress_rules(vec![from(vec![cidr("10.0.0.0/8", &["10.244.0.0/16"])])]),
        np("x", "b-one", sel(&[("app", "web")]))
            .egress_rules(vec![from(vec![cidr("10.244.0.11/32", &[])])]),
        np("x", "c-ranges", sel(&[("app", "web")]))
            .egress_rules(vec![from(vec![cidr("10.244.1.0/24", &["10.244.1.8/29"])])]),
    ];
    let c = Checked::new(&policies, &inv);
    let rows = [
        ("10.9.0.1", Some("a-wide")),
        (X_DB, Some("b-one")),
        (X_WEB2, None),
        (Y_WEB, None),
        ("10.244.1.16", Some("c-ranges")),
        ("10.244.1.7", Some("c-ranges")),
    ];
    for (dst, want) in rows {
        let v = c.verdict(&Flow {
            src: ip(X_WEB),
            dst: ip(dst),
            proto: Tcp,
            port: 80,
        });
        let got = match &v.egress {
            DirectionVerdict::Allowed(AllowedBy::Rule(r)) => Some(r.policy.name.as_str()),
            DirectionVerdict::Denied(p) => {
                assert_eq!(p.name, "a-wide", "the smallest isolating policy is named");
                None
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(got, want, "x/web -> {dst}");
    }
}

#[test]
fn the_ipcache_gives_one_identity_per_address_with_its_piece() {
    let inv = small_cluster();
    let c = Checked::new(
        &[egress_from_web(vec![cidr(
            "10.244.0.0/16",
            &["10.244.1.0/24"],
        )])],
        &inv,
    );
    let compiled = &c.compiled;
    // Nodes are HOST on themselves and REMOTE_NODE elsewhere (no piece).
    assert_eq!(compiled.identity_of("node-1", ip(NODE_1)), Identity::HOST);
    assert_eq!(
        compiled.identity_of("node-1", ip(NODE_2)),
        Identity::REMOTE_NODE
    );
    assert_eq!(compiled.identity_of("node-2", ip(NODE_2)), Identity::HOST);
    assert_eq!(compiled.identity_of("node-1", ip(WORLD_1)), Identity::WORLD);
    // A pod's identity carries its piece; both nodes agree on it.
    let web = compiled.identity_of("node-1", ip(X_WEB));
    assert_eq!(web, compiled.identity_of("node-2", ip(X_WEB)));
    let key = &compiled.identities[&web];
    assert_eq!(key.cidr, Some("10.244.0.0/16".parse().unwrap()));
    assert!(matches!(&key.subject, Subject::Pod { namespace, .. } if namespace == "x"));
    assert_eq!(
        compiled.identities[&compiled.identity_of("node-1", ip(Y_WEB))].cidr,
        Some("10.244.1.0/24".parse().unwrap())
    );
    // An address of no pod inside a piece gets the piece's world identity.
    let stray = compiled.identity_of("node-1", ip("10.244.7.7"));
    assert_eq!(
        compiled.identities[&stray],
        IdentityKey {
            subject: Subject::World,
            cidr: Some("10.244.0.0/16".parse().unwrap())
        }
    );
    assert!(c.allowed(X_WEB, "10.244.7.7", Tcp, 80));
    assert!(!c.allowed(X_WEB, "10.244.1.77", Tcp, 80));
}

#[test]
fn ipv6_and_dual_stack() {
    let mut inv = small_cluster();
    inv.workloads[4].ips.push(ip("fd00:10:244:1::11")); // y/cli
    let p = egress_from_web(vec![
        cidr("fd00:10:244::/48", &["fd00:10:244:1::/64"]),
        cidr("2001:db8::/32", &[]),
    ]);
    let c = Checked::new(&[p], &inv);
    assert!(
        !c.allowed(X_WEB, "fd00:10:244:1::11", Tcp, 80),
        "y/cli's v6 address is excepted"
    );
    assert!(c.allowed(X_WEB, "fd00:10:244:2::1", Tcp, 80));
    assert!(c.allowed(X_WEB, "2001:db8::1", Tcp, 80));
    assert!(!c.allowed(X_WEB, Y_CLI, Tcp, 80), "no v4 block names y/cli");
    // Its two addresses are two identities (different pieces).
    let a = c.compiled.identity_of("node-1", ip(Y_CLI));
    let b = c.compiled.identity_of("node-1", ip("fd00:10:244:1::11"));
    assert_ne!(a, b);
    // Selectors name the pod by either address.
    let by_label = np("x", "p", sel(&[("app", "web")]))
        .egress_rules(vec![from(vec![pods_in(sel(&[]), sel(&[("app", "cli")]))])]);
    let c = Checked::new(&[by_label], &inv);
    assert!(c.allowed(X_WEB, "fd00:10:244:1::11", Tcp, 80));
    assert!(c.allowed(X_WEB, Y_CLI, Tcp, 80));
}
