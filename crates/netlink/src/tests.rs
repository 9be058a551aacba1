//! Byte-level tests of the builders and views: the requests
//! `netlink-packet-route` encodes are the bytes the kernel's headers define
//! (the same bytes weft's hand-written encoder sent before), and what it
//! decodes reads back through the views.

use netlink_packet_core::{NlasIterator, NLMSG_DONE, NLMSG_ERROR};

use crate::consts::*;
use crate::msg::*;
use crate::parse::*;
use crate::requests::*;

fn ne16(v: u16) -> [u8; 2] {
    v.to_ne_bytes()
}
fn ne32(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}

// linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h, linux/neighbour.h,
// linux/veth.h: the numbers the expected bytes are written in, kept here so
// the tests check the crate against the kernel's headers, not against itself
const NLMSG_HDRLEN: usize = 16;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_VXLAN_PORT: u16 = 15;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const RTA_MULTIPATH: u16 = 9;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;

/// `(type, payload)` of a run of attributes, the nested flag masked off.
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    NlasIterator::new(buf)
        .map(|a| a.expect("well-formed attributes"))
        .map(|a| {
            let (kind, len) = (a.kind(), a.length() as usize);
            (kind, &a.into_inner()[4..len])
        })
        .collect()
}

fn find_attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, p)| p)
}

/// A whole netlink message of type `ty` around `payload`.
fn wrap(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(ne32((NLMSG_HDRLEN + payload.len()) as u32));
    m.extend(ne16(ty));
    m.extend(ne16(flags));
    m.extend(ne32(1));
    m.extend(ne32(0));
    m.extend(payload);
    m
}

/// The one message in `bytes`, decoded.
fn decode_one(bytes: &[u8]) -> Message {
    let msgs: Vec<_> = messages(bytes).collect();
    assert_eq!(msgs.len(), 1);
    match msgs[0].decode().expect("decodes").payload {
        netlink_packet_core::NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not an rtnetlink message: {other:?}"),
    }
}

#[test]
fn new_addr_v4_bytes() {
    let got = new_addr(3, "10.0.0.1".parse().unwrap(), 32).finish(7);
    let mut want = Vec::new();
    // nlmsghdr
    want.extend(ne32(40)); // nlmsg_len: 16 + 8 + 8 + 8
    want.extend(ne16(RTM_NEWADDR)); // 20
    want.extend(ne16(0x0505)); // REQUEST | ACK | REPLACE | CREATE
    want.extend(ne32(7)); // nlmsg_seq
    want.extend(ne32(0)); // nlmsg_pid
                          // ifaddrmsg
    want.extend([2, 32, 0, 0]); // AF_INET, prefixlen 32, flags, scope universe
    want.extend(ne32(3)); // ifa_index
                          // IFA_LOCAL 10.0.0.1
    want.extend(ne16(8));
    want.extend(ne16(2));
    want.extend([10, 0, 0, 1]);
    // IFA_ADDRESS 10.0.0.1
    want.extend(ne16(8));
    want.extend(ne16(1));
    want.extend([10, 0, 0, 1]);
    assert_eq!(got, want);
}

#[test]
fn new_addr_v6_has_nodad() {
    let got = new_addr(4, "fd00::5".parse().unwrap(), 128).finish(1);
    assert_eq!(got.len(), 16 + 8 + 20 + 8);
    assert_eq!(&got[16..20], &[10, 128, 0x02, 0]); // AF_INET6, /128, NODAD
                                                   // IFA_FLAGS attribute at the end
    assert_eq!(&got[44..48], &[ne16(8), ne16(IFA_FLAGS)].concat()[..]);
    assert_eq!(&got[48..52], &ne32(IFA_F_NODAD));
}

