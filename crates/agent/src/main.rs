use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;
use weft_agent::config::AgentConfig;

fn main() {
    let cfg = AgentConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&cfg.log))
        .with_writer(std::io::stderr)
        // colour only for a person at a terminal: logs in files and the
        // journal stay plain text (greppable, no escape codes)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run(&cfg) {
        tracing::error!("{e:#}");
        eprintln!("weftd: {e:#}");
        std::process::exit(1);
    }
}

/// The log filter. kube's client logs every failed connection as an error;
/// while the API server is away weftd says so once itself (k8s.rs), so
/// kube's lines are off unless the filter names kube.
fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if spec.contains("kube") {
        return filter;
    }
    match "kube_client=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

fn run(cfg: &AgentConfig) -> anyhow::Result<()> {
    if let Some(point) = &cfg.fault_point {
        weft_agent::fault::arm(point);
    }
    let agent = weft_agent::build(cfg)?;
    let listener = weft_agent::server::bind(&cfg.socket)?;
    weft_agent::start_spool_replay(agent.clone(), cfg.spool_dir.clone(), Duration::from_secs(2));
    weft_agent::fastpath::start_sync_loop(agent.clone());
    weft_agent::start_gc_loop(
        agent.clone(),
        Duration::from_secs(cfg.gc_interval_seconds.max(1)),
    );
    // never waits for the API server: CNI is served while it is away
    weft_agent::k8s::start(cfg, &agent)?;
    if let Some(addr) = cfg.metrics_listen {
        weft_agent::metrics::start(addr, &agent)?;
    }
    weft_agent::flows::start_remote(cfg, &agent)?;
    // after the adapter: policy reads its view
    weft_agent::policy::start(cfg.policy, &agent)?;
    weft_agent::services::start(
        cfg,
        &agent,
        weft_agent::services::kernel::opener(agent.services().fast_path()),
    )?;
    if let Some(addr) = cfg.health_listen {
        weft_agent::health::start(addr, agent.clone(), cfg.socket.clone())?;
    }
    tracing::info!(socket = %cfg.socket.display(), node = %agent.facts().node,
        pod_mtu = agent.facts().pod_mtu, endpoints = agent.endpoints().len(), "weftd ready");
    weft_agent::server::serve(listener, agent)?;
    Ok(())
}
