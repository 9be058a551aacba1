//! NetworkPolicy in the programs under BPF_PROG_TEST_RUN: crafted IPv4 and
//! IPv6 TCP, UDP and ICMP frames through `weft_from_pod`, `weft_to_pod` and
//! `weft_to_container`, with the maps filled through the `PolicyMaps` seam
//! from `weft_policy::compile`; verdicts, the flow events in the ring
//! buffer (rule ids, reasons, directions), conntrack, audit, the per-rule
//! counters, and pinned maps across a reload. Without root they skip.

#[path = "../../policy/tests/common/mod.rs"]
mod common;
#[path = "policy_support/mod.rs"]
mod support;

use common::*;
use support::*;
use weft_bpf_abi::{EpKey, PolicyEp, PolicyKey as RawPolicyKey, PolicyValue, POLICY_CT_INBOUND};
use weft_bpf_abi::{
    FlowEvent, DIR_EGRESS, DIR_INGRESS, DROP_POLICY_DEFAULT, DROP_POLICY_DENIED,
    FLOW_KIND_DECISION, FLOW_KIND_END, TCX_DROP, TCX_NEXT, TC_ACT_REDIRECT, VERDICT_AUDIT,
    VERDICT_DROPPED, VERDICT_FORWARDED,
};
use weft_datapath::bpf::{PrivateBpffs, TypedMap};
use weft_datapath::fastpath::{FastPath, FROM_POD, TO_CONTAINER, TO_POD};
use weft_datapath::policy::{
    default_deny_reason, KernelPolicyMaps, PolicyEndpoint, PolicyMaps, PolicyMode,
};
use weft_policy::*;

const VETH_A: u32 = 9001;
const VETH_B: u32 = 9002;
const VETH_C: u32 = 9003;
const NODE: &str = "node-1";

/// x/a (10.244.0.2, fd00:244::2), x/b (.3, ::3), x/c (.4) on node-1; y/r
/// (10.244.1.2) on node-2.
fn inventory() -> Inventory {
    let mut a = pod("x", "a", &[("app", "a")], "10.244.0.2", NODE);
    a.ips.push(ip("fd00:244::2"));
    let mut b = pod("x", "b", &[("app", "b")], "10.244.0.3", NODE);
    b.ips.push(ip("fd00:244::3"));
    Inventory {
        workloads: vec![
            a,
            b,
            pod("x", "c", &[("app", "c")], "10.244.0.4", NODE),
            pod("y", "r", &[("app", "r")], "10.244.1.2", "node-2"),
        ],
        nodes: vec![node(NODE, "198.18.0.1"), node("node-2", "198.18.0.2")],
    }
}

/// b lets a in on TCP 80 and UDP 53 (rule 0) and c on everything (rule 1);
/// a may send only to b, and takes nothing in.
fn policies(with_a_to_b: bool) -> Vec<NetworkPolicy> {
    let mut b_in = vec![rule(Some(vec![pods(sel(&[("app", "c")]))]), None)];
    if with_a_to_b {
        b_in.insert(
            0,
            rule(
                Some(vec![pods(sel(&[("app", "a")]))]),
                Some(vec![port(80, None), port(53, Some(Protocol::Udp))]),
            ),
        );
    }
    vec![
        np("x", "b-in", sel(&[("app", "b")])).ingress_rules(b_in),
        np("x", "a-out", sel(&[("app", "a")]))
            .egress_rules(vec![rule(Some(vec![pods(sel(&[("app", "b")]))]), None)]),
        np("x", "a-in", sel(&[("app", "a")])).ingress_rules(vec![]),
    ]
}

fn compiled(policies: &[NetworkPolicy], alloc: &mut MemoryAllocator) -> Compiled {
    compile(policies, &inventory(), alloc).unwrap()
}

/// Endpoint ids by name; pods of node-1 only, `audit` for b when asked.
fn lookup(audit_b: bool) -> impl Fn(&EndpointRef) -> Option<PolicyEndpoint> {
    let inv = inventory();
    move |e: &EndpointRef| {
        let w = inv
            .workloads
            .iter()
            .find(|w| w.namespace == e.namespace && w.name == e.name && w.node == NODE)?;
        Some(PolicyEndpoint {
            id: match w.name.as_str() {
                "a" => 1,
                "b" => 2,
                _ => 3,
            },
            addresses: w.ips.clone(),
            audit: audit_b && w.name == "b",
        })
    }
}

