//! Byte-level tests of the builders and parsers.

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
    let m = Msg::new(RTM_DELLINK, NLM_F_ACK)
        .ifinfomsg(0, 0, 0, 0)
        .attr_str(IFLA_IFNAME, "eth0")
        .finish(1);
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
    let top: Vec<_> = attrs(&m[32..]).collect();
    assert_eq!(top[0], (IFLA_IFNAME, &b"weft1\0"[..]));
    assert_eq!(top[1], (IFLA_MTU, &ne32(1450)[..]));
    assert_eq!(top[2], (IFLA_ADDRESS, &[0xee; 6][..]));
    assert_eq!(top[3].0, IFLA_LINKINFO);
    let info: Vec<_> = attrs(top[3].1).collect();
    assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth\0"[..]));
    let data: Vec<_> = attrs(info[1].1).collect();
    assert_eq!(data[0].0, VETH_INFO_PEER);
    let peer = data[0].1;
    // the peer's ifinfomsg: flags/change 0 (set up later)
    assert_eq!(&peer[8..12], &ne32(0));
    assert_eq!(&peer[12..16], &ne32(0));
    let pattrs: Vec<_> = attrs(&peer[16..]).collect();
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
    let l = parse_link(msgs[0].payload).unwrap();
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
    let m = NlMsg {
        ty: NLMSG_ERROR,
        flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
        seq: 1,
        payload: &p,
    };
    assert_eq!(parse_error(&m), (17, Some("name in use".into())));
    let ack = 0i32.to_ne_bytes();
    let m = NlMsg {
        ty: NLMSG_ERROR,
        flags: 0,
        seq: 1,
        payload: &ack,
    };
    assert_eq!(parse_error(&m), (0, None));
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
    let r = parse_route(&p).unwrap();
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
    // the request's ifinfomsg + attributes parse like a kernel answer
    let payload = &m[NLMSG_HDRLEN..];
    let l = parse_link(payload).unwrap();
    assert_eq!((l.name.as_str(), l.mtu), ("weft.vxlan", 1450));
    assert_eq!(l.kind.as_deref(), Some("vxlan"));
    assert_eq!(
        parse_vxlan(payload).unwrap(),
        VxlanInfo {
            vni: 4096,
            port: 4789,
            local: Some("198.18.0.1".parse().unwrap()),
            link: Some(2),
            learning: false,
        }
    );
    // the port is in network order on the wire
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
    assert_eq!(parse_vxlan(&veth[NLMSG_HDRLEN..]), None);
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
    let parsed = parse_route(&m[NLMSG_HDRLEN..]).unwrap();
    assert_eq!(parsed.protocol, RTPROT_WEFT);
    assert_eq!(parsed.flags, RTNH_F_ONLINK);
    assert_eq!(parsed.dst, Some(r.dst));
    assert_eq!(parsed.gateway, Some(r.gateway));
    assert_eq!(parsed.oif, Some(9));
    // the delete names exactly that route
    let d = del_route(&parsed).finish(2);
    assert_eq!(u16::from_ne_bytes([d[4], d[5]]), RTM_DELROUTE);
    let again = parse_route(&d[NLMSG_HDRLEN..]).unwrap();
    assert_eq!(
        (again.protocol, again.dst, again.gateway, again.oif),
        (RTPROT_WEFT, parsed.dst, parsed.gateway, parsed.oif)
    );
}

#[test]
fn fdb_request_bytes() {
    let m = new_fdb(7, [2, 0, 0, 0, 0, 1], "198.18.0.2".parse().unwrap()).finish(1);
    let n = parse_neigh(&m[NLMSG_HDRLEN..]).unwrap();
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
fn malformed_input_does_not_panic() {
    for len in 0..64 {
        let b = vec![0xffu8; len];
        let _ = messages(&b).count();
        let _ = attrs(&b).count();
        let _ = parse_link(&b);
        let _ = parse_route(&b);
        let _ = parse_addr(&b);
        let _ = parse_neigh(&b);
        let _ = parse_vxlan(&b);
    }
}
