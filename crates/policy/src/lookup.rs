//! Reading the compiled state the way the eBPF program will: endpoint map,
//! ipcache LPM, then the endpoint's policy LPM for the peer's identity and
//! for [`Identity::ANY`]. Also `explain`, which says which entry decided.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::{Compiled, EndpointPolicy, EndpointRef};
use crate::identity::{Identity, IdentityKey};
use crate::mapkey::PolicyKey;
use crate::model::{Direction, Flow, Protocol};
use crate::verdict::{AllowedBy, DirectionVerdict, Verdict};

impl EndpointPolicy {
    /// One LPM lookup: the most specific entry for this identity. `proto`
    /// is the IP protocol number, any of them, as the program sees it (ICMP
    /// only ever meets all-protocol entries).
    pub fn lpm(
        &self,
        identity: Identity,
        dir: Direction,
        proto: u8,
        port: u16,
    ) -> Option<(PolicyKey, &AllowedBy)> {
        PolicyKey::lookup_chain(identity, dir, proto, port)
            .find_map(|k| self.entries.get(&k).map(|v| (k, v)))
    }

    /// The direction's verdict for a peer of `identity`, and the entry hit
    /// (`proto` an IP protocol number, `port` 0 for protocols without): the
    /// peer's identity first, identity ANY only on a miss (as the program
    /// does); a hit decides, a miss is the isolation's default deny or, not
    /// isolated, the default allow.
    pub fn decide(
        &self,
        dir: Direction,
        identity: Identity,
        proto: u8,
        port: u16,
    ) -> (DirectionVerdict, Option<PolicyKey>) {
        let hit = self
            .lpm(identity, dir, proto, port)
            .or_else(|| self.lpm(Identity::ANY, dir, proto, port));
        match (hit, self.isolated_by(dir)) {
            (Some((key, by)), _) => (by.verdict(), Some(key)),
            (None, Some(isolated_by)) => (DirectionVerdict::Denied(isolated_by.clone()), None),
            (None, None) => (DirectionVerdict::NotIsolated, None),
        }
    }
}

/// How one end of a flow was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub endpoint: EndpointRef,
    /// The peer's address as this endpoint's node sees it.
    pub peer_identity: Identity,
    pub peer: Option<IdentityKey>,
    /// The policy map entry that allowed, if one did.
    pub entry: Option<PolicyKey>,
    pub verdict: DirectionVerdict,
}

/// The answer of `weft policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub flow: Flow,
    pub verdict: Verdict,
    pub egress: Option<Step>,
    pub ingress: Option<Step>,
}

impl Compiled {
    /// The node-local ipcache lookup: longest prefix, miss = world (the
    /// prefix lengths probed longest first, as an LPM trie answers).
    pub fn identity_of(&self, node: &str, addr: IpAddr) -> Identity {
        let Some(cache) = self.ipcache.get(node) else {
            return Identity::WORLD;
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max)
            .rev()
            .find_map(|len| {
                let net = IpNet::new(addr, len)
                    .expect("length within the family")
                    .trunc();
                cache.get(&net).copied()
            })
            .unwrap_or(Identity::WORLD)
    }

    /// One end's decision: the endpoint, the peer's identity as its node
    /// sees it, the verdict and the entry hit. `None`: not an endpoint.
    fn decide_at(
        &self,
        dir: Direction,
        own: IpAddr,
        peer: IpAddr,
        flow: &Flow,
    ) -> Option<(&EndpointRef, Identity, DirectionVerdict, Option<PolicyKey>)> {
        let endpoint = self.addresses.get(&own)?;
        let node = self.nodes.get(endpoint).map(String::as_str).unwrap_or("");
        let policy = self.endpoints.get(endpoint)?;
        let peer_identity = self.identity_of(node, peer);
        let (verdict, entry) = policy.decide(dir, peer_identity, flow.proto.number(), flow.port);
        Some((endpoint, peer_identity, verdict, entry))
    }