#[test]
fn string_attr_is_nul_terminated_and_padded() {
    let m = del_link_by_name("eth0").finish(1);
    // 16 hdr + 16 ifinfomsg + attr (4 + 5 = 9, padded to 12)
    assert_eq!(m.len(), 44);
    assert_eq!(&m[32..34], &ne16(9));
    assert_eq!(&m[34..36], &ne16(IFLA_IFNAME));
    assert_eq!(&m[36..44], b"eth0\0\0\0\0");
}

#[test]
fn veth_request_nests() {
    let m = new_veth(&VethSpec {
        name: "weft1",
        mac: [0xee; 6],
        mtu: 1450,
        peer_name: "eth0",
        peer_netns_fd: 9,
    })
    .finish(1);
    assert_eq!(
        u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
        m.len()
    );
    // walk: the top-level attributes after ifinfomsg
    let top = attrs(&m[32..]);
    assert_eq!(top[0], (IFLA_IFNAME, &b"weft1\0"[..]));
    assert_eq!(top[1], (IFLA_MTU, &ne32(1450)[..]));
    assert_eq!(top[2], (IFLA_ADDRESS, &[0xee; 6][..]));
    assert_eq!(top[3].0, IFLA_LINKINFO);
    let info = attrs(top[3].1);
    assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth\0"[..]));
    let data = attrs(info[1].1);
    assert_eq!(data[0].0, VETH_INFO_PEER);
    let peer = data[0].1;
    // the peer's ifinfomsg: flags/change 0 (set up later)
    assert_eq!(&peer[8..12], &ne32(0));
    assert_eq!(&peer[12..16], &ne32(0));
    let pattrs = attrs(&peer[16..]);
    assert_eq!(pattrs[0], (IFLA_IFNAME, &b"eth0\0"[..]));
    assert_eq!(pattrs[2], (IFLA_NET_NS_FD, &ne32(9)[..]));
    // the nest length covers exactly the nested bytes
    let linkinfo_len = u16::from_ne_bytes([m[32 + 12 + 8 + 12], m[32 + 12 + 8 + 12 + 1]]);
    assert_eq!(linkinfo_len as usize, 4 + top[3].1.len());
}

#[test]
fn route_bytes() {
    let m = new_route(&RouteSpec::default_via("169.254.1.1".parse().unwrap(), 2)).finish(5);
    let mut want = Vec::new();
    want.extend(ne32(16 + 12 + 8 + 8));
    want.extend(ne16(RTM_NEWROUTE));
    want.extend(ne16(0x0505));
    want.extend(ne32(5));
    want.extend(ne32(0));
    // rtmsg: AF_INET, dst_len 0, src_len, tos, table main, proto static,
    // scope universe, type unicast; flags
    want.extend([2, 0, 0, 0, 254, 4, 0, 1]);
    want.extend(ne32(0));
    want.extend(ne16(8));
    want.extend(ne16(RTA_GATEWAY));
    want.extend([169, 254, 1, 1]);
    want.extend(ne16(8));
    want.extend(ne16(RTA_OIF));
    want.extend(ne32(2));
    assert_eq!(m, want);
}

