//! Routing to other nodes for [`LinuxDatapath`]: the VXLAN device and the
//! full-diff sync of peer routes, neighbours and FDB entries (the plan is
//! `crate::routing`'s).

use super::*;
use crate::{NodeNet, Peers};

impl LinuxDatapath {
    pub(super) fn ensure_overlay_inner(
        node: &mut Socket,
        setup: &OverlaySetup,
        mtu: u32,
    ) -> Result<[u8; 6], DatapathError> {
        let dev = setup.device.as_str();
        let link = match &setup.underlay_dev {
            Some(name) => Some(
                Self::get_link(node, name, format!("link {name}"))?
                    .ok_or_else(|| DatapathError::LinkNotFound { name: name.clone() })?
                    .index,
            ),
            None => None,
        };
        let want = nl::VxlanInfo {
            vni: setup.vni,
            port: setup.port,
            local: setup.local(),
            link,
            learning: false,
        };
        let unparsable = |what: String| DatapathError::Protocol {
            op: "RTM_GETLINK",
            what,
        };
        if let Some(p) = Self::get_link_payload(node, dev)? {
            let l = nl::parse_link(&p).ok_or_else(|| unparsable(format!("link {dev}")))?;
            let have = nl::parse_vxlan(&p);
            if have.as_ref() == Some(&want) {
                if l.mtu != mtu || !l.is_up() {
                    node.request(&Request::new(
                        nl::set_link_mtu_up(l.index, mtu),
                        format!("vxlan {dev} (mtu {mtu}, up)"),
                    ))?;
                }
                return l
                    .mac
                    .ok_or_else(|| unparsable(format!("vxlan {dev} has no mac")));
            }
            // VNI, port, local address and underlay cannot be changed in place
            tracing::info!(device = dev, kind = ?l.kind, have = ?have, want = ?want, "replacing overlay device");
            node.request(&Request::new(
                nl::del_link_by_name(dev),
                format!("link {dev}"),
            ))?;
        }
        node.request(&Request::new(
            nl::new_vxlan(&nl::VxlanSpec {
                name: dev,
                vni: setup.vni,
                port: setup.port,
                local: setup.local(),
                link,
                mtu,
            }),
            format!("vxlan {dev}"),
        ))?;
        Self::get_link(node, dev, format!("vxlan {dev}"))?
            .and_then(|l| l.mac)
            .ok_or_else(|| unparsable(format!("vxlan {dev} has no mac after creation")))
    }

    /// The deletes and adds that turn the kernel's state into `plan`.
    fn sync_requests(
        node: &mut Socket,
        plan: &Plan,
        vtep: Option<Vtep>,
        dev: &str,
    ) -> Result<(Vec<Request>, Vec<Request>), DatapathError> {
        let mut dels = Vec::new();
        let mut adds = Vec::new();

        // routes: weft's own protocol in the main table, nothing else
        let mut have = std::collections::BTreeSet::new();
        for (family, what) in [(nl::AF_INET, "ipv4 routes"), (nl::AF_INET6, "ipv6 routes")] {
            let routes = node.dump(&Request::new(nl::dump_routes(family), what))?;
            for r in routes.iter().filter_map(nl::parse_route) {
                if r.protocol != nl::RTPROT_WEFT || r.table != nl::RT_TABLE_MAIN as u32 {
                    continue;
                }
                let dst = r.dst.unwrap_or(if family == nl::AF_INET {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                });
                let key = (dst, r.dst_len);
                // the next hop, the device (native routes never use the
                // VXLAN device) and onlink must all match
                let keep = plan.routes.get(&key).is_some_and(|w| {
                    r.gateway == Some(w.gateway)
                        && match w.oif {
                            Some(o) => r.oif == Some(o),
                            None => vtep.is_none_or(|v| r.oif != Some(v.ifindex)),
                        }
                        && w.onlink == (r.flags & nl::RTNH_F_ONLINK != 0)
                }) && have.insert(key);
                if !keep {
                    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                    dels.push(Request::new(
                        nl::del_route(&r),
                        format!("route {dst}/{}{via} proto {}", r.dst_len, nl::RTPROT_WEFT),
                    ));
                }
            }
        }
        for (key, w) in &plan.routes {
            if !have.contains(key) {
                let dev = if w.oif.is_some() {
                    format!(" dev {dev}")
                } else {
                    String::new()
                };
                adds.push(Request::new(
                    nl::new_peer_route(w),
                    format!("route {}/{} via {}{dev}", key.0, key.1, w.gateway),
                ));
            }
        }

        // neighbours and FDB entries: the permanent ones on weft's device
        if let Some(v) = vtep {
            let idx = v.ifindex;
            let mut have = std::collections::BTreeSet::new();
            for family in [nl::AF_INET, nl::AF_INET6] {
                let ns = node.dump(&Request::new(
                    nl::dump_neighs_on(family, idx),
                    format!("neighbours on {dev}"),
                ))?;
                for n in ns.iter().filter_map(nl::parse_neigh) {
                    let Some(ip) = n.dst else { continue };
                    if n.ifindex != idx || n.state & nl::NUD_PERMANENT == 0 {
                        continue;
                    }
                    if n.lladdr.is_some() && plan.neighs.get(&ip) == n.lladdr.as_ref() {
                        have.insert(ip);
                    } else {
                        dels.push(Request::new(
                            nl::del_neigh(idx, ip),
                            format!("neighbour {ip} on {dev}"),
                        ));
                    }
                }
            }
            for (ip, mac) in &plan.neighs {
                if !have.contains(ip) {
                    adds.push(Request::new(
                        nl::new_neigh(idx, *ip, *mac),
                        format!("neighbour {ip} lladdr {} on {dev}", format_mac(*mac)),
                    ));
                }
            }
            let mut have = std::collections::BTreeSet::new();
            let fdb = node.dump(&Request::new(
                nl::dump_neighs_on(nl::AF_BRIDGE, idx),
                format!("fdb of {dev}"),
            ))?;
            for n in fdb.iter().filter_map(nl::parse_neigh) {
                let (Some(mac), Some(ip)) = (n.lladdr, n.dst) else {
                    continue;
                };
                if n.ifindex != idx || n.state & nl::NUD_PERMANENT == 0 {
                    continue;
                }
                if plan.fdb.contains(&(mac, ip)) {
                    have.insert((mac, ip));
                } else {
                    dels.push(Request::new(
                        nl::del_fdb(idx, mac, ip),
                        format!("fdb {} dst {ip} on {dev}", format_mac(mac)),
                    ));
                }
            }
            for &(mac, ip) in &plan.fdb {
                if !have.contains(&(mac, ip)) {
                    // the FDB first: a route is usable as soon as it exists
                    adds.insert(
                        0,
                        Request::new(
                            nl::new_fdb(idx, mac, ip),
                            format!("fdb {} dst {ip} on {dev}", format_mac(mac)),
                        ),
                    );
                }
            }
        }
        Ok((dels, adds))
    }

