//! weft-lab-kubelet: the lab's own stand-in for a kubelet, one per lab node.
//!
//! A real kubelet needs a container runtime with images, which the lab does
//! not have; this one does only what weft's tests and demo need of a node:
//! it registers the Node and keeps its Lease and Ready condition fresh,
//! gives every pod bound to the node a network namespace attached by
//! weft-cni exactly as containerd's CRI attaches one, serves each declared
//! `containerPort` with an agnhost-like line server, writes pod status
//! (addresses, Running, Ready with readiness gates honoured), and on
//! deletion drains for the grace period before CNI DEL and deleting the
//! pod object. Stopping it leaves pods in place; a new one re-adopts them.

mod agnhost;
mod host;
mod node;
mod pods;
mod podview;
mod sandbox;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::sandbox::NodeCfg;

#[derive(Parser)]
#[command(
    name = "weft-lab-kubelet",
    version,
    about = "The weft lab's stand-in kubelet (not a real kubelet: no images, no containers)"
)]
struct Args {
    /// Credentials of this node (CN=system:node:<node>, O=system:nodes).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long)]
    node_name: String,
    /// The node's addresses, comma-separated (its underlay), IPv4 first.
    #[arg(long, value_delimiter = ',', required = true)]
    node_ip: Vec<IpAddr>,
    /// The node's network namespace (CNI plugins and hostNetwork pods run there).
    #[arg(long)]
    node_netns: PathBuf,
    /// Prefix of every pod namespace this kubelet creates (the lab's name).
    #[arg(long)]
    netns_prefix: String,
    /// Where the kubelet records its pods (to re-adopt them after a restart).
    #[arg(long)]
    state_dir: PathBuf,
    /// The node's CNI configuration directory.
    #[arg(long)]
    cni_conf_dir: PathBuf,
    /// CNI plugin directories, colon-separated.
    #[arg(long, value_delimiter = ':', required = true)]
    cni_bin_dir: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    // kube's rustls-tls brings no crypto provider of its own
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ips = args.node_ip.clone();
    ips.sort_by_key(IpAddr::is_ipv6);
    let cfg = NodeCfg {
        name: args.node_name.clone(),
        ips,
        netns: args.node_netns.clone(),
        netns_prefix: args.netns_prefix.clone(),
        state_dir: args.state_dir.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_path: args.cni_bin_dir.clone(),
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    // two workers: the kubelet waits on the API server and on CNI, it does not compute
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args.kubeconfig, cfg))
}

async fn run(kubeconfig: PathBuf, cfg: NodeCfg) -> anyhow::Result<()> {
    let kc = Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let client = Client::try_from(config).context("building the API client")?;
    let since = node::now();
    let node_uid = node::register(&client, &cfg, &since).await;
    let beat = tokio::spawn(node::heartbeat(
        client.clone(),
        cfg.clone(),
        node_uid,
        since,
    ));
    let kubelet = pods::Kubelet::new(
        host::KubeApi(client.clone()),
        host::NodeHost::new(cfg.clone()),
        cfg.ips.clone(),
    );
    let pods = tokio::spawn(kubelet.run(client, cfg.name.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("stopping; pods stay, the next kubelet re-adopts them"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; pods stay"),
        r = pods => tracing::warn!(result = ?r.err(), "the pod loop ended"),
    }
    beat.abort();
    Ok(())
}