#[test]
fn neigh_bytes() {
    let m = new_neigh(2, "169.254.1.1".parse().unwrap(), [0xee; 6]).finish(1);
    assert_eq!(m.len(), 16 + 12 + 8 + 12);
    // ndmsg: AF_INET, pads, ifindex 2, NUD_PERMANENT, flags, type
    let mut nd = vec![2, 0, 0, 0];
    nd.extend(ne32(2));
    nd.extend(ne16(0x80));
    nd.extend([0, 0]);
    assert_eq!(&m[16..28], &nd[..]);
    assert_eq!(
        &m[28..36],
        &[ne16(8), ne16(NDA_DST)]
            .concat()
            .iter()
            .chain(&[169, 254, 1, 1])
            .copied()
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(&m[36..40], &[ne16(10), ne16(NDA_LLADDR)].concat()[..]);
    assert_eq!(&m[40..48], &[0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0, 0]);
}

/// A canned `RTM_NEWLINK` as a dump answers it: veth `weft0a1b2c3d` up,
/// index 7, mtu 1450, mac ee:..., peer ifindex 2 in netnsid 0.
fn canned_newlink() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend([0u8, 0]); // family, pad
    p.extend(ne16(1)); // ARPHRD_ETHER
    p.extend(ne32(7)); // index
    p.extend(ne32(0x1_1043)); // UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP
    p.extend(ne32(0)); // change
    let mut attr = |ty: u16, data: &[u8]| {
        p.extend(ne16(4 + data.len() as u16));
        p.extend(ne16(ty));
        p.extend(data);
        while p.len() % 4 != 0 {
            p.push(0);
        }
    };
    attr(IFLA_IFNAME, b"weft0a1b2c3d\0");
    attr(IFLA_MTU, &ne32(1450));
    attr(IFLA_LINK, &ne32(2));
    attr(IFLA_ADDRESS, &[0xee; 6]);
    // IFLA_LINKINFO (nested flag set as the kernel does) { KIND "veth" }
    let mut li = Vec::new();
    li.extend(ne16(9));
    li.extend(ne16(IFLA_INFO_KIND));
    li.extend(b"veth\0\0\0\0");
    attr(IFLA_LINKINFO | NLA_F_NESTED, &li);
    attr(IFLA_LINK_NETNSID, &0i32.to_ne_bytes());
    let mut msg = Vec::new();
    msg.extend(ne32(16 + p.len() as u32));
    msg.extend(ne16(RTM_NEWLINK));
    msg.extend(ne16(NLM_F_MULTI));
    msg.extend(ne32(42));
    msg.extend(ne32(1234));
    msg.extend(p);
    msg
}

#[test]
fn parse_canned_newlink() {
    let buf = canned_newlink();
    let mut done = Vec::new();
    done.extend(ne32(20));
    done.extend(ne16(NLMSG_DONE));
    done.extend(ne16(NLM_F_MULTI));
    done.extend(ne32(42));
    done.extend(ne32(1234));
    done.extend(ne32(0));
    let all = [buf, done].concat();
    let msgs: Vec<_> = messages(&all).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].ty, RTM_NEWLINK);
    assert_eq!(msgs[0].seq, 42);
    assert_eq!(msgs[1].ty, NLMSG_DONE);
    // a clean end of dump: code 0
    assert_eq!(error_of(&msgs[1].decode().unwrap()), Some((0, None)));
    let l = parse_link(&decode_one(&canned_newlink())).unwrap();
    assert_eq!(
        l,
        LinkMsg {
            index: 7,
            flags: 0x1_1043,
            name: "weft0a1b2c3d".into(),
            mtu: 1450,
            mac: Some([0xee; 6]),
            kind: Some("veth".into()),
            link: Some(2),
            link_netnsid: Some(0),
        }
    );
    assert!(l.is_up());
}

#[test]
fn parse_error_with_ext_ack() {
    // NLMSG_ERROR, capped, with TLVs: error -17, original header, MSG attr
    let mut p = Vec::new();
    p.extend((-17i32).to_ne_bytes());
    p.extend([0u8; 16]);
    p.extend(ne16(4 + 12));
    p.extend(ne16(NLMSGERR_ATTR_MSG));
    p.extend(b"name in use\0");
    let m = wrap(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, &p);
    let got = messages(&m).next().unwrap().decode().unwrap();
    assert_eq!(error_of(&got), Some((17, Some("name in use".into()))));
    // not capped: the original request (here 20 bytes) is echoed before the TLVs
    let mut p = Vec::new();
    p.extend((-22i32).to_ne_bytes());
    p.extend(ne32(20));
    p.extend([0u8; 16]);
    p.extend(ne16(4 + 8));
    p.extend(ne16(NLMSGERR_ATTR_MSG));
    p.extend(b"bad mtu\0");
    let m = wrap(NLMSG_ERROR, NLM_F_ACK_TLVS, &p);
    let got = messages(&m).next().unwrap().decode().unwrap();
    assert_eq!(error_of(&got), Some((22, Some("bad mtu".into()))));
    // a plain ack
    let m = wrap(
        NLMSG_ERROR,
        0,
        &[&0i32.to_ne_bytes()[..], &[0u8; 16]].concat(),
    );
    let got = messages(&m).next().unwrap().decode().unwrap();
    assert_eq!(error_of(&got), Some((0, None)));
    // a dump that failed: NLMSG_DONE carries the error and the TLVs
    let mut p = Vec::new();
    p.extend((-22i32).to_ne_bytes());
    p.extend(ne16(4 + 12));
    p.extend(ne16(NLMSGERR_ATTR_MSG));
    p.extend(b"bad filter\0\0");
    let m = wrap(NLMSG_DONE, NLM_F_MULTI | NLM_F_ACK_TLVS, &p);
    let got = messages(&m).next().unwrap().decode().unwrap();
    assert_eq!(error_of(&got), Some((22, Some("bad filter".into()))));
}

