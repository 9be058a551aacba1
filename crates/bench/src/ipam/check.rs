//! Checking what the burst left: every address the ADDs returned listed
//! once, for its own container, in every node's view.

use super::*;

/// The addresses of a CNI ADD result.
pub(super) fn result_ips(v: &serde_json::Value) -> Vec<IpAddr> {
    v["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|s| s.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Compares every node's `GET /v1/ipam` (a fresh listing of the whole
/// cluster's blocks) with the ADD results: each of our addresses listed
/// exactly once, for the container whose ADD returned it, and no container
/// of ours holding an address its ADD did not return.
pub(super) fn check_views(
    lab: &Lab,
    pods: &[PodSlot],
    held: &HashMap<IpAddr, usize>,
) -> (usize, Vec<String>, usize) {
    let ours: HashMap<&str, usize> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.cid.as_str(), i))
        .collect();
    let mut problems = Vec::new();
    let mut mismatches = 0;
    let mut checked = 0;
    let mut note = |problems: &mut Vec<String>, m: String| {
        mismatches += 1;
        if problems.len() < 10 {
            problems.push(m);
        }
    };
    for n in lab.nodes() {
        let view = weft_api::http::call(
            &n.socket,
            "GET",
            weft_api::paths::IPAM,
            b"",
            Duration::from_secs(30),
        )
        .map_err(anyhow::Error::from)
        .and_then(|r| {
            if r.status != 200 {
                bail!("status {}", r.status);
            }
            Ok(serde_json::from_slice::<weft_api::IpamView>(&r.body)?)
        });
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                note(&mut problems, format!("{}: GET /v1/ipam: {e:#}", n.name));
                continue;
            }
        };
        checked += 1;
        let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for a in &view.allocations {
            if let Some(prev) = seen.insert(a.address, &a.container_id) {
                note(
                    &mut problems,
                    format!(
                        "{}: {} listed twice ({prev} and {})",
                        n.name, a.address, a.container_id
                    ),
                );
            }
            match (ours.get(a.container_id.as_str()), held.get(&a.address)) {
                (Some(&i), Some(&j)) if i == j => {}
                (Some(_), _) => note(
                    &mut problems,
                    format!(
                        "{}: {} held by {} but no ADD result of it says so",
                        n.name, a.address, a.container_id
                    ),
                ),
                (None, Some(&j)) => note(
                    &mut problems,
                    format!(
                        "{}: {} held by {} but returned to {}",
                        n.name, a.address, a.container_id, pods[j].cid
                    ),
                ),
                (None, None) => {}
            }
        }
        for (addr, &i) in held {
            if !seen.contains_key(addr) {
                note(
                    &mut problems,
                    format!(
                        "{}: {addr} (returned to {}) is not in the view",
                        n.name, pods[i].cid
                    ),
                );
            }
        }
    }
    (checked, problems, mismatches)
}
