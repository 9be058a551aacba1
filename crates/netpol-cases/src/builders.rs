//! Builders for the cases' policies, in the upstream suite's terms.

use weft_policy::*;

/// `matchLabels` only.
pub fn ml(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::labels(pairs.iter().copied())
}

/// The namespace of this name (the API server's immutable label).
pub fn ns_named(ns: &str) -> LabelSelector {
    ml(&[("kubernetes.io/metadata.name", ns)])
}

/// A policy with no rules and no policyTypes.
pub fn np(ns: &str, name: &str, selector: LabelSelector) -> NetworkPolicy {
    NetworkPolicy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: selector,
        policy_types: None,
        ingress: None,
        egress: None,
        audit: false,
    }
}

/// The upstream suite's SetSpecIngressRules / SetSpecEgressRules: the first
/// call makes the list (possibly empty) and adds the policy type.
pub trait PolicyExt {
    fn ingress_rules(self, rules: Vec<Rule>) -> Self;
    fn egress_rules(self, rules: Vec<Rule>) -> Self;
}

impl PolicyExt for NetworkPolicy {
    fn ingress_rules(mut self, rules: Vec<Rule>) -> Self {
        if self.ingress.is_none() {
            self.ingress = Some(Vec::new());
            self.policy_types
                .get_or_insert_with(Vec::new)
                .push(Direction::Ingress);
        }
        self.ingress.get_or_insert_with(Vec::new).extend(rules);
        self
    }
    fn egress_rules(mut self, rules: Vec<Rule>) -> Self {
        if self.egress.is_none() {
            self.egress = Some(Vec::new());
            self.policy_types
                .get_or_insert_with(Vec::new)
                .push(Direction::Egress);
        }
        self.egress.get_or_insert_with(Vec::new).extend(rules);
        self
    }
}

pub fn rule(peers: Option<Vec<Peer>>, ports: Option<Vec<PolicyPort>>) -> Rule {
    Rule { peers, ports }
}

pub fn from(peers: Vec<Peer>) -> Rule {
    Rule {
        peers: Some(peers),
        ports: None,
    }
}

pub fn pods(sel: LabelSelector) -> Peer {
    Peer {
        pod_selector: Some(sel),
        ..Default::default()
    }
}

pub fn namespaces(sel: LabelSelector) -> Peer {
    Peer {
        namespace_selector: Some(sel),
        ..Default::default()
    }
}

pub fn pods_in(ns: LabelSelector, pod: LabelSelector) -> Peer {
    Peer {
        pod_selector: Some(pod),
        namespace_selector: Some(ns),
        ip_block: None,
    }
}

/// An ipBlock; panics on a malformed CIDR (the cases are fixed text).
pub fn cidr(c: &str, except: &[&str]) -> Peer {
    Peer {
        ip_block: Some(IpBlock {
            cidr: c.parse().expect("a CIDR"),
            except: except.iter().map(|e| e.parse().expect("a CIDR")).collect(),
        }),
        ..Default::default()
    }
}

pub fn port(n: u16, proto: Option<Protocol>) -> PolicyPort {
    PolicyPort {
        protocol: proto,
        port: Some(PortRef::Number(n)),
        end_port: None,
    }
}

pub fn port_range(lo: u16, hi: u16, proto: Option<Protocol>) -> PolicyPort {
    PolicyPort {
        protocol: proto,
        port: Some(PortRef::Number(lo)),
        end_port: Some(hi),
    }
}

pub fn named(name: &str, proto: Option<Protocol>) -> PolicyPort {
    PolicyPort {
        protocol: proto,
        port: Some(PortRef::Name(name.into())),
        end_port: None,
    }
}

pub fn proto_only(proto: Protocol) -> PolicyPort {
    PolicyPort {
        protocol: Some(proto),
        port: None,
        end_port: None,
    }
}