fn rig(audit_b: bool) -> (Rig, MemoryAllocator) {
    let pods = [
        (ip("10.244.0.2"), VETH_A),
        (ip("fd00:244::2"), VETH_A),
        (ip("10.244.0.3"), VETH_B),
        (ip("fd00:244::3"), VETH_B),
        (ip("10.244.0.4"), VETH_C),
    ];
    let mut rig = Rig::new(NODE, &pods);
    let mut alloc = MemoryAllocator::new();
    let state = compiled(&policies(true), &mut alloc);
    rig.maps.replace(&state, &lookup(audit_b)).unwrap();
    (rig, alloc)
}

fn policy_ref(name: &str) -> PolicyRef {
    PolicyRef {
        namespace: "x".into(),
        name: name.into(),
    }
}

fn rule_reason(policy: &str, direction: Direction, index: usize) -> AllowedBy {
    AllowedBy::Rule(RuleRef {
        policy: policy_ref(policy),
        direction,
        index,
    })
}

/// What an event's rule id stands for.
fn reason_of(maps: &impl PolicyMaps, ev: &FlowEvent) -> AllowedBy {
    maps.rule_ids()
        .reason(ev.rule_id)
        .unwrap_or_else(|| panic!("rule id {} unknown: {ev:?}", ev.rule_id))
        .clone()
}

/// The one event of `direction` among `evs`.
fn event(evs: &[FlowEvent], direction: u8) -> FlowEvent {
    let of: Vec<_> = evs.iter().filter(|e| e.direction == direction).collect();
    assert_eq!(of.len(), 1, "one event of direction {direction}: {evs:?}");
    *of[0]
}

/// An Admin tier policy over every pod: Pass on TCP 81 (left to the
/// NetworkPolicies), Deny on TCP 82.
fn admin_pass_81_deny_82() -> ClusterNetworkPolicy {
    let everyone = || vec![ClusterPeer::Namespaces(LabelSelector::all())];
    let tcp = |port| {
        vec![ClusterPort::Number {
            protocol: Protocol::Tcp,
            port,
        }]
    };
    ClusterNetworkPolicy {
        name: "admin".into(),
        tier: Tier::Admin,
        priority: 10,
        subject: ClusterSubject::Namespaces(LabelSelector::all()),
        ingress: vec![
            ClusterRule {
                name: String::new(),
                action: ClusterAction::Pass,
                peers: everyone(),
                protocols: tcp(81),
            },
            ClusterRule {
                name: String::new(),
                action: ClusterAction::Deny,
                peers: everyone(),
                protocols: tcp(82),
            },
        ],
        egress: Vec::new(),
    }
}

/// One default deny, one drop reason: b's default deny reached through an
/// Admin Pass (an entry flattened to it) drops as POLICY_DEFAULT, as a
/// miss does; only a Deny rule drops as POLICY_DENIED.
#[test]
fn a_default_deny_is_one_drop_reason_however_reached_privileged() {
    need_root!("policy_run");
    let pods = [(ip("10.244.0.3"), VETH_B)];
    let mut rig = Rig::new(NODE, &pods);
    let mut alloc = MemoryAllocator::new();
    let state = compile_all(
        &policies(true),
        &[admin_pass_81_deny_82()],
        &inventory(),
        &mut alloc,
    )
    .unwrap();
    rig.maps.replace(&state, &lookup(false)).unwrap();
    let deny = default_deny_reason(&policy_ref("b-in"), Direction::Ingress);
    let (r, b) = ("10.244.1.2", "10.244.0.3");
    for (port, sport, reason, by) in [
        // a miss: no entry for r on 80
        (80, 41_000, DROP_POLICY_DEFAULT, deny.clone()),
        // the Pass region: an entry that carries b-in's default deny
        (81, 41_001, DROP_POLICY_DEFAULT, deny.clone()),
        (
            82,
            41_002,
            DROP_POLICY_DENIED,
            AllowedBy::Cluster(ClusterRuleRef {
                tier: Tier::Admin,
                priority: 10,
                name: "admin".into(),
                direction: Direction::Ingress,
                index: 1,
                action: ClusterAction::Deny,
            }),
        ),
    ] {
        let p = Pkt::new(r, b, TCP, sport, port);
        assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_DROP, "port {port}");
        let drop = event(&rig.events(), DIR_INGRESS);
        assert_eq!(
            (drop.verdict, drop.drop_reason),
            (VERDICT_DROPPED, reason as u8),
            "port {port}"
        );
        assert_eq!(reason_of(&rig.maps, &drop), by, "port {port}");
    }
}

