//! The eBPF forwarding fast path (`bpf/from_pod.bpf.c`, `bpf/to_pod.bpf.c`,
//! features in `bpf/lib/*.h`).
//!
//! Two tc programs, attached with tcx so they sit beside any legacy tc
//! qdisc the reference plugins install: `weft_from_pod` at the ingress of
//! every host-side pod veth, `weft_to_pod` at the ingress of the device where
//! other nodes' pod traffic arrives (the VXLAN device, or the underlay in
//! native routing). They carry TCP and UDP between cluster pods past the host
//! stack (`bpf_redirect_peer` into a pod on this node, FIB lookup and redirect
//! towards another node) and hand everything else to the kernel unchanged.
//!
//! Which pods may be fast is weftd's decision, written into the endpoints
//! map: a pod whose host veth carries any qdisc (the bandwidth plugin's
//! shaping) stays on the kernel path, as does a pod younger than the agent's
//! settle time, since chained plugins run after weft's ADD. Flows conntrack
//! already knows (NAT by portmap, kube-proxy or masquerade) stay on the
//! kernel path in the programs themselves.
//!
//! NetworkPolicy (`crate::policy`, `bpf/lib/policy.h`) rides on the same
//! programs, switched by [`PolicyMode`] (the `weft_config` flags): with it on
//! `weft_from_pod` judges the sender's egress, the receiver's ingress is
//! judged before every redirect into a pod, and a third program,
//! `weft_to_container`, is attached at the *egress* of every host veth for
//! what the kernel path delivers. [`PolicyMode::EnforceOnly`] keeps policy
//! with forwarding off (`--fastpath off`): the programs judge and pass.
//!
//! Programs and maps are loaded by each agent start; the new programs
//! replace the previous agent's on every hook once their maps are filled, so
//! traffic never sees an empty map. Maps are fresh, except those the C side
//! pins (`.pinning = WEFT_PIN_BY_NAME`: today the counters) when the agent
//! gives a pin directory: those are re-used while their layout matches.

pub mod maps;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use std::path::Path;

use weft_bpf::{LoadOptions, LpmTrie, PerCpuArray, TypedMap};
use weft_bpf_abi::{CidrKey, Config, EpKey, EpValue, Stats, EP_FAST, STAT_MAX};

use crate::bpf::{self, Loaded, TcxDirection};
use crate::error::DatapathError;
use crate::policy::{KernelPolicyMaps, PolicyMode};

/// The program on host veths (built by build.rs from `bpf/from_pod.bpf.c`).
pub static FROM_POD_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/from_pod.o"));
/// The program on the remote device (from `bpf/to_pod.bpf.c`).
pub static TO_POD_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/to_pod.o"));
/// The ingress policy on host veths' egress (from `bpf/to_container.bpf.c`).
pub static TO_CONTAINER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/to_container.o"));

/// The program on host-side pod veths.
pub const FROM_POD: &str = "weft_from_pod";
/// The program on the device other nodes' traffic arrives on.
pub const TO_POD: &str = "weft_to_pod";
/// The program at the egress of host-side pod veths (policy only).
pub const TO_CONTAINER: &str = "weft_to_container";

/// What [`plan`] needs to know of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastEndpoint {
    pub host_ifname: String,
    pub pod_mac: [u8; 6],
    pub ips: Vec<IpAddr>,
    /// Old enough that chained plugins (bandwidth) have run: see the module
    /// docs. An unsettled endpoint is in the map, but not fast.
    pub settled: bool,
}

/// The counters of the programs, summed over CPUs: one field per value of
/// `enum weft_stat` (generated from `weft/counters.h`).
pub type FastPathStats = Stats;

/// What one [`FastPath::sync`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Endpoint addresses in the map.
    pub addresses: usize,
    /// Of those, how many are fast.
    pub fast: usize,
    /// Host veths kept on the kernel path because they carry a qdisc.
    pub shaped: Vec<String>,
    /// Map entries written or deleted.
    pub changes: usize,
    /// Host veths the program was newly attached to.
    pub attached: usize,
}

