//! Pod links for [`LinuxDatapath`]: the routed veth of each pod (created in
//! one RTM_NEWLINK, configured in two batches), its check and repair, the
//! host-side listing.

use super::*;
use crate::Links;

/// What is missing on the host side of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostItem {
    Route(IpAddr),
    Neigh(IpAddr),
}

impl LinuxDatapath {
    fn attach_inner(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.create_inner(link)?;
        self.configure_inner(link)
    }

    /// Steps 1-2 of attach: create the pair with the peer directly in the pod
    /// netns; a stale host link of the same name (a crash half-way) is
    /// replaced. The pod-side socket and the peer are kept for configure.
    fn create_inner(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        validate_ifname(&link.ifname)?;
        validate_ifname(&link.host_ifname)?;
        let host = link.host_ifname.as_str();
        self.with_node(|node| {
            let pod_fd = netns::open_pod(&link.netns, self.node_id)?;
            let mut pod = netns::with_netns(pod_fd.as_fd(), &link.netns, Socket::open)??;
            let create = Request::new(
                nl::new_veth(&nl::VethSpec {
                    name: host,
                    mac: HOST_VETH_MAC,
                    mtu: link.mtu,
                    peer_name: &link.ifname,
                    peer_netns_fd: pod_fd.as_raw_fd(),
                }),
                format!("veth {host}"),
            );
            // try first and clean up only on a clash: the common case costs
            // one round trip, not a speculative delete before every create
            if let Err(e) = node.request(&create) {
                if !is_errno(&e, libc::EEXIST) {
                    return Err(e);
                }
                // a stale host link of this name (its peer may be the very
                // eth0 that clashed): remove it and try once more
                let retried = if Self::del_link(node, host)? {
                    tracing::info!(host, "replaced stale host veth");
                    node.request(&create)
                } else {
                    Err(e)
                };
                if let Err(e) = retried {
                    let what = format!("link {} in {}", link.ifname, link.netns.display());
                    if is_errno(&e, libc::EEXIST)
                        && Self::get_link(&mut pod, &link.ifname, what)?.is_some()
                    {
                        return Err(DatapathError::InterfaceExists {
                            ifname: link.ifname.clone(),
                            netns: link.netns.clone(),
                        });
                    }
                    return Err(e);
                }
            }
            let ns = link.netns.display();
            let ifname = &link.ifname;
            let peer =
                Self::get_link(&mut pod, ifname, format!("link {ifname} in {ns}")).and_then(|p| {
                    p.ok_or_else(|| DatapathError::LinkNotFound {
                        name: format!("{ifname} in {ns}"),
                    })
                });
            match peer {
                Ok(peer) => {
                    let attached = Attached {
                        pod_mac: peer.mac.unwrap_or([0; 6]),
                        host_ifindex: peer.link.unwrap_or(0),
                    };
                    self.handoff
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            host.to_string(),
                            Handoff {
                                netns: link.netns.clone(),
                                pod,
                                peer,
                            },
                        );
                    Ok(attached)
                }
                Err(e) => {
                    let _ = Self::del_link(node, host);
                    Err(e)
                }
            }
        })
    }

    /// Steps 3-5 of attach on a pair `create_inner` made; deletes it on failure.
    fn configure_inner(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let host = link.host_ifname.as_str();
        let handoff = self
            .handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host)
            .filter(|h| h.netns == link.netns);
        self.with_node(|node| {
            let configured = match handoff {
                Some(mut h) => Self::configure(node, &mut h.pod, link, Some(h.peer)),
                None => netns::open_pod(&link.netns, self.node_id).and_then(|pod_fd| {
                    let mut pod = netns::with_netns(pod_fd.as_fd(), &link.netns, Socket::open)??;
                    Self::configure(node, &mut pod, link, None)
                }),
            };
            match configured {
                Ok(a) => Ok(a),
                Err(e) => {
                    if let Err(undo) = Self::del_link(node, host) {
                        tracing::warn!(host, error = %undo, "cannot remove half-made veth");
                    }
                    Err(e)
                }
            }
        })
    }

    fn configure(
        node: &mut Socket,
        pod: &mut Socket,
        link: &PodLink,
        known_peer: Option<LinkMsg>,
    ) -> Result<Attached, DatapathError> {
        let ns = link.netns.display();
        let ifname = &link.ifname;
        let host = &link.host_ifname;
        let peer =
            match known_peer {
                Some(p) => p,
                None => Self::get_link(pod, ifname, format!("link {ifname} in {ns}"))?.ok_or_else(
                    || DatapathError::LinkNotFound {
                        name: format!("{ifname} in {ns}"),
                    },
                )?,
            };
        let pod_mac = peer.mac.ok_or_else(|| DatapathError::Protocol {
            op: "RTM_GETLINK",
            what: format!("link {ifname} in {ns} has no mac"),
        })?;
        let host_ifindex = match peer.link {
            Some(i) if i != 0 => i,
            _ => {
                Self::get_link(node, host, format!("veth {host}"))?
                    .ok_or_else(|| DatapathError::LinkNotFound { name: host.clone() })?
                    .index
            }
        };
        let idx = peer.index;

        // pod side: eth0 and lo up, addresses, gateway routes, gateway neighbours
        let mut reqs = vec![
            Request::new(
                nl::set_link_up(idx as i32),
                format!("link {ifname} in {ns}"),
            ),
            Request::new(nl::set_link_up(1), format!("link lo in {ns}")),
        ];
        for ip in pod_ips(link) {
            let len = prefix_len(ip);
            reqs.push(Request::new(
                nl::new_addr(idx, ip, len),
                format!("address {ip}/{len} on {ifname} in {ns}"),
            ));
        }
        // per family: the default route via the link-local gateway and a
        // permanent neighbour for it (IPv4 also needs an on-link route to
        // its gateway; IPv6's fe80::1 is on-link by definition)
        let gateways = [
            (link.ipv4.is_some(), IpAddr::V4(GATEWAY_V4)),
            (link.ipv6.is_some(), IpAddr::V6(GATEWAY_V6)),
        ];
        for gw in gateways.into_iter().filter(|(on, _)| *on).map(|(_, gw)| gw) {
            if gw.is_ipv4() {
                reqs.push(Request::new(
                    nl::new_route(&RouteSpec::host(gw, idx)),
                    format!("route {gw}/32 dev {ifname} in {ns}"),
                ));
            }
            reqs.push(Request::new(
                nl::new_route(&RouteSpec::default_via(gw, idx)),
                format!("route default via {gw} dev {ifname} in {ns}"),
            ));
            reqs.push(Request::new(
                nl::new_neigh(idx, gw, HOST_VETH_MAC),
                format!("neighbour {gw} on {ifname} in {ns}"),
            ));
        }
        pod.batch(&reqs)?;

        // host side: a host route and a permanent neighbour per address
        let items: Vec<HostItem> = pod_ips(link)
            .into_iter()
            .flat_map(|ip| [HostItem::Route(ip), HostItem::Neigh(ip)])
            .collect();
        node.batch(&host_requests(&items, host_ifindex, host, pod_mac))?;
        Ok(Attached {
            pod_mac,
            host_ifindex,
        })
    }

    /// The host link of a pod and what is missing next to it.
    fn host_state(
        node: &mut Socket,
        link: &PodLink,
        pod_mac: [u8; 6],
    ) -> Result<(Option<LinkMsg>, Vec<HostItem>), DatapathError> {
        let host = &link.host_ifname;
        let Some(hl) = Self::get_link(node, host, format!("veth {host}"))? else {
            return Ok((None, Vec::new()));
        };
        let mut missing = Vec::new();
        for ip in pod_ips(link) {
            let r = node.get_one(&Request::new(
                nl::get_route_fibmatch(ip),
                format!("route {ip}/{}", prefix_len(ip)),
            ));
            let present = match r {
                Ok(p) => nl::parse_route(&p).is_some_and(|r| {
                    r.dst_len == prefix_len(ip)
                        && r.oif == Some(hl.index)
                        && r.table == nl::RT_TABLE_MAIN as u32
                }),
                Err(e) if not_found(&e) => false,
                Err(e) => return Err(e),
            };
            if !present {
                missing.push(HostItem::Route(ip));
            }
            let r = node.get_one(&Request::new(
                nl::get_neigh(hl.index, ip),
                format!("neighbour {ip} on {host}"),
            ));
            let present = match r {
                Ok(p) => nl::parse_neigh(&p)
                    .is_some_and(|n| n.lladdr == Some(pod_mac) && n.state & nl::NUD_PERMANENT != 0),
                Err(e) if not_found(&e) => false,
                Err(e) => return Err(e),
            };
            if !present {
                missing.push(HostItem::Neigh(ip));
            }
        }
        Ok((Some(hl), missing))
    }

    fn check_pod(
        link: &PodLink,
        pod_mac: [u8; 6],
        problems: &mut Vec<String>,
    ) -> Result<(), DatapathError> {
        let ns = link.netns.display();
        let ifname = &link.ifname;
        let pod_fd = match netns::open(&link.netns) {
            Ok(fd) => fd,
            Err(DatapathError::NetnsGone { .. }) => {
                problems.push(format!("netns {ns} does not exist"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut pod = netns::with_netns(pod_fd.as_fd(), &link.netns, Socket::open)??;
        let Some(l) = Self::get_link(&mut pod, ifname, format!("link {ifname} in {ns}"))? else {
            problems.push(format!("interface {ifname} missing in {ns}"));
            return Ok(());
        };
        if !l.is_up() {
            problems.push(format!("interface {ifname} in {ns} is down"));
        }
        if l.mac != Some(pod_mac) {
            problems.push(format!(
                "interface {ifname} in {ns} has mac {}, expected {}",
                l.mac.map(format_mac).unwrap_or_else(|| "none".into()),
                format_mac(pod_mac)
            ));
        }
        if link.mtu != 0 && l.mtu != link.mtu {
            problems.push(format!(
                "interface {ifname} in {ns} has mtu {}, expected {}",
                l.mtu, link.mtu
            ));
        }
        for ip in pod_ips(link) {
            let family = if ip.is_ipv4() {
                nl::AF_INET
            } else {
                nl::AF_INET6
            };
            let addrs = pod.dump(&Request::new(
                nl::dump_addrs(family, l.index),
                format!("addresses of {ifname} in {ns}"),
            ))?;
            let len = prefix_len(ip);
            let found = addrs
                .iter()
                .filter_map(nl::parse_addr)
                .any(|a| a.index == l.index && a.addr == ip && a.prefixlen == len);
            if !found {
                problems.push(format!("address {ip}/{len} missing on {ifname} in {ns}"));
            }
            let gw = if ip.is_ipv4() {
                IpAddr::V4(GATEWAY_V4)
            } else {
                IpAddr::V6(GATEWAY_V6)
            };
            let routes = pod.dump(&Request::new(
                nl::dump_routes(family),
                format!("routes in {ns}"),
            ))?;
            let found = routes.iter().filter_map(nl::parse_route).any(|r| {
                r.dst_len == 0
                    && r.table == nl::RT_TABLE_MAIN as u32
                    && r.gateway == Some(gw)
                    && r.oif == Some(l.index)
            });
            if !found {
                problems.push(format!(
                    "default route via {gw} dev {ifname} missing in {ns}"
                ));
            }
            let neigh = match pod.get_one(&Request::new(
                nl::get_neigh(l.index, gw),
                format!("neighbour {gw} on {ifname} in {ns}"),
            )) {
                Ok(p) => nl::parse_neigh(&p),
                Err(e) if not_found(&e) => None,
                Err(e) => return Err(e),
            };
            if !neigh.is_some_and(|n| {
                n.lladdr == Some(HOST_VETH_MAC) && n.state & nl::NUD_PERMANENT != 0
            }) {
                problems.push(format!(
                    "neighbour {gw} lladdr {} missing on {ifname} in {ns}",
                    format_mac(HOST_VETH_MAC)
                ));
            }
        }
        Ok(())
    }
}

fn not_found(e: &DatapathError) -> bool {
    [
        libc::ENOENT,
        libc::ENETUNREACH,
        libc::EHOSTUNREACH,
        libc::ESRCH,
        libc::ENODEV,
    ]
    .iter()
    .any(|&n| is_errno(e, n))
}

fn host_requests(items: &[HostItem], index: u32, host: &str, pod_mac: [u8; 6]) -> Vec<Request> {
    items
        .iter()
        .map(|item| match *item {
            HostItem::Route(ip) => Request::new(
                nl::new_route(&RouteSpec::host(ip, index)),
                format!("route {ip}/{} dev {host}", prefix_len(ip)),
            ),
            HostItem::Neigh(ip) => Request::new(
                nl::new_neigh(index, ip, pod_mac),
                format!("neighbour {ip} on {host}"),
            ),
        })
        .collect()
}

impl Links for LinuxDatapath {
    fn attach(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let t0 = Instant::now();
        let r = self.attach_inner(link);
        tracing::debug!(
            host = %link.host_ifname,
            netns = %link.netns.display(),
            elapsed_us = t0.elapsed().as_micros() as u64,
            ok = r.is_ok(),
            "attach"
        );
        r
    }

    fn create_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.create_inner(link)
    }

    fn configure_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        validate_ifname(&link.ifname)?;
        validate_ifname(&link.host_ifname)?;
        self.configure_inner(link)
    }

    fn check_pod_netns(&self, netns: &Path) -> Result<(), DatapathError> {
        netns::open_pod(netns, self.node_id).map(drop)
    }

    fn detach(&self, host_ifname: &str) -> Result<(), DatapathError> {
        validate_ifname(host_ifname)?;
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host_ifname);
        let t0 = Instant::now();
        let existed = self.with_node(|node| Self::del_link(node, host_ifname))?;
        tracing::debug!(
            host = host_ifname,
            existed,
            elapsed_us = t0.elapsed().as_micros() as u64,
            "detach"
        );
        Ok(())
    }

    fn check(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<Vec<String>, DatapathError> {
        validate_ifname(&link.ifname)?;
        validate_ifname(&link.host_ifname)?;
        let mut problems = Vec::new();
        Self::check_pod(link, pod_mac, &mut problems)?;
        let host = &link.host_ifname;
        let (hl, missing) = self.with_node(|node| Self::host_state(node, link, pod_mac))?;
        match hl {
            None => problems.push(format!("host interface {host} missing")),
            Some(hl) => {
                if !hl.is_up() {
                    problems.push(format!("host interface {host} is down"));
                }
                for item in missing {
                    problems.push(match item {
                        HostItem::Route(ip) => {
                            format!("host route {ip}/{} via {host} missing", prefix_len(ip))
                        }
                        HostItem::Neigh(ip) => format!(
                            "host neighbour {ip} lladdr {} on {host} missing",
                            format_mac(pod_mac)
                        ),
                    });
                }
            }
        }
        Ok(problems)
    }

    fn restore_host_side(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<bool, DatapathError> {
        validate_ifname(&link.host_ifname)?;
        let host = &link.host_ifname;
        self.with_node(|node| {
            let (hl, missing) = Self::host_state(node, link, pod_mac)?;
            let hl = hl.ok_or_else(|| DatapathError::LinkNotFound { name: host.clone() })?;
            let mut reqs = Vec::new();
            if !hl.is_up() {
                reqs.push(Request::new(
                    nl::set_link_up(hl.index as i32),
                    format!("veth {host}"),
                ));
            }
            reqs.extend(host_requests(&missing, hl.index, host, pod_mac));
            if reqs.is_empty() {
                return Ok(false);
            }
            node.batch(&reqs)?;
            tracing::info!(host = %host, restored = reqs.len(), "restored host side");
            Ok(true)
        })
    }

    fn list_host_links(&self, prefix: &str) -> Result<Vec<HostLink>, DatapathError> {
        let msgs = self.with_node(|node| node.dump(&Request::new(nl::dump_links(), "links")))?;
        Ok(msgs
            .iter()
            .filter_map(nl::parse_link)
            .filter(|l| l.kind.as_deref() == Some("veth") && l.name.starts_with(prefix))
            .map(|l| HostLink {
                name: l.name,
                ifindex: l.index,
                peer_netnsid: l.link_netnsid.filter(|&id| id >= 0),
            })
            .collect())
    }
}