#[test]
fn verdicts_rule_ids_and_flow_events_privileged() {
    need_root!("policy_run");
    let (mut rig, _alloc) = rig(false);
    let (a, b, c, r) = ("10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.1.2");

    // allowed both ways: a's egress (a-out rule 0) and b's ingress (b-in
    // rule 0), then redirected into b
    let p = Pkt::new(a, b, TCP, 40_000, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TC_ACT_REDIRECT);
    let evs = rig.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    let (eg, ing) = (event(&evs, DIR_EGRESS), event(&evs, DIR_INGRESS));
    for e in [eg, ing] {
        assert_eq!((e.verdict, e.kind), (VERDICT_FORWARDED, FLOW_KIND_DECISION));
        assert_eq!((e.sport, e.dport), (40_000u16.to_be(), 80u16.to_be()));
    }
    assert_eq!(
        reason_of(&rig.maps, &eg),
        rule_reason("a-out", Direction::Egress, 0)
    );
    assert_eq!(
        reason_of(&rig.maps, &ing),
        rule_reason("b-in", Direction::Ingress, 0)
    );

    // a port b does not open: a's egress allows, b's default deny drops
    let p = Pkt::new(a, b, TCP, 40_001, 81);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TCX_DROP);
    let evs = rig.events();
    let drop = event(&evs, DIR_INGRESS);
    assert_eq!(
        (drop.verdict, drop.drop_reason),
        (VERDICT_DROPPED, DROP_POLICY_DEFAULT as u8)
    );
    assert_eq!(
        reason_of(&rig.maps, &drop),
        default_deny_reason(&policy_ref("b-in"), Direction::Ingress)
    );

    // a pod of another node: dropped before the redirect (weft_to_pod) and
    // on the kernel path (weft_to_container) alike
    let p = Pkt::new(r, b, TCP, 40_002, 80);
    assert_eq!(rig.run(TO_POD, &p, 1), TCX_DROP);
    let p = Pkt::new(r, b, TCP, 40_003, 80);
    assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_DROP);
    let evs = rig.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().all(|e| e.verdict == VERDICT_DROPPED));

    // ICMP: c's rule has no ports (every protocol); a's has TCP 80 / UDP 53
    let p = Pkt::new(c, b, ICMP, 0, 0);
    assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_NEXT);
    let ing = event(&rig.events(), DIR_INGRESS);
    assert_eq!(
        reason_of(&rig.maps, &ing),
        rule_reason("b-in", Direction::Ingress, 1)
    );
    let p = Pkt::new(a, b, ICMP, 0, 0);
    assert_eq!(
        rig.run(FROM_POD, &p, VETH_A),
        TCX_NEXT,
        "a's egress allows; ICMP is the kernel's to route"
    );
    assert_eq!(
        rig.run(TO_CONTAINER, &p, 0),
        TCX_DROP,
        "b's ingress does not"
    );
    rig.events();

    // a's egress allows b only
    let p = Pkt::new(a, r, TCP, 40_004, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TCX_DROP);
    let drop = event(&rig.events(), DIR_EGRESS);
    assert_eq!(
        reason_of(&rig.maps, &drop),
        default_deny_reason(&policy_ref("a-out"), Direction::Egress)
    );

    // IPv6: TCP 80 and UDP 53 in, UDP 54 not
    let (a6, b6) = ("fd00:244::2", "fd00:244::3");
    let p = Pkt::new(a6, b6, TCP, 40_005, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TC_ACT_REDIRECT);
    let p = Pkt::new(a6, b6, UDP, 40_006, 53);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TC_ACT_REDIRECT);
    let p = Pkt::new(a6, b6, UDP, 40_007, 54);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TCX_DROP);
    let p = Pkt::new(a6, b6, ICMPV6, 0, 0);
    assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_DROP);
    let evs = rig.events();
    assert!(
        evs.iter().all(|e| e.family == weft_bpf_abi::AF_INET6),
        "{evs:?}"
    );

    // a later fragment has no ports: it passes (its first fragment was judged)
    let mut p = Pkt::new(r, b, UDP, 40_008, 9);
    p.frag = 0x0010;
    assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_NEXT);

    // per-rule counters: b-in rule 0 decided the v4 and v6 TCP/UDP packets
    let hits = rig.maps.rule_hits().unwrap();
    let mut ids = rig.maps.rule_ids().clone();
    assert_eq!(
        hits[&ids.id(&rule_reason("b-in", Direction::Ingress, 0))],
        3
    );
    let deny = ids.id(&default_deny_reason(
        &policy_ref("b-in"),
        Direction::Ingress,
    ));
    assert_eq!(
        hits[&deny], 6,
        "81/tcp, r twice, ICMP from a, 54/udp, ICMPv6"
    );
}