    pub(super) fn sync_peers_inner(
        node: &mut Socket,
        mode: RoutingMode,
        dev: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError> {
        let vtep = match Self::get_link_payload(node, dev)? {
            None => None,
            Some(p) => {
                let l = nl::parse_link(&p).ok_or_else(|| DatapathError::Protocol {
                    op: "RTM_GETLINK",
                    what: format!("unparsable link {dev}"),
                })?;
                match nl::parse_vxlan(&p) {
                    Some(v) => Some(Vtep {
                        ifindex: l.index,
                        tunnel_v6: matches!(v.local, Some(IpAddr::V6(_))),
                    }),
                    None if mode == RoutingMode::Overlay => {
                        return Err(DatapathError::Protocol {
                            op: "RTM_GETLINK",
                            what: format!("overlay device {dev} is not a VXLAN device"),
                        })
                    }
                    // not weft's: leave its neighbours alone
                    None => None,
                }
            }
        };
        if mode == RoutingMode::Overlay && vtep.is_none() {
            return Err(DatapathError::LinkNotFound { name: dev.into() });
        }
        let plan = routing::plan(mode, vtep, peers)?;
        let (dels, adds) = Self::sync_requests(node, &plan, vtep, dev)?;
        let report = SyncReport {
            added: adds.len(),
            removed: dels.len(),
        };
        // deletes first (a changed next hop is a delete and an add); every
        // chunk is sent even when an earlier one failed, the first failure is
        // reported
        let mut first_err = None;
        for chunk in dels.chunks(SYNC_BATCH).chain(adds.chunks(SYNC_BATCH)) {
            if let Err(e) = node.batch(chunk) {
                if node.is_broken() {
                    return Err(e);
                }
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

impl Peers for LinuxDatapath {
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError> {
        validate_ifname(&setup.device)?;
        if let Some(d) = &setup.underlay_dev {
            validate_ifname(d)?;
        }
        let mtu = if setup.mtu != 0 {
            setup.mtu
        } else {
            setup.effective_mtu(self.underlay_mtu(setup.underlay_dev.as_deref())?.1)
        };
        let mac = self.with_node(|node| Self::ensure_overlay_inner(node, setup, mtu))?;
        tracing::debug!(device = %setup.device, mtu, mac = %format_mac(mac), "overlay device ready");
        Ok(mac)
    }

    fn sync_peers(
        &self,
        mode: RoutingMode,
        overlay_device: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError> {
        validate_ifname(overlay_device)?;
        let t0 = Instant::now();
        let r = self.with_node(|node| Self::sync_peers_inner(node, mode, overlay_device, peers));
        match &r {
            Ok(rep) => tracing::debug!(
                ?mode,
                peers = peers.len(),
                added = rep.added,
                removed = rep.removed,
                elapsed_us = t0.elapsed().as_micros() as u64,
                "synced peer routes"
            ),
            Err(e) => {
                tracing::warn!(?mode, peers = peers.len(), error = %e, "peer route sync failed")
            }
        }
        r
    }
}
