//! Cilium's distillery check, here against the evaluator: eight rules of
//! every kind, and all 256 subsets of them as one policy's ingress and
//! egress, each compiled and compared with the evaluator cell by cell.

mod common;

use common::*;
use weft_policy::Protocol::{Sctp, Tcp, Udp};
use weft_policy::*;

fn eight_rules() -> Vec<Rule> {
    vec![
        from(vec![pods(sel(&[("app", "web")]))]),
        rule(
            Some(vec![namespaces(sel(&[("team", "b")]))]),
            Some(vec![port(80, None)]),
        ),
        rule(None, Some(vec![port_range(8000, 8100, None)])),
        rule(None, Some(vec![named("http", None)])),
        from(vec![
            cidr("192.0.2.0/24", &["192.0.2.128/25"]),
            cidr("198.18.0.0/15", &[]),
        ]),
        rule(None, Some(vec![port(80, Some(Sctp)), port(53, Some(Sctp))])),
        rule(
            Some(vec![pods_in(sel(&[]), sel(&[("app", "cli")]))]),
            Some(vec![proto_only(Udp)]),
        ),
        rule(
            Some(vec![pods_in(
                LabelSelector::all().with("team", Operator::NotIn, &["a"]),
                LabelSelector::all().with("app", Operator::Exists, &[]),
            )]),
            Some(vec![port(5432, None), named("dns", Some(Udp))]),
        ),
    ]
}

#[test]
fn every_subset_of_eight_rules_compiles_to_what_the_evaluator_says() {
    let inv = small_cluster();
    let rules = eight_rules();
    let addrs = [
        X_WEB, X_WEB2, X_DB, Y_WEB, Y_CLI, NODE_1, NODE_2, WORLD_1, WORLD_130,
    ];
    let probes = [
        (Tcp, 80),
        (Tcp, 8080),
        (Tcp, 8100),
        (Tcp, 8101),
        (Tcp, 5432),
        (Udp, 53),
        (Udp, 80),
        (Sctp, 80),
    ];
    let mut allowed_somewhere = [0usize; 8];
    for mask in 0u32..256 {
        let subset: Vec<Rule> = (0..8)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| rules[i].clone())
            .collect();
        let mut p = np("x", "subset", sel(&[("app", "web")]));
        p.policy_types = Some(vec![Direction::Ingress, Direction::Egress]);
        p.ingress = Some(subset.clone());
        p.egress = Some(subset);
        let c = Checked::new(&[p], &inv);
        for src in addrs {
            for dst in addrs {
                for (proto, port) in probes {
                    let v = c.verdict(&Flow {
                        src: ip(src),
                        dst: ip(dst),
                        proto,
                        port,
                    });
                    for d in [&v.ingress, &v.egress] {
                        if let DirectionVerdict::Allowed(AllowedBy::Rule(r)) = d {
                            allowed_somewhere[(0..8)
                                .filter(|i| mask & (1 << i) != 0)
                                .nth(r.index)
                                .unwrap()] += 1;
                        }
                    }
                }
            }
        }
    }
    // Every one of the eight rules decided some cells.
    assert!(
        allowed_somewhere.iter().all(|n| *n > 0),
        "{allowed_somewhere:?}"
    );
}