#[test]
fn replies_pass_by_conntrack_and_a_removed_allow_stops_the_flow_privileged() {
    need_root!("policy_run");
    let (mut rig, mut alloc) = rig(false);
    let (a, b) = ("10.244.0.2", "10.244.0.3");
    let syn = Pkt::new(a, b, TCP, 41_000, 80);
    assert_eq!(rig.run(FROM_POD, &syn, VETH_A), TC_ACT_REDIRECT);
    // a takes nothing in, yet b's answer passes: it is a reply
    let synack = syn.reply(SYN | ACK);
    assert_eq!(rig.run(FROM_POD, &synack, VETH_B), TC_ACT_REDIRECT);
    assert_eq!(
        rig.run(TO_CONTAINER, &synack, 0),
        TCX_NEXT,
        "kernel path too"
    );
    // b opening a connection to a is not
    let p = Pkt::new(b, a, TCP, 80, 41_000).flags(SYN);
    let p = Pkt { sport: 5555, ..p };
    assert_eq!(rig.run(FROM_POD, &p, VETH_B), TCX_DROP);
    // entries: a -> b of a's egress and of b's ingress; b's egress allowed
    // b -> a, but a's ingress dropped it and took b's entry with it
    let ct = rig.maps.conntrack().unwrap();
    assert_eq!(ct.len(), 2, "{ct:?}");
    rig.events();

    // a connection's end: FIN reports it with its counts
    let syn2 = Pkt::new(a, b, TCP, 41_001, 80);
    assert_eq!(rig.run(FROM_POD, &syn2, VETH_A), TC_ACT_REDIRECT);
    assert_eq!(
        rig.run(FROM_POD, &syn2.reply(SYN | ACK), VETH_B),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        rig.run(FROM_POD, &syn2.flags(FIN | ACK), VETH_A),
        TC_ACT_REDIRECT
    );
    let ends: Vec<_> = rig
        .events()
        .into_iter()
        .filter(|e| e.kind == FLOW_KIND_END)
        .collect();
    assert_eq!(ends.len(), 2, "egress and ingress entries end: {ends:?}");
    assert!(ends.iter().all(|e| e.packets == 3), "{ends:?}");
    // RST removes the entries
    assert_eq!(rig.run(FROM_POD, &syn2.flags(RST), VETH_A), TC_ACT_REDIRECT);
    assert_eq!(rig.maps.conntrack().unwrap().len(), 2);

    // the policy loses a -> b: the established flow's next forward packet
    // is dropped (and its entry with it), a new one too
    let old = compiled(&policies(true), &mut alloc);
    let new = compiled(&policies(false), &mut alloc);
    rig.maps.apply(&plan(&old, &new), &lookup(false)).unwrap();
    let ack = syn.flags(ACK);
    assert_eq!(rig.run(FROM_POD, &ack, VETH_A), TCX_DROP);
    assert_eq!(rig.run(TO_CONTAINER, &ack, 0), TCX_DROP, "kernel path too");
    let evs = rig.events();
    assert!(
        evs.iter()
            .all(|e| e.verdict == VERDICT_DROPPED && e.direction == DIR_INGRESS),
        "{evs:?}"
    );
    assert!(
        rig.maps.conntrack().unwrap().is_empty(),
        "b's ingress entry of the flow is gone, and a's egress one with it"
    );
    let p = Pkt::new(a, b, TCP, 41_002, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TCX_DROP);
    // flows still allowed keep going: c -> b
    let p = Pkt::new("10.244.0.4", b, TCP, 41_003, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_C), TC_ACT_REDIRECT);
}

