//! The fakes alone and composed.

use super::*;
use crate::seams::*;
use crate::{Attached, SyncReport};

fn link(host: &str) -> PodLink {
    PodLink {
        netns: "/run/netns/p".into(),
        ifname: "eth0".into(),
        host_ifname: host.into(),
        mtu: 1450,
        ipv4: Some("10.244.0.5".parse().unwrap()),
        ipv6: None,
    }
}

#[test]
fn records_and_models_links() {
    let dp = RecordingDatapath::new();
    let a = dp.attach(&link("weftaaa")).unwrap();
    dp.attach(&link("weftbbb")).unwrap();
    assert_ne!(a.pod_mac, [0; 6]);
    assert_eq!(dp.list_host_links("weft").unwrap().len(), 2);
    dp.detach("weftaaa").unwrap();
    dp.detach("weftaaa").unwrap();
    let names: Vec<_> = dp
        .list_host_links("weft")
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["weftbbb"]);
    assert_eq!(dp.calls_of(Op::Detach).len(), 2);
    assert_eq!(dp.calls()[0], Call::Attach(link("weftaaa")));
    assert!(dp.check(&link("weftaaa"), a.pod_mac).unwrap()[0].contains("missing"));
    assert!(dp.check(&link("weftbbb"), a.pod_mac).unwrap().is_empty());
}

#[test]
fn failures_one_shot_and_always() {
    let dp = RecordingDatapath::new();
    dp.fail_next(
        Op::Attach,
        DatapathError::NetnsGone {
            path: "/run/netns/p".into(),
        },
    );
    assert!(matches!(
        dp.attach(&link("weftx")),
        Err(DatapathError::NetnsGone { .. })
    ));
    assert!(dp.attach(&link("weftx")).is_ok());
    dp.fail_always(Op::Detach, |c| {
        DatapathError::Injected(format!("no: {c:?}"))
    });
    assert!(dp.detach("weftx").is_err());
    assert!(dp.detach("weftx").is_err());
    dp.clear_failures(Op::Detach);
    assert!(dp.detach("weftx").is_ok());
    assert_eq!(dp.calls().len(), 5);
}

#[test]
fn overlay_and_peer_sync_are_modelled() {
    let dp = RecordingDatapath::new();
    let peer = PeerNode {
        name: "node2".into(),
        underlay_v4: Some("198.18.0.2".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: Some([2, 0, 0, 0, 0, 2]),
        blocks: vec![
            "10.244.0.64/26".parse().unwrap(),
            "fd00:10:244::40/122".parse().unwrap(),
        ],
    };
    let e = dp
        .sync_peers(
            RoutingMode::Overlay,
            "weft.vxlan",
            std::slice::from_ref(&peer),
        )
        .unwrap_err();
    assert!(matches!(e, DatapathError::LinkNotFound { .. }), "{e}");
    let setup = OverlaySetup {
        device: "weft.vxlan".into(),
        vni: 4096,
        port: 4789,
        local_v4: Some("198.18.0.1".parse().unwrap()),
        local_v6: None,
        underlay_dev: None,
        mtu: 1450,
    };
    let mac = dp.ensure_overlay(&setup).unwrap();
    assert_eq!(dp.ensure_overlay(&setup).unwrap(), mac);
    let r = dp
        .sync_peers(
            RoutingMode::Overlay,
            "weft.vxlan",
            std::slice::from_ref(&peer),
        )
        .unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 2,
            removed: 0
        }
    );
    let again = dp
        .sync_peers(
            RoutingMode::Overlay,
            "weft.vxlan",
            std::slice::from_ref(&peer),
        )
        .unwrap();
    assert_eq!(again, SyncReport::default());
    // native needs an IPv6 underlay address for the IPv6 block
    assert!(matches!(
        dp.sync_peers(
            RoutingMode::Native,
            "weft.vxlan",
            std::slice::from_ref(&peer)
        ),
        Err(DatapathError::InvalidPeer { .. })
    ));
    assert_eq!(dp.peer_routes().len(), 2, "a failed sync changes nothing");
    let r = dp
        .sync_peers(RoutingMode::Overlay, "weft.vxlan", &[])
        .unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 0,
            removed: 2
        }
    );
    assert!(dp.peer_routes().is_empty());
    assert_eq!(dp.calls_of(Op::SyncPeers).len(), 5);
    assert_eq!(
        dp.calls_of(Op::EnsureOverlay),
        [
            Call::EnsureOverlay(setup.clone()),
            Call::EnsureOverlay(setup)
        ]
    );
}

#[test]
fn underlay_default_and_set() {
    let dp = RecordingDatapath::new();
    assert_eq!(dp.underlay_mtu(None).unwrap(), ("eth0".into(), 1500));
    dp.set_underlay("ens3", 9000);
    assert_eq!(dp.underlay_mtu(None).unwrap(), ("ens3".into(), 9000));
    assert_eq!(dp.underlay_mtu(Some("x")).unwrap().0, "x");
}

#[test]
fn each_fake_stands_alone() {
    let links = FakeLinks::new();
    let fast = FakeFastPath::new(links.clone());
    let node = FakeNode::new();
    let a: Attached = links.attach(&link("weftaaa")).unwrap();
    assert_eq!(links.attached()["weftaaa"].1, a);
    assert_eq!(fast.fastpath_stats().unwrap(), None);
    fast.fastpath_start(&FastPathSetup::default()).unwrap();
    let ep = |host: &str| FastEndpoint {
        host_ifname: host.into(),
        pod_mac: [2; 6],
        ips: vec!["10.244.0.5".parse().unwrap()],
        settled: true,
    };
    // the fast path sees the links of the fake it was built over
    let r = fast.fastpath_sync(&[ep("weftaaa"), ep("weftzzz")]).unwrap();
    assert_eq!((r.addresses, r.fast), (1, 1));
    // the two share a recorder; the node fake has its own
    assert_eq!(links.recorder().calls().len(), 3);
    assert_eq!(fast.recorder().calls_of(Op::FastPathSync).len(), 1);
    node.recorder()
        .fail_next(Op::PrepareNode, DatapathError::Injected("no".into()));
    assert!(node.prepare_node(&NodeSetup::default()).is_err());
    assert_eq!(node.recorder().calls().len(), 1);
    assert_eq!(links.recorder().calls().len(), 3);
}

#[test]
fn recording_datapath_shares_one_record_across_concerns() {
    let dp = RecordingDatapath::new();
    dp.attach(&link("weftaaa")).unwrap();
    dp.peers()
        .ensure_overlay(&OverlaySetup {
            device: "weft.vxlan".into(),
            vni: 1,
            port: 4789,
            local_v4: None,
            local_v6: None,
            underlay_dev: None,
            mtu: 1450,
        })
        .unwrap();
    dp.node().prepare_node(&NodeSetup::default()).unwrap();
    let ops: Vec<Op> = dp.calls().iter().map(Call::op).collect();
    assert_eq!(ops, [Op::Attach, Op::EnsureOverlay, Op::PrepareNode]);
    assert!(dp.links().has("weftaaa"));
    assert_eq!(dp.overlays().len(), 1);
}