/// The map entries that `endpoints` call for, given the node's veths
/// (name → ifindex) and the ifindexes that carry a qdisc. Endpoints without
/// a host veth are left out. Pure: unit-tested without a kernel.
pub fn plan(
    endpoints: &[FastEndpoint],
    veths: &HashMap<String, u32>,
    shaped: &HashSet<u32>,
) -> HashMap<EpKey, EpValue> {
    let mut out = HashMap::new();
    for ep in endpoints {
        let Some(&ifindex) = veths.get(&ep.host_ifname) else {
            continue;
        };
        let fast = ep.settled && !shaped.contains(&ifindex);
        for &ip in &ep.ips {
            out.insert(
                EpKey::new(ip),
                EpValue {
                    host_ifindex: ifindex,
                    pod_mac: ep.pod_mac,
                    flags: if fast { EP_FAST } else { 0 },
                    pad: 0,
                },
            );
        }
    }
    out
}

/// The loaded programs and maps, and what this agent wrote into them.
pub struct FastPath {
    /// `weft_from_pod` and the maps.
    loaded: Loaded,
    /// `weft_to_pod`, sharing `loaded`'s maps.
    to_pod: Loaded,
    /// `weft_to_container`, sharing `loaded`'s maps.
    to_container: Loaded,
    remote_ifindex: u32,
    mode: PolicyMode,
    /// The programs report flow events (`--flows on`, the default).
    flow_events: bool,
    /// Host veth ifindexes that carry this agent's `weft_from_pod`.
    attached: HashSet<u32>,
    /// Host veth ifindexes that carry this agent's `weft_to_container`.
    attached_egress: HashSet<u32>,
    /// What the endpoints map holds (only this agent writes it).
    entries: HashMap<EpKey, EpValue>,
    /// `weft_to_pod` is on the remote device (after the first sync).
    remote_attached: bool,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("remote_ifindex", &self.remote_ifindex)
            .field("attached", &self.attached.len())
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl FastPath {
    /// Loads the programs and maps (pinned ones from `pin_dir` when given)
    /// and fills the pools and the config, policy off. Nothing is attached
    /// yet. Must run in the node netns (ifindexes).
    pub fn load(
        pools: &[IpNet],
        remote_ifindex: u32,
        pin_dir: Option<&Path>,
    ) -> Result<Self, DatapathError> {
        Self::load_with_policy(pools, remote_ifindex, pin_dir, PolicyMode::Off)
    }

    /// [`FastPath::load`] with policy in `mode`.
    pub fn load_with_policy(
        pools: &[IpNet],
        remote_ifindex: u32,
        pin_dir: Option<&Path>,
        mode: PolicyMode,
    ) -> Result<Self, DatapathError> {
        let opts = LoadOptions {
            pin_dir,
            share: None,
        };
        let loaded = bpf::load_with(FROM_POD_OBJECT, &opts)?;
        let to_pod = bpf::load_with(
            TO_POD_OBJECT,
            &LoadOptions {
                share: Some(&loaded),
                ..opts
            },
        )?;
        let to_container = bpf::load_with(
            TO_CONTAINER_OBJECT,
            &LoadOptions {
                share: Some(&loaded),
                ..opts
            },
        )?;
        let config = Config {
            remote_ifindex,
            flags: mode.config_flags(),
        };
        TypedMap::<u32, Config>::new(loaded.map("weft_config")?)?.insert(&0, &config)?;
        let cluster = LpmTrie::<CidrKey, u32>::new(loaded.map("weft_cluster")?)?;
        for pool in pools {
            cluster.insert(&CidrKey::new(pool.trunc()), &1)?;
        }
        Ok(FastPath {
            loaded,
            to_pod,
            to_container,
            remote_ifindex,
            mode,
            flow_events: true,
            attached: HashSet::new(),
            attached_egress: HashSet::new(),
            entries: HashMap::new(),
            remote_attached: false,
        })
    }

    /// A program of either object, by function name ([`FROM_POD`], [`TO_POD`]):
    /// for BPF_PROG_TEST_RUN in tests and for tools.
    pub fn program(&self, name: &str) -> Result<&bpf::Program, DatapathError> {
        Ok(self
            .loaded
            .program(name)
            .or_else(|_| self.to_pod.program(name))
            .or_else(|_| self.to_container.program(name))?)
    }

    /// A map of the programs by name (all objects share one set), e.g. the
    /// flow events' ring buffer `weft_flows`: for tests and tools.
    pub fn map(&self, name: &str) -> Result<&bpf::Map, DatapathError> {
        Ok(self.loaded.map(name)?)
    }

    pub fn policy_mode(&self) -> PolicyMode {
        self.mode
    }

    /// Switches policy (the config flags, at once); the next
    /// [`FastPath::sync`] attaches or detaches `weft_to_container`.
    pub fn set_policy_mode(&mut self, mode: PolicyMode) -> Result<(), DatapathError> {
        self.mode = mode;
        self.write_config()
    }

    /// Switches the policy programs' flow events on or off (at once). Off,
    /// they still count drops (`weft_drops`); only the ring stays quiet.
    pub fn set_flow_events(&mut self, on: bool) -> Result<(), DatapathError> {
        self.flow_events = on;
        self.write_config()
    }

    fn write_config(&self) -> Result<(), DatapathError> {
        let map = TypedMap::<u32, Config>::new(self.loaded.map("weft_config")?)?;
        let mut flags = self.mode.config_flags();
        if !self.flow_events {
            flags |= weft_bpf_abi::CONFIG_NO_FLOWS;
        }
        let config = Config {
            remote_ifindex: self.remote_ifindex,
            flags,
        };
        map.insert(&0, &config)?;
        Ok(())
    }

    /// The seam over this load's policy maps (for `node`, with `rules`).
    pub fn policy_maps(
        &self,
        node: &str,
        rules: weft_policy::RuleIds,
    ) -> Result<KernelPolicyMaps, DatapathError> {
        KernelPolicyMaps::from_loaded(node, rules, &self.loaded)
    }

    /// The object whose maps the other programs share by name: the Service
    /// programs load with it (`ServiceProgramOptions::share`) so their flow
    /// events land in the ring weftd reads ([`FastPath::flow_source`]).
    pub fn shared_maps(&self) -> &Loaded {
        &self.loaded
    }

    /// A reader of the flow events and counters, when a loaded program
    /// reports flows (`bpf/lib/flow.h`); see [`crate::flows`].
    pub fn flow_source(&self) -> Result<Option<crate::flows::KernelFlowSource>, DatapathError> {
        crate::flows::KernelFlowSource::find(&[&self.loaded, &self.to_pod])
    }

    /// The pinned maps and what this load did with each (created, re-used,
    /// replaced); empty without a pin directory.
    pub fn pinned(&self) -> Vec<(String, bpf::PinOutcome)> {
        self.loaded
            .maps()
            .iter()
            .filter_map(|m| Some((m.name().to_string(), m.pin_outcome()?)))
            .collect()
    }

    /// Attaches `weft_to_pod` to the remote device (replacing an older
    /// agent's). A node without one (single node) attaches nothing.
    fn attach_remote(&self) -> Result<(), DatapathError> {
        if self.remote_ifindex == 0 {
            return Ok(());
        }
        if self.mode.forwards() {
            bpf::tcx_attach(
                self.remote_ifindex,
                TcxDirection::Ingress,
                self.to_pod.program(TO_POD)?,
            )?;
        } else {
            // policy alone: other nodes' traffic takes the kernel path into
            // weft_to_container; an earlier agent's forwarding program
            // (with its own, frozen maps) must not stay behind
            bpf::tcx_detach_named(self.remote_ifindex, TcxDirection::Ingress, TO_POD)?;
        }
        Ok(())
    }

    /// Makes the endpoints map exactly `desired`, then attaches
    /// `weft_from_pod` to every veth in `veths` that lacks this agent's
    /// program, and `weft_to_pod` to the remote device on the first call.
    /// Map first: this agent's programs never run against a map that is not
    /// yet filled (an earlier agent's keep running until then). Returns the
    /// map entries changed and the veths newly attached. Must run in the node
    /// netns.
    pub fn sync(
        &mut self,
        desired: HashMap<EpKey, EpValue>,
        veths: &HashSet<u32>,
    ) -> Result<(usize, usize), DatapathError> {
        let map = TypedMap::<EpKey, EpValue>::new(self.loaded.map("weft_endpoints")?)?;
        let mut changes = 0;
        for (k, v) in &desired {
            if self.entries.get(k) != Some(v) {
                map.insert(k, v)?;
                changes += 1;
            }
        }
        for k in self.entries.keys().filter(|k| !desired.contains_key(*k)) {
            map.remove(k)?;
            changes += 1;
        }
        self.entries = desired;
        if !self.remote_attached {
            self.attach_remote()?;
            self.remote_attached = true;
        }

        let prog = self.loaded.program(FROM_POD)?;
        let mut attached = 0;
        // one veth that cannot take the program must not keep the others
        // from it: try them all, report the first failure
        let mut first_error = None;
        for &ifindex in veths {
            if self.attached.contains(&ifindex) {
                continue;
            }
            match bpf::tcx_attach(ifindex, TcxDirection::Ingress, prog) {
                Ok(()) => {
                    self.attached.insert(ifindex);
                    attached += 1;
                }
                // deleted since the dump (a DEL racing this sync): nothing to do
                Err(e) if e.errno() == Some(libc::ENODEV) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.attached.retain(|i| veths.contains(i));
        if let Err(e) = self.sync_egress(veths) {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok((changes, attached)),
        }
    }

    /// `weft_to_container` on the egress of every veth in `veths` while
    /// policy is on; off them (this agent's and earlier ones') when it is
    /// off.
    fn sync_egress(&mut self, veths: &HashSet<u32>) -> Result<(), bpf::BpfError> {
        let mut first_error = None;
        if !self.mode.enforces() {
            for &ifindex in veths {
                match bpf::tcx_detach_named(ifindex, TcxDirection::Egress, TO_CONTAINER) {
                    Ok(_) => {}
                    Err(e) if e.errno() == Some(libc::ENODEV) => {}
                    Err(e) => drop(first_error.get_or_insert(e)),
                }
            }
            self.attached_egress.clear();
        } else {
            let prog = self.to_container.program(TO_CONTAINER)?;
            for &ifindex in veths {
                if self.attached_egress.contains(&ifindex) {
                    continue;
                }
                match bpf::tcx_attach(ifindex, TcxDirection::Egress, prog) {
                    Ok(()) => drop(self.attached_egress.insert(ifindex)),
                    Err(e) if e.errno() == Some(libc::ENODEV) => {}
                    Err(e) => drop(first_error.get_or_insert(e)),
                }
            }
            self.attached_egress.retain(|i| veths.contains(i));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drops the entries of `ips` at once (a DEL), ahead of the next sync.
    pub fn forget(&mut self, ips: &[IpAddr]) -> Result<(), DatapathError> {
        let map = TypedMap::<EpKey, EpValue>::new(self.loaded.map("weft_endpoints")?)?;
        for &ip in ips {
            let k = EpKey::new(ip);
            if self.entries.remove(&k).is_some() {
                map.remove(&k)?;
            }
        }
        Ok(())
    }

    /// The programs' counters, summed over CPUs.
    pub fn stats(&self) -> Result<FastPathStats, DatapathError> {
        let map = PerCpuArray::<u64>::new(self.loaded.map("weft_stats")?)?;
        let mut stats = Stats::default();
        for i in 0..STAT_MAX {
            stats.add(i as usize, map.sum(i)?);
        }
        Ok(stats)
    }
}

/// Takes weft's programs off `ifindexes` (the kernel path takes over).
/// Returns how many were detached. Must run in the node netns.
pub fn detach_all(ifindexes: &[u32]) -> Result<usize, DatapathError> {
    let mut n = 0;
    for &ifindex in ifindexes {
        for name in [FROM_POD, TO_POD] {
            n += bpf::tcx_detach_named(ifindex, TcxDirection::Ingress, name)?;
        }
        n += bpf::tcx_detach_named(ifindex, TcxDirection::Egress, TO_CONTAINER)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, ips: &[&str], settled: bool) -> FastEndpoint {
        FastEndpoint {
            host_ifname: name.into(),
            pod_mac: [2, 0, 0, 0, 0, name.len() as u8],
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            settled,
        }
    }

    /// The second half of the drift check (the first, header against
    /// generated Rust, is weft-bpf-abi's `layout_drift`): every map of the
    /// compiled objects has the key and value sizes of the Rust types
    /// weftd reads and writes it with, and both objects agree.
    #[test]
    fn compiled_maps_match_the_rust_types() {
        use std::mem::size_of;
        use weft_bpf_abi::{
            FlowEvent, PolicyCtKey, PolicyCtValue, PolicyEp, PolicyKey, PolicyValue, DROP_MAX,
        };
        let want = [
            ("weft_endpoints", size_of::<EpKey>(), size_of::<EpValue>()),
            ("weft_cluster", size_of::<CidrKey>(), size_of::<u32>()),
            ("weft_config", size_of::<u32>(), size_of::<Config>()),
            ("weft_stats", size_of::<u32>(), size_of::<u64>()),
            ("weft_flows", 0, 0),
            ("weft_flow_limit", 40, size_of::<u64>()),
            ("weft_drops", size_of::<u32>(), size_of::<u64>()),
            ("weft_flow_lost", size_of::<u32>(), size_of::<u64>()),
            ("weft_ipcache", size_of::<CidrKey>(), size_of::<u32>()),
            (
                "weft_policy",
                size_of::<PolicyKey>(),
                size_of::<PolicyValue>(),
            ),
            ("weft_policy_eps", size_of::<EpKey>(), size_of::<PolicyEp>()),
            (
                "weft_policy_ct",
                size_of::<PolicyCtKey>(),
                size_of::<PolicyCtValue>(),
            ),
            ("weft_rule_hits", size_of::<u32>(), size_of::<u64>()),
            (
                "weft_policy_scratch",
                size_of::<u32>(),
                size_of::<FlowEvent>(),
            ),
        ];
        for obj in [FROM_POD_OBJECT, TO_POD_OBJECT, TO_CONTAINER_OBJECT] {
            let parsed = bpf::parse_object(obj).unwrap();
            let defs: HashMap<&str, _> = parsed.map_defs().collect();
            for (name, key, value) in want {
                let d = defs[name];
                assert_eq!(
                    (d.key_size as usize, d.value_size as usize),
                    (key, value),
                    "{name}"
                );
            }
            assert_eq!(defs["weft_stats"].max_entries, STAT_MAX);
            assert_eq!(defs["weft_drops"].max_entries, DROP_MAX);
            assert_eq!(defs.len(), want.len(), "a map without a Rust type here");
        }
    }

    #[test]
    fn plan_marks_settled_unshaped_endpoints_fast() {
        let eps = [
            ep("weft1", &["10.0.0.1", "fd00::1"], true),
            ep("weft22", &["10.0.0.2"], true),
            ep("weft333", &["10.0.0.3"], false),
            ep("gone", &["10.0.0.4"], true),
        ];
        let veths = HashMap::from([
            ("weft1".to_string(), 11),
            ("weft22".to_string(), 12),
            ("weft333".to_string(), 13),
        ]);
        let shaped = HashSet::from([12]);
        let p = plan(&eps, &veths, &shaped);
        assert_eq!(p.len(), 4, "the endpoint without a veth is left out");
        let get = |ip: &str| p[&EpKey::new(ip.parse().unwrap())];
        assert_eq!(get("10.0.0.1").flags, EP_FAST);
        assert_eq!(get("fd00::1").flags, EP_FAST);
        assert_eq!(get("10.0.0.1").host_ifindex, 11);
        assert_eq!(get("10.0.0.2").flags, 0, "shaped");
        assert_eq!(get("10.0.0.3").flags, 0, "not settled");
        assert_eq!(get("10.0.0.3").pod_mac, [2, 0, 0, 0, 0, 7]);
    }
}