/// The revision stamp: an established connection's forward packets pass on
/// its conntrack entry without a policy lookup while the endpoint's policy
/// is unchanged; after any change the next one is judged again, so a removed
/// allow stops the flow and a kept one lets it go on (stamped anew).
#[test]
fn established_flows_are_trusted_until_the_endpoints_policy_changes_privileged() {
    need_root!("policy_run");
    let (mut rig, mut alloc) = rig(false);
    let (a, b) = ("10.244.0.2", "10.244.0.3");
    let old = compiled(&policies(true), &mut alloc);
    let syn = Pkt::new(a, b, TCP, 45_000, 80);
    assert_eq!(rig.run(FROM_POD, &syn, VETH_A), TC_ACT_REDIRECT);
    let ack = syn.flags(ACK);
    assert_eq!(rig.run(FROM_POD, &ack, VETH_A), TC_ACT_REDIRECT);
    let b_rev = |rig: &Rig| {
        let eps = rig.fp.map("weft_policy_eps").unwrap();
        let eps = TypedMap::<EpKey, PolicyEp>::new(eps).unwrap();
        eps.get(&EpKey::new(ip(b))).unwrap().unwrap().revision
    };
    // b's entry of the flow: inbound, stamped with b's revision
    let b_entry = |rig: &Rig| {
        rig.maps
            .conntrack()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.local[..4] == [10, 244, 0, 3] && k.local_port == 80u16.to_be())
            .map(|(_, v)| v)
    };
    let entry = b_entry(&rig).expect("b's entry");
    assert_eq!(entry.flags & POLICY_CT_INBOUND, POLICY_CT_INBOUND);
    assert_eq!(entry.revision, b_rev(&rig));
    assert_eq!(entry.packets, 2);

    // trusted: with the trie emptied behind weftd's back (no new revision)
    // the connection goes on, while a new one meets the empty trie
    let trie = rig.fp.map("weft_policy").unwrap();
    let trie = TypedMap::<RawPolicyKey, PolicyValue>::new(trie).unwrap();
    let saved: Vec<_> = trie
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| (k, trie.get(&k).unwrap().unwrap()))
        .collect();
    for (k, _) in &saved {
        trie.remove(k).unwrap();
    }
    assert_eq!(rig.run(FROM_POD, &ack, VETH_A), TC_ACT_REDIRECT);
    let p = Pkt::new(a, b, TCP, 45_001, 80);
    assert_eq!(rig.run(FROM_POD, &p, VETH_A), TCX_DROP, "a's egress");
    for (k, v) in &saved {
        trie.insert(k, v).unwrap();
    }
    rig.events();

    // allow kept: a change to b's policy (a new rule for c on UDP 9) gives
    // b a new revision; the flow's next packet is judged again, allowed,
    // and stamped with it
    let mut kept = policies(true);
    kept.push(
        np("x", "b-more", sel(&[("app", "b")])).ingress_rules(vec![rule(
            Some(vec![pods(sel(&[("app", "c")]))]),
            Some(vec![port(9, Some(Protocol::Udp))]),
        )]),
    );
    let kept = compiled(&kept, &mut alloc);
    let before = b_rev(&rig);
    rig.maps.apply(&plan(&old, &kept), &lookup(false)).unwrap();
    assert_ne!(b_rev(&rig), before, "b's policy changed: a new revision");
    assert_eq!(rig.run(FROM_POD, &ack, VETH_A), TC_ACT_REDIRECT);
    assert_eq!(rig.run(FROM_POD, &syn.reply(ACK), VETH_B), TC_ACT_REDIRECT);
    let entry = b_entry(&rig).expect("b's entry kept");
    assert_eq!(entry.revision, b_rev(&rig), "judged again, stamped anew");
    assert_eq!(entry.packets, 5, "one connection throughout");
    assert!(rig.events().is_empty(), "nothing new to report");

    // allow removed: the next forward packet is dropped, the entry goes
    let removed = compiled(&policies(false), &mut alloc);
    rig.maps
        .apply(&plan(&kept, &removed), &lookup(false))
        .unwrap();
    assert_eq!(rig.run(FROM_POD, &ack, VETH_A), TCX_DROP);
    assert!(b_entry(&rig).is_none(), "b's entry of the flow is gone");
    assert_eq!(
        rig.run(FROM_POD, &syn.reply(ACK), VETH_B),
        TCX_DROP,
        "b's answers are no replies any more: b may not open connections to a"
    );
}