#[test]
fn parse_route_multipath_oif() {
    let mut p = vec![2u8, 0, 0, 0, 254, 4, 0, 1];
    p.extend(ne32(0));
    // RTA_MULTIPATH with one rtnexthop {len 8, flags, hops, ifindex 5}
    p.extend(ne16(4 + 8));
    p.extend(ne16(RTA_MULTIPATH));
    p.extend(ne16(8));
    p.extend([0, 0]);
    p.extend(ne32(5));
    let r = parse_route(&decode_one(&wrap(RTM_NEWROUTE, NLM_F_MULTI, &p))).unwrap();
    assert_eq!(r.dst_len, 0);
    assert_eq!(r.oif, Some(5));
    assert_eq!(r.table, 254);
}

#[test]
fn vxlan_request_roundtrips_through_parse() {
    let m = new_vxlan(&VxlanSpec {
        name: "weft.vxlan",
        vni: 4096,
        port: 4789,
        local: Some("198.18.0.1".parse().unwrap()),
        link: Some(2),
        mtu: 1450,
    })
    .finish(1);
    // the request's ifinfomsg + attributes decode like a kernel answer
    let decoded = decode_one(&m);
    let l = parse_link(&decoded).unwrap();
    assert_eq!((l.name.as_str(), l.mtu), ("weft.vxlan", 1450));
    assert_eq!(l.kind.as_deref(), Some("vxlan"));
    assert_eq!(
        parse_vxlan(&decoded).unwrap(),
        VxlanInfo {
            vni: 4096,
            port: 4789,
            local: Some("198.18.0.1".parse().unwrap()),
            link: Some(2),
            learning: false,
        }
    );
    // the port is in network order on the wire
    let payload = &m[NLMSG_HDRLEN..];
    let info = find_attr(&payload[16..], IFLA_LINKINFO).unwrap();
    let data = find_attr(info, IFLA_INFO_DATA).unwrap();
    assert_eq!(find_attr(data, IFLA_VXLAN_PORT).unwrap(), &[0x12, 0xb5]);
    // a veth is not vxlan
    let veth = new_veth(&VethSpec {
        name: "v",
        mac: [0xee; 6],
        mtu: 0,
        peer_name: "p",
        peer_netns_fd: 3,
    })
    .finish(1);
    assert_eq!(parse_vxlan(&decode_one(&veth)), None);
}

