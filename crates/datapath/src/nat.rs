//! The masquerade table (`table inet weft-nat`), installed with one `nft -f -`
//! run at agent start: an atomic replacement, so re-running is idempotent.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::error::DatapathError;
use crate::NodeSetup;

/// The nftables table weft owns.
pub const TABLE: &str = "weft-nat";

const NFT_PATHS: [&str; 2] = ["/usr/sbin/nft", "/sbin/nft"];

fn set_of(nets: &[IpNet]) -> String {
    let items: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The `nft -f` script for `setup`. The table is first created (a no-op if
/// present) and deleted, then redefined, in one transaction; when masquerade
/// is off (or there are no pools) the script only removes the table.
pub fn nft_script(setup: &NodeSetup) -> String {
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !setup.nat_outgoing || setup.pools.is_empty() {
        return s;
    }
    let pools: Vec<IpNet> = setup.pools.iter().map(|p| p.trunc()).collect();
    let pools = IpNet::aggregate(&pools);
    let v4: Vec<IpNet> = pools
        .iter()
        .filter(|p| p.addr().is_ipv4())
        .copied()
        .collect();
    let v6: Vec<IpNet> = pools
        .iter()
        .filter(|p| p.addr().is_ipv6())
        .copied()
        .collect();
    s.push_str(&format!("table inet {TABLE} {{\n"));
    s.push_str("\tchain postrouting {\n");
    s.push_str("\t\ttype nat hook postrouting priority 100; policy accept;\n");
    if !v4.is_empty() {
        let set = set_of(&v4);
        s.push_str(&format!(
            "\t\tip saddr {set} ip daddr != {set} masquerade\n"
        ));
    }
    if !v6.is_empty() {
        let set = set_of(&v6);
        s.push_str(&format!(
            "\t\tip6 saddr {set} ip6 daddr != {set} masquerade\n"
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

fn nft_binary() -> Option<&'static str> {
    NFT_PATHS.into_iter().find(|p| Path::new(p).exists())
}

/// Applies [`nft_script`] inside the netns behind `netns`.
pub(crate) fn apply(setup: &NodeSetup, netns: BorrowedFd<'_>) -> Result<(), DatapathError> {
    let Some(nft) = nft_binary() else {
        if setup.nat_outgoing {
            return Err(DatapathError::Command {
                cmd: "nft -f -".into(),
                status: "not found".into(),
                stderr: format!("natOutgoing needs nft, looked for {}", NFT_PATHS.join(", ")),
            });
        }
        tracing::debug!("nft not installed; no masquerade table to remove");
        return Ok(());
    };
    let script = nft_script(setup);
    let cmd_text = format!("{nft} -f -");
    let mut cmd = Command::new(nft);
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = crate::netns::spawn_in_fd(&mut cmd, netns)
        .map_err(|e| DatapathError::syscall("spawn", cmd_text.clone(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| DatapathError::syscall("write stdin of", cmd_text.clone(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DatapathError::syscall("wait for", cmd_text.clone(), e))?;
    if !out.status.success() {
        return Err(DatapathError::Command {
            cmd: cmd_text,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    tracing::debug!(
        nat_outgoing = setup.nat_outgoing,
        "nft table {TABLE} applied"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_masquerades_per_family() {
        let s = nft_script(&NodeSetup {
            pools: vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.245.0.1/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
            ],
            nat_outgoing: true,
        });
        assert_eq!(
            s,
            "add table inet weft-nat\n\
             delete table inet weft-nat\n\
             table inet weft-nat {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority 100; policy accept;\n\
             \t\tip saddr { 10.244.0.0/15 } ip daddr != { 10.244.0.0/15 } masquerade\n\
             \t\tip6 saddr { fd00:10:244::/56 } ip6 daddr != { fd00:10:244::/56 } masquerade\n\
             \t}\n\
             }\n"
        );
    }

    #[test]
    fn script_without_nat_only_removes() {
        let s = nft_script(&NodeSetup {
            pools: vec!["10.244.0.0/16".parse().unwrap()],
            nat_outgoing: false,
        });
        assert_eq!(s, "add table inet weft-nat\ndelete table inet weft-nat\n");
    }

    #[test]
    fn overlapping_pools_are_merged() {
        let s = nft_script(&NodeSetup {
            pools: vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.244.1.0/24".parse().unwrap(),
            ],
            nat_outgoing: true,
        });
        assert!(s.contains("ip saddr { 10.244.0.0/16 }"), "{s}");
        assert!(!s.contains("ip6"));
    }
}