/// A pod no policy isolates is not looked up, but its connections are
/// tracked: when a policy then isolates it, the replies of the connections
/// it opened before still pass, and nothing else does.
#[test]
fn an_unisolated_pods_connections_survive_its_isolation_privileged() {
    need_root!("policy_run");
    let (mut rig, mut alloc) = rig(false);
    let (c, r) = ("10.244.0.4", "10.244.1.2");
    let old = compiled(&policies(true), &mut alloc);
    let syn = Pkt::new(c, r, TCP, 46_000, 443);
    assert_eq!(rig.run(FROM_POD, &syn, VETH_C), TCX_NEXT, "to another node");
    let mut isolating = policies(true);
    isolating.push(np("x", "c-in", sel(&[("app", "c")])).ingress_rules(vec![]));
    let new = compiled(&isolating, &mut alloc);
    rig.maps.apply(&plan(&old, &new), &lookup(false)).unwrap();
    assert_eq!(rig.run(TO_CONTAINER, &syn.reply(SYN | ACK), 0), TCX_NEXT);
    let other = Pkt::new(r, c, TCP, 46_001, 443);
    assert_eq!(rig.run(TO_CONTAINER, &other, 0), TCX_DROP);
    let drop = event(&rig.events(), DIR_INGRESS);
    assert_eq!(
        reason_of(&rig.maps, &drop),
        default_deny_reason(&policy_ref("c-in"), Direction::Ingress)
    );
}

/// ICMP errors about a connection the conntrack holds pass as its replies
/// do (port unreachable, path MTU), whoever sends them; others are judged
/// as ICMP.
#[test]
fn icmp_errors_about_known_connections_pass_privileged() {
    need_root!("policy_run");
    let (rig, _alloc) = rig(false);
    let (a, b) = ("10.244.0.2", "10.244.0.3");
    // a asks b on UDP 53; b's port is closed: b answers port unreachable,
    // which a (taking nothing in) must get
    let q = Pkt::new(a, b, UDP, 44_000, 53);
    assert_eq!(rig.run(FROM_POD, &q, VETH_A), TC_ACT_REDIRECT);
    let err = icmp_error(b, &q);
    assert_eq!(
        rig.run_frame(FROM_POD, &err, VETH_B),
        TCX_NEXT,
        "b's egress"
    );
    assert_eq!(
        rig.run_frame(TO_CONTAINER, &err, 0),
        TCX_NEXT,
        "a's ingress"
    );
    // about a flow nobody allowed: judged as ICMP from b, which a refuses
    let stray = icmp_error(b, &Pkt::new(a, b, UDP, 44_001, 54));
    assert_eq!(rig.run_frame(TO_CONTAINER, &stray, 0), TCX_DROP);
    // IPv6: packet too big from a router on the way, about a's connection
    let syn = Pkt::new("fd00:244::2", "fd00:244::3", TCP, 44_002, 80);
    assert_eq!(rig.run(FROM_POD, &syn, VETH_A), TC_ACT_REDIRECT);
    let ptb = icmp_error("fd00:244::99", &syn);
    assert_eq!(rig.run_frame(TO_CONTAINER, &ptb, 0), TCX_NEXT);
    // to b, quoting b's answer to a: about the connection b accepted
    let to_b = icmp_error("fd00:244::99", &syn.reply(SYN | ACK));
    assert_eq!(rig.run_frame(TO_CONTAINER, &to_b, 0), TCX_NEXT);
    let unrelated = icmp_error(
        "fd00:244::99",
        &Pkt::new("fd00:244::2", "fd00:244::3", TCP, 44_003, 80),
    );
    assert_eq!(rig.run_frame(TO_CONTAINER, &unrelated, 0), TCX_DROP);
}

#[test]
fn audit_lets_would_be_drops_pass_and_reports_them_privileged() {
    need_root!("policy_run");
    let (mut rig, _alloc) = rig(true);
    let p = Pkt::new("10.244.1.2", "10.244.0.3", TCP, 42_000, 80);
    assert_eq!(rig.run(TO_CONTAINER, &p, 0), TCX_NEXT);
    let ev = event(&rig.events(), DIR_INGRESS);
    assert_eq!(
        (ev.verdict, ev.drop_reason),
        (VERDICT_AUDIT, DROP_POLICY_DEFAULT as u8)
    );
    // its replies pass as an allowed connection's would
    assert_eq!(rig.maps.conntrack().unwrap().len(), 1);
}