#[test]
fn peer_route_carries_weft_protocol() {
    let r = PeerRoute {
        dst: "10.244.0.64".parse().unwrap(),
        dst_len: 26,
        gateway: "198.18.0.2".parse().unwrap(),
        oif: Some(9),
        onlink: true,
    };
    let m = new_peer_route(&r).finish(1);
    assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x0605); // REQ|ACK|EXCL|CREATE
    assert_eq!(m[NLMSG_HDRLEN + 5], 201); // rtm_protocol
    assert_eq!(&m[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 12], &ne32(0x4)); // RTNH_F_ONLINK
    let parsed = parse_route(&decode_one(&m)).unwrap();
    assert_eq!(parsed.protocol, RTPROT_WEFT);
    assert_eq!(parsed.flags, RTNH_F_ONLINK);
    assert_eq!(parsed.dst, Some(r.dst));
    assert_eq!(parsed.gateway, Some(r.gateway));
    assert_eq!(parsed.oif, Some(9));
    // the delete names exactly that route
    let d = del_route(&parsed).finish(2);
    assert_eq!(u16::from_ne_bytes([d[4], d[5]]), RTM_DELROUTE);
    let again = parse_route(&decode_one(&d)).unwrap();
    assert_eq!(
        (again.protocol, again.dst, again.gateway, again.oif),
        (RTPROT_WEFT, parsed.dst, parsed.gateway, parsed.oif)
    );
}

#[test]
fn fdb_request_bytes() {
    let m = new_fdb(7, [2, 0, 0, 0, 0, 1], "198.18.0.2".parse().unwrap()).finish(1);
    // ndmsg: AF_BRIDGE, pads, ifindex 7, NUD_PERMANENT, NTF_SELF, type
    let mut nd = vec![libc::AF_BRIDGE as u8, 0, 0, 0];
    nd.extend(ne32(7));
    nd.extend(ne16(0x80));
    nd.extend([0x02, 0]);
    assert_eq!(&m[16..28], &nd[..]);
    let n = parse_neigh(&decode_one(&m)).unwrap();
    assert_eq!(n.family, AF_BRIDGE);
    assert_eq!(n.ifindex, 7);
    assert_eq!(n.state, NUD_PERMANENT);
    assert_eq!(n.flags, NTF_SELF);
    assert_eq!(n.lladdr, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(n.dst, Some("198.18.0.2".parse().unwrap()));
    // IP neighbour dumps filter by attribute, ndm_ifindex stays 0
    let d = dump_neighs_on(AF_INET, 7).finish(1);
    assert_eq!(&d[20..24], &ne32(0));
    assert_eq!(find_attr(&d[28..], NDA_IFINDEX), Some(&ne32(7)[..]));
}

#[test]
fn batch_requests_are_back_to_back() {
    // two requests in one datagram: each aligned, its own sequence number
    let a = set_link_up(3);
    let b = new_neigh(3, "169.254.1.1".parse().unwrap(), [0xee; 6]);
    let mut buf = Vec::new();
    a.append_to(&mut buf, 10);
    b.append_to(&mut buf, 11);
    assert_eq!(buf.len(), a.len() + b.len());
    let seqs: Vec<_> = messages(&buf).map(|m| (m.ty, m.seq)).collect();
    assert_eq!(seqs, vec![(RTM_NEWLINK, 10), (28, 11)]);
}

/// A small deterministic byte generator (no extra crate for a test).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn malformed_input_does_not_panic() {
    let types = [16u16, 20, 24, 28, 36, NLMSG_ERROR, NLMSG_DONE];
    for len in 0..96 {
        for seed in 0..8 {
            let b = if seed == 0 {
                vec![0xffu8; len]
            } else {
                noise(seed * 1000 + len as u32, len)
            };
            let _ = messages(&b).count();
            let _ = NlasIterator::new(&b[..]).count();
            for ty in types {
                let m = wrap(ty, 0, &b);
                for r in messages(&m) {
                    if let Ok(d) = r.decode() {
                        let _ = error_of(&d);
                        if let netlink_packet_core::NetlinkPayload::InnerMessage(x) = d.payload {
                            let _ = parse_link(&x);
                            let _ = parse_route(&x);
                            let _ = parse_addr(&x);
                            let _ = parse_neigh(&x);
                            let _ = parse_vxlan(&x);
                            let _ = parse_qdisc(&x);
                        }
                    }
                }
            }
        }
    }
}
