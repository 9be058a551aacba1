//! `weft policy preview -f FILE`: what candidate NetworkPolicies would
//! newly drop (and newly let through) among the flows weftd recorded, asked
//! of every node of a lab at once (each replays its own flow ring), merged.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use weft_api::{paths, Peer, PolicyPreview, PolicyPreviewRequest, PreviewFlow};

use crate::observe::Target;
use crate::output::{outln, table};
use crate::policy_cmd::post;
use crate::Format;

/// The NetworkPolicy objects of a YAML or JSON file: one or more
/// documents, each a NetworkPolicy or a List of them; a missing namespace
/// is `namespace`.
pub fn candidates(text: &str, namespace: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: serde_json::Value =
            serde::Deserialize::deserialize(doc).context("reading the policy file")?;
        let items = match v.get("kind").and_then(|k| k.as_str()) {
            None if v.is_null() => continue,
            Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![v],
        };
        for mut item in items {
            let kind = item.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind != "NetworkPolicy" {
                bail!("{kind:?} is not a NetworkPolicy; preview takes networking.k8s.io/v1 NetworkPolicy documents");
            }
            let meta = item
                .get_mut("metadata")
                .and_then(|m| m.as_object_mut())
                .context("a NetworkPolicy without metadata; give it metadata.name")?;
            meta.entry("namespace")
                .or_insert_with(|| namespace.to_string().into());
            out.push(item);
        }
    }
    if out.is_empty() {
        bail!("no NetworkPolicy in the file");
    }
    Ok(out)
}

fn peer(p: &Peer) -> String {
    let ip = p.ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
    match (&p.namespace, &p.pod) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod} ({ip})"),
        _ => ip,
    }
}

fn row(node: &str, f: &PreviewFlow) -> Vec<String> {
    vec![
        node.to_string(),
        peer(&f.flow.source),
        format!(
            "{}:{}/{}",
            peer(&f.flow.destination),
            f.flow.destination.port,
            f.flow.protocol.to_ascii_lowercase()
        ),
        f.count.to_string(),
        format!("{} -> {}", f.before, f.after),
        f.decided_by.clone(),
    ]
}

pub fn run(
    targets: Vec<Target>,
    file: &Path,
    namespace: &str,
    fmt: Format,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let req = PolicyPreviewRequest {
        policies: candidates(&text, namespace)?,
    };
    let mut previews = Vec::new();
    for t in &targets {
        let p: PolicyPreview = post(&t.socket, paths::POLICY_PREVIEW, &req)
            .with_context(|| format!("node {}", t.node))?;
        previews.push(p);
    }
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&previews)?);
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "NODE",
        "SOURCE",
        "DESTINATION",
        "SEEN",
        "VERDICT",
        "DECIDED BY",
    ];
    let replayed: usize = previews.iter().map(|p| p.replayed).sum();
    let dropped: Vec<Vec<String>> = previews
        .iter()
        .flat_map(|p| p.newly_dropped.iter().map(|f| row(&p.node, f)))
        .collect();
    let allowed: Vec<Vec<String>> = previews
        .iter()
        .flat_map(|p| p.newly_allowed.iter().map(|f| row(&p.node, f)))
        .collect();
    outln!(
        "{replayed} distinct recorded flows replayed on {} node(s): {} newly dropped, {} newly allowed",
        previews.len(),
        dropped.len(),
        allowed.len()
    );
    if !dropped.is_empty() {
        outln!("\nnewly dropped:");
        table(&header, &dropped);
    }
    if !allowed.is_empty() {
        outln!("\nnewly allowed:");
        table(&header, &allowed);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_lists_become_candidates_with_a_namespace() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n---\n---\nkind: List\nitems:\n- kind: NetworkPolicy\n  metadata: {name: b, namespace: y}\n  spec: {podSelector: {}}\n";
        let got = candidates(text, "x").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["metadata"]["namespace"], "x");
        assert_eq!(got[1]["metadata"]["namespace"], "y");
        assert!(candidates("kind: Service\nmetadata: {name: s}\n", "x").is_err());
        assert!(candidates("", "x").is_err());
    }
}