    fn step(&self, dir: Direction, own: IpAddr, peer: IpAddr, flow: &Flow) -> Option<Step> {
        let (endpoint, peer_identity, verdict, entry) = self.decide_at(dir, own, peer, flow)?;
        Some(Step {
            endpoint: endpoint.clone(),
            peer_identity,
            peer: self.identities.get(&peer_identity).cloned(),
            entry,
            verdict,
        })
    }

    /// The verdict the data path reaches for `flow`.
    pub fn check(&self, flow: &Flow) -> Verdict {
        let at = |dir, own, peer| {
            self.decide_at(dir, own, peer, flow)
                .map_or(DirectionVerdict::NotApplicable, |d| d.2)
        };
        Verdict::new(
            at(Direction::Egress, flow.src, flow.dst),
            at(Direction::Ingress, flow.dst, flow.src),
        )
    }

    /// The verdict with the entries and identities that led to it.
    pub fn explain(&self, flow: &Flow) -> Explanation {
        let egress = self.step(Direction::Egress, flow.src, flow.dst, flow);
        let ingress = self.step(Direction::Ingress, flow.dst, flow.src, flow);
        let v = |s: &Option<Step>| {
            s.as_ref()
                .map_or(DirectionVerdict::NotApplicable, |s| s.verdict.clone())
        };
        Explanation {
            flow: *flow,
            verdict: Verdict::new(v(&egress), v(&ingress)),
            egress,
            ingress,
        }
    }

    /// `weft policy explain --from NS/POD --to NS/POD`: the flow between
    /// the pods' first addresses of one family (IPv4 first).
    pub fn explain_pods(
        &self,
        from: &EndpointRef,
        to: &EndpointRef,
        proto: Protocol,
        port: u16,
    ) -> Option<Explanation> {
        let addrs = |ep: &EndpointRef| -> Vec<IpAddr> {
            self.addresses
                .iter()
                .filter(|(_, e)| *e == ep)
                .map(|(a, _)| *a)
                .collect()
        };
        let (src, dst) = (addrs(from), addrs(to));
        let pair = src.iter().find_map(|s| {
            dst.iter()
                .find(|d| d.is_ipv4() == s.is_ipv4())
                .map(|d| (*s, *d))
        })?;
        Some(self.explain(&Flow {
            src: pair.0,
            dst: pair.1,
            proto,
            port,
        }))
    }

    /// `weft policy show`: an endpoint's entries, one per line.
    pub fn render_endpoint(&self, endpoint: &EndpointRef) -> Option<String> {
        let p = self.endpoints.get(endpoint)?;
        let mut s = String::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            match p.isolated_by(dir) {
                None => s.push_str(&format!("{dir}: not isolated\n")),
                Some(by) => s.push_str(&format!("{dir}: isolated by {by}\n")),
            }
        }
        for (k, by) in &p.entries {
            let who = self
                .identities
                .get(&k.identity)
                .map_or_else(|| "any peer".to_string(), |key| key.to_string());
            s.push_str(&format!("{k} ({who}) -> {by}\n"));
        }
        Some(s)
    }

    /// The ipcache of `node` as (prefix, identity) lines.
    pub fn ipcache_entries(&self, node: &str) -> Vec<(IpNet, Identity)> {
        self.ipcache
            .get(node)
            .map(|c| c.iter().map(|(n, i)| (*n, *i)).collect())
            .unwrap_or_default()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = &self.flow;
        writeln!(
            f,
            "{} -> {} {}/{}: {}",
            fl.src,
            fl.dst,
            fl.proto,
            fl.port,
            self.verdict.summary()
        )?;
        for (dir, step) in [("egress", &self.egress), ("ingress", &self.ingress)] {
            let Some(s) = step else { continue };
            let peer = s
                .peer
                .as_ref()
                .map_or("world".to_string(), |k| k.to_string());
            write!(
                f,
                "  {dir} at {}/{}: peer identity {} ({peer})",
                s.endpoint.namespace, s.endpoint.name, s.peer_identity
            )?;
            match &s.entry {
                Some(k) => writeln!(f, ", entry [{k}]")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}
