//! `weft_lb`'s typed map entries to the kernel's layouts (`weft/lb.h`) and
//! back. Pure: the round trip is unit-tested, and read-back of the kernel's
//! maps decodes with the same functions the writes encoded with.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_bpf_abi::{
    LbAffinityKey, LbBackend, LbMaglev, LbMaglevKey, LbNodeKey, LbRevnat, LbSvcKey, LbSvcValue,
    AF_INET, AF_INET6, LB_BACKEND_ACTIVE, LB_BACKEND_TERMINATING, LB_CLIENT_NETNS, LB_MAGLEV_MAX,
};
use weft_lb::maps::{BackendValue, MaglevKey, RevNatValue, ServiceKey, ServiceValue};
use weft_lb::{BackendState, FrontendKind, Protocol, Scope};

use super::ServiceError;

/// An address as the maps hold it: family and 16 bytes, IPv4 in the first 4.
pub fn addr_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (AF_INET, addr)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

pub fn addr_from(family: u8, addr: [u8; 16]) -> Result<IpAddr, ServiceError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(addr))),
        f => Err(ServiceError::decode(format!("address family {f}"))),
    }
}

fn proto_from(n: u8) -> Result<Protocol, ServiceError> {
    match n {
        6 => Ok(Protocol::TCP),
        17 => Ok(Protocol::UDP),
        132 => Ok(Protocol::SCTP),
        p => Err(ServiceError::decode(format!("protocol {p}"))),
    }
}

fn scope_from(n: u8) -> Result<Scope, ServiceError> {
    match n {
        0 => Ok(Scope::External),
        1 => Ok(Scope::Internal),
        s => Err(ServiceError::decode(format!("scope {s}"))),
    }
}

fn kind_from(n: u8) -> Result<FrontendKind, ServiceError> {
    match n {
        1 => Ok(FrontendKind::ClusterIp),
        2 => Ok(FrontendKind::NodePort),
        3 => Ok(FrontendKind::ExternalIp),
        4 => Ok(FrontendKind::LoadBalancer),
        k => Err(ServiceError::decode(format!("frontend kind {k}"))),
    }
}

pub fn svc_key(k: &ServiceKey) -> LbSvcKey {
    let (family, addr) = addr_bytes(k.addr);
    LbSvcKey {
        addr,
        port: k.port.to_be(),
        family,
        proto: k.proto.number(),
        slot: k.slot,
        scope: k.scope as u8,
        pad: 0,
    }
}

pub fn svc_key_from(k: &LbSvcKey) -> Result<ServiceKey, ServiceError> {
    Ok(ServiceKey {
        addr: addr_from(k.family, k.addr)?,
        port: u16::from_be(k.port),
        proto: proto_from(k.proto)?,
        scope: scope_from(k.scope)?,
        slot: k.slot,
    })
}

pub fn svc_value(v: &ServiceValue) -> LbSvcValue {
    LbSvcValue {
        backend_id: v.backend_id,
        count: v.count,
        rev_nat_id: v.rev_nat_id,
        flags: v.flags,
        kind: v.kind as u8,
        pad: 0,
        affinity_timeout: v.affinity_timeout,
    }
}

pub fn svc_value_from(v: &LbSvcValue) -> Result<ServiceValue, ServiceError> {
    Ok(ServiceValue {
        backend_id: v.backend_id,
        count: v.count,
        rev_nat_id: v.rev_nat_id,
        kind: kind_from(v.kind)?,
        flags: v.flags,
        affinity_timeout: v.affinity_timeout,
    })
}

pub fn backend(v: &BackendValue) -> LbBackend {
    let (family, addr) = addr_bytes(v.addr);
    LbBackend {
        addr,
        port: v.port.to_be(),
        family,
        proto: v.proto.number(),
        state: match v.state {
            BackendState::Active => LB_BACKEND_ACTIVE,
            BackendState::Terminating => LB_BACKEND_TERMINATING,
        },
        pad: [0; 3],
    }
}

pub fn backend_from(v: &LbBackend) -> Result<BackendValue, ServiceError> {
    Ok(BackendValue {
        addr: addr_from(v.family, v.addr)?,
        port: u16::from_be(v.port),
        proto: proto_from(v.proto)?,
        state: match v.state {
            LB_BACKEND_ACTIVE => BackendState::Active,
            LB_BACKEND_TERMINATING => BackendState::Terminating,
            s => return Err(ServiceError::decode(format!("backend state {s}"))),
        },
    })
}

pub fn revnat(v: &RevNatValue) -> LbRevnat {
    let (family, addr) = addr_bytes(v.addr);
    LbRevnat {
        addr,
        port: v.port.to_be(),
        family,
        pad: 0,
    }
}

pub fn revnat_from(v: &LbRevnat) -> Result<RevNatValue, ServiceError> {
    Ok(RevNatValue {
        addr: addr_from(v.family, v.addr)?,
        port: u16::from_be(v.port),
    })
}

pub fn maglev_key(k: &MaglevKey) -> LbMaglevKey {
    LbMaglevKey {
        service_id: k.service_id,
        scope: k.scope as u8,
        pad: 0,
    }
}

pub fn maglev_key_from(k: &LbMaglevKey) -> Result<MaglevKey, ServiceError> {
    Ok(MaglevKey {
        service_id: k.service_id,
        scope: scope_from(k.scope)?,
    })
}

/// A table of `m` ids (at most [`LB_MAGLEV_MAX`]) in the fixed-size value.
pub fn maglev(table: &[u32]) -> Result<Box<LbMaglev>, ServiceError> {
    if table.len() > LB_MAGLEV_MAX as usize {
        return Err(ServiceError::MaglevTooLarge {
            m: table.len(),
            max: LB_MAGLEV_MAX as usize,
        });
    }
    let mut v = Box::<LbMaglev>::default();
    v.m = table.len() as u32;
    v.ids[..table.len()].copy_from_slice(table);
    Ok(v)
}

