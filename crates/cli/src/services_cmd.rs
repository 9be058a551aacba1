//! `weft services`: what the node's Service load balancer holds.

use std::path::Path;
use std::process::ExitCode;

use weft_api::{paths, ServicesView};

use crate::output::{outln, table};
use crate::views::get;
use crate::Format;

pub fn run(socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    let v: ServicesView = get(socket, paths::SERVICES)?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if v.mode != "on" {
        outln!("Service load balancing is off on this node (weftd --services off): kube-proxy, if it runs, keeps the Services");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}", summary(&v));
    outln!();
    let rows: Vec<Vec<String>> = v
        .frontends
        .iter()
        .map(|f| {
            let backends = if f.backends.is_empty() {
                "-".to_string()
            } else {
                f.backends
                    .iter()
                    .map(|b| {
                        let id = b.id.map(|i| format!("#{i} ")).unwrap_or_default();
                        let st = if b.state == "active" {
                            ""
                        } else {
                            " (terminating)"
                        };
                        format!("{id}{}{st}", b.address)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                f.service.clone(),
                if f.port_name.is_empty() {
                    "-".into()
                } else {
                    f.port_name.clone()
                },
                f.address.clone(),
                format!("{}/{}", f.kind, f.scope),
                f.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                if f.flags.is_empty() {
                    "-".into()
                } else {
                    f.flags.join("+")
                },
                if f.programmed {
                    "yes".into()
                } else {
                    "pending".into()
                },
                backends,
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "PORT", "FRONTEND", "KIND", "ID", "FLAGS", "IN MAPS", "BACKENDS",
        ],
        &rows,
    );
    for s in &v.skipped {
        outln!("left alone: {s}");
    }
    for (svc, why) in &v.reconcile.refused {
        outln!("refused: {svc}: {why}");
    }
    if !v.affinity.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = v
            .affinity
            .iter()
            .map(|a| {
                vec![
                    a.client.clone(),
                    a.service_id.to_string(),
                    a.backend_id.to_string(),
                    format!("{} s", a.idle_seconds),
                ]
            })
            .collect();
        table(
            &["AFFINITY CLIENT", "SERVICE ID", "BACKEND ID", "IDLE"],
            &rows,
        );
    }
    if !v.counters.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = v
            .counters
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        table(&["COUNTER", "VALUE"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(v: &ServicesView) -> String {
    let state = match (v.synced, v.converged) {
        (false, _) => "waiting for the Service and EndpointSlice watches to list once".to_string(),
        (true, true) => "in step with the API".to_string(),
        (true, false) => format!(
            "behind the API (retrying{})",
            v.reconcile
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    };
    let maps: Vec<String> = v.maps.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "services: {state}; {} frontends; maps: {}; {} rounds, {} writes, {} failed",
        v.frontends.len(),
        maps.join(", "),
        v.reconcile.rounds,
        v.reconcile.ops_applied,
        v.reconcile.ops_failed
    )
}
