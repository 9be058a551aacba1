//! The node for [`LinuxDatapath`]: forwarding sysctls, the masquerade
//! table, the underlay's MTU.

use super::*;
use crate::NodeNet;

impl NodeNet for LinuxDatapath {
    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError> {
        self.in_node_ns(sysctl::enable_forwarding)??;
        crate::nat::apply(setup, self.node_ns.as_fd())
    }

    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError> {
        self.with_node(|node| {
            if let Some(name) = iface {
                validate_ifname(name)?;
                let l = Self::get_link(node, name, format!("link {name}"))?
                    .ok_or_else(|| DatapathError::LinkNotFound { name: name.into() })?;
                return Ok((l.name, l.mtu));
            }
            for (family, what) in [(nl::AF_INET, "ipv4 routes"), (nl::AF_INET6, "ipv6 routes")] {
                let routes = node.dump(&Request::new(nl::dump_routes(family), what))?;
                let best = routes
                    .iter()
                    .filter_map(nl::parse_route)
                    .filter(|r| {
                        r.dst_len == 0
                            && r.table == nl::RT_TABLE_MAIN as u32
                            && r.rtype == nl::RTN_UNICAST
                            && r.oif.is_some()
                    })
                    .min_by_key(|r| r.priority);
                if let Some(r) = best {
                    let index = r.oif.unwrap_or_default();
                    let p = node.get_one(&Request::new(
                        nl::get_link_by_index(index),
                        format!("link index {index}"),
                    ))?;
                    let l = nl::parse_link(&p).ok_or_else(|| DatapathError::Protocol {
                        op: "RTM_GETLINK",
                        what: format!("unparsable link index {index}"),
                    })?;
                    return Ok((l.name, l.mtu));
                }
            }
            Err(DatapathError::NoDefaultRoute)
        })
    }
}