pub fn maglev_from(v: &LbMaglev) -> Result<Vec<u32>, ServiceError> {
    let m = v.m as usize;
    if m > v.ids.len() {
        return Err(ServiceError::decode(format!("maglev table of {m} entries")));
    }
    Ok(v.ids[..m].to_vec())
}

pub fn node_key(ip: IpAddr) -> LbNodeKey {
    let (family, addr) = addr_bytes(ip);
    LbNodeKey {
        addr,
        family,
        pad: [0; 3],
    }
}

/// Who an affinity entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityClient {
    /// A client address (traffic from outside, through the tc program).
    Addr(IpAddr),
    /// A network namespace by cookie (the socket LB: pods and the node).
    Netns(u64),
}

impl std::fmt::Display for AffinityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AffinityClient::Addr(a) => a.fmt(f),
            AffinityClient::Netns(c) => write!(f, "netns:{c}"),
        }
    }
}

pub fn affinity_client(k: &LbAffinityKey) -> Result<AffinityClient, ServiceError> {
    if k.family == LB_CLIENT_NETNS {
        let mut c = [0u8; 8];
        c.copy_from_slice(&k.client[..8]);
        return Ok(AffinityClient::Netns(u64::from_ne_bytes(c)));
    }
    Ok(AffinityClient::Addr(addr_from(k.family, k.client)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let k = ServiceKey {
            addr: "10.96.0.10".parse().unwrap(),
            port: 53,
            proto: Protocol::UDP,
            scope: Scope::Internal,
            slot: 3,
        };
        let e = svc_key(&k);
        assert_eq!(e.port, 53u16.to_be(), "ports are in network byte order");
        assert_eq!(&e.addr[..4], &[10, 96, 0, 10]);
        assert_eq!((e.family, e.proto, e.scope, e.slot), (AF_INET, 17, 1, 3));
        assert_eq!(svc_key_from(&e).unwrap(), k);

        let np = ServiceKey {
            addr: "::".parse().unwrap(),
            port: 30080,
            proto: Protocol::TCP,
            scope: Scope::External,
            slot: 0,
        };
        let e = svc_key(&np);
        assert_eq!((e.family, e.addr), (AF_INET6, [0; 16]));
        assert_eq!(svc_key_from(&e).unwrap(), np);

        let v = ServiceValue {
            backend_id: 0,
            count: 2,
            rev_nat_id: 7,
            kind: FrontendKind::NodePort,
            flags: weft_lb::maps::flags::MAGLEV | weft_lb::maps::flags::AFFINITY,
            affinity_timeout: 10800,
        };
        assert_eq!(svc_value_from(&svc_value(&v)).unwrap(), v);

        let b = BackendValue {
            addr: "fd00::5".parse().unwrap(),
            port: 8080,
            proto: Protocol::TCP,
            state: BackendState::Terminating,
        };
        assert_eq!(backend_from(&backend(&b)).unwrap(), b);
        let r = RevNatValue {
            addr: "10.96.0.1".parse().unwrap(),
            port: 443,
        };
        assert_eq!(revnat_from(&revnat(&r)).unwrap(), r);
        let mk = MaglevKey {
            service_id: 9,
            scope: Scope::External,
        };
        assert_eq!(maglev_key_from(&maglev_key(&mk)).unwrap(), mk);
        let t: Vec<u32> = (0..251).map(|i| i % 3 + 1).collect();
        assert_eq!(maglev_from(&maglev(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn flag_and_kind_values_match_the_header() {
        use weft_lb::maps::flags;
        assert_eq!(flags::TWO_SCOPES, weft_bpf_abi::LB_TWO_SCOPES);
        assert_eq!(flags::LOCAL_ONLY, weft_bpf_abi::LB_LOCAL_ONLY);
        assert_eq!(flags::AFFINITY, weft_bpf_abi::LB_AFFINITY);
        assert_eq!(flags::MAGLEV, weft_bpf_abi::LB_MAGLEV);
        assert_eq!(flags::REJECT, weft_bpf_abi::LB_REJECT);
        assert_eq!(flags::DROP, weft_bpf_abi::LB_DROP);
        assert_eq!(flags::TERMINATING, weft_bpf_abi::LB_TERMINATING);
        assert_eq!(
            FrontendKind::ClusterIp as u8,
            weft_bpf_abi::LB_KIND_CLUSTER_IP
        );
        assert_eq!(
            FrontendKind::NodePort as u8,
            weft_bpf_abi::LB_KIND_NODE_PORT
        );
        assert_eq!(
            FrontendKind::ExternalIp as u8,
            weft_bpf_abi::LB_KIND_EXTERNAL_IP
        );
        assert_eq!(
            FrontendKind::LoadBalancer as u8,
            weft_bpf_abi::LB_KIND_LOAD_BALANCER
        );
        assert_eq!(Scope::External as u8, weft_bpf_abi::LB_SCOPE_EXT);
        assert_eq!(Scope::Internal as u8, weft_bpf_abi::LB_SCOPE_INT);
        assert_eq!(weft_lb::maglev::DEFAULT_M, LB_MAGLEV_MAX);
    }

    #[test]
    fn oversized_maglev_tables_and_bad_bytes_are_errors() {
        assert!(maglev(&vec![1; LB_MAGLEV_MAX as usize + 1]).is_err());
        let mut k = svc_key(&ServiceKey {
            addr: "10.0.0.1".parse().unwrap(),
            port: 1,
            proto: Protocol::TCP,
            scope: Scope::External,
            slot: 0,
        });
        k.family = 9;
        assert!(svc_key_from(&k).is_err());
    }
}