/// A weftd restart: the policy maps are pinned, so programs loaded afresh
/// enforce the previous agent's state before anything is written, and the
/// new agent's `replace` (with fresh rule ids) keeps enforcing and sweeps
/// what is stale.
#[test]
fn pinned_policy_survives_a_reload_privileged() {
    need_root!("policy_run");
    let fs = PrivateBpffs::mount("policy").unwrap();
    let dir = fs.path().join("node-1");
    let pools: Vec<ipnet::IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
    let pods = [(ip("10.244.0.2"), VETH_A), (ip("10.244.0.3"), VETH_B)];
    let load = || {
        let mut fp =
            FastPath::load_with_policy(&pools, 0, Some(&dir), PolicyMode::Enforce).unwrap();
        fp.sync(endpoint_entries(&pods), &Default::default())
            .unwrap();
        fp
    };
    let run = |fp: &FastPath, p: &Pkt, ingress| {
        let ctx = weft_datapath::bpf::SkbCtx {
            ingress_ifindex: ingress,
            ..Default::default()
        };
        fp.program(FROM_POD)
            .unwrap()
            .test_run(&p.frame(), &ctx, 1)
            .unwrap()
            .retval
    };
    let allowed = Pkt::new("10.244.0.2", "10.244.0.3", TCP, 43_000, 80);
    let denied = Pkt::new("10.244.0.2", "10.244.0.3", TCP, 43_001, 81);

    let mut alloc = MemoryAllocator::new();
    let state = compiled(&policies(true), &mut alloc);
    let first = load();
    let mut maps = KernelPolicyMaps::open_pinned(NODE, RuleIds::new(), &dir).unwrap();
    maps.replace(&state, &lookup(false)).unwrap();
    assert_eq!(run(&first, &allowed, VETH_A), TC_ACT_REDIRECT);
    assert_eq!(run(&first, &denied, VETH_A), TCX_DROP);
    drop((first, maps));

    let second = load();
    assert_eq!(run(&second, &denied, VETH_A), TCX_DROP, "before any write");
    let mut fresh = RuleIds::new();
    fresh.id(&rule_reason("unrelated", Direction::Ingress, 9)); // ids shift
    let mut maps = KernelPolicyMaps::open_pinned(NODE, fresh, &dir).unwrap();
    let new = compiled(&policies(false), &mut alloc);
    maps.replace(&new, &lookup(false)).unwrap();
    let p = Pkt::new("10.244.0.2", "10.244.0.3", TCP, 43_002, 80);
    assert_eq!(
        run(&second, &p, VETH_A),
        TCX_DROP,
        "the stale allow was swept"
    );
    drop((second, maps));
    weft_datapath::bpf::pin::remove_dir(&dir).unwrap();
}

/// `weftd --flows off`: the programs decide as before and count every drop,
/// but put nothing in the ring; switched back on, they report again.
#[test]
fn flow_events_off_reports_nothing_but_still_counts_drops_privileged() {
    need_root!("policy_run");
    let (mut rig, _alloc) = rig(false);
    rig.fp.set_flow_events(false).unwrap();
    let counters = || {
        use weft_datapath::flows::FlowSource;
        rig.fp.flow_source().unwrap().unwrap().counters().unwrap()
    };
    let before = counters().drops.policy_default;
    let denied = Pkt::new("10.244.1.2", "10.244.0.3", TCP, 42_100, 80);
    let allowed = Pkt::new("10.244.0.2", "10.244.0.3", TCP, 42_101, 80);
    assert_eq!(rig.run(TO_CONTAINER, &denied, 0), TCX_DROP);
    assert_eq!(rig.run(TO_CONTAINER, &allowed, 0), TCX_NEXT);
    assert_eq!(counters().drops.policy_default, before + 1);
    assert!(rig.events().is_empty(), "no event with flow events off");
    rig.fp.set_flow_events(true).unwrap();
    let again = Pkt::new("10.244.1.2", "10.244.0.3", TCP, 42_102, 80);
    assert_eq!(rig.run(TO_CONTAINER, &again, 0), TCX_DROP);
    let ev = event(&rig.events(), DIR_INGRESS);
    assert_eq!(ev.verdict, VERDICT_DROPPED);
}
