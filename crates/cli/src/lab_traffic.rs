//! `weft lab traffic`: steady traffic from a pod or node to an address
//! for a bounded time (see `weft_lab::traffic`), ended early once the
//! caller's --until-* conditions hold.

use std::process::ExitCode;
use std::time::Duration;

use weft_lab::traffic::{TrafficSpec, Until};
use weft_lab::Lab;

use crate::output::outln;
use crate::Format;

#[derive(clap::Args)]
pub struct TrafficArgs {
    #[arg(long, default_value = "weft-demo")]
    pub name: String,
    /// NAMESPACE/POD or node:NODE.
    #[arg(long)]
    pub from: String,
    /// NAMESPACE/POD, node:NODE, or an address.
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub protocol: String,
    /// How long (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Milliseconds between new connections.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Long-lived connections, each exchanging a line every round.
    #[arg(long, default_value_t = 0)]
    pub persistent: usize,
    /// The line each exchange sends.
    #[arg(long, default_value = "hostname")]
    pub send: String,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// UDP: each long-lived flow keeps this source port (and the next
    /// ones), a new socket per exchange, like `nc -u -p PORT` in a loop.
    #[arg(long)]
    pub source_port: Option<u16>,
    /// End once each of these answers was seen (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub until_answered: Vec<String>,
    /// End once this many new connections worked.
    #[arg(long, default_value_t = 0)]
    pub until_ok: u64,
    /// End once long-lived flows changed backend this many times.
    #[arg(long, default_value_t = 0)]
    pub until_switched: u64,
    /// End only once stdin is closed or gives a line (the caller's own
    /// event is over), and the other --until-* conditions hold.
    #[arg(long)]
    pub until_released: bool,
}

pub fn run(a: TrafficArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    let lab = Lab::load(&a.name)?;
    let from_ns = weft_lab::kubelet::netns_of(&lab, &a.from)?;
    // a client of a node (or its pod) runs in that node's cgroup, where
    // weft's socket-level load balancing sees it
    lab.enter_cgroup_of(&a.from)?;
    let released = a.until_released.then(weft_lab::traffic::released_by_stdin);
    let spec = TrafficSpec {
        to: std::net::SocketAddr::new(weft_lab::kubelet::address_of(&lab, &a.to)?, a.port),
        transport: if a.protocol == "udp" {
            weft_lab::probe::Transport::Udp
        } else {
            weft_lab::probe::Transport::Tcp
        },
        duration: Duration::from_secs_f64(a.seconds.clamp(0.0, 600.0)),
        interval: Duration::from_millis(a.interval_ms),
        persistent: a.persistent,
        line: a.send,
        timeout: Duration::from_millis(a.timeout_ms),
        source_port: a.source_port,
        until: Until {
            answered: a.until_answered,
            ok: a.until_ok,
            switched: a.until_switched,
            released,
        },
    };
    let r = weft_lab::traffic::run(&from_ns, &spec)?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "{} of {} exchanges answered in {:.1} s{}; failures {:?}; answers {:?}; \
             connect p50 {} µs p99 {} µs; longest gap {} ms; long-lived {} opened, {} broken",
            r.ok,
            r.attempts,
            r.seconds,
            if r.until_met { " (conditions met)" } else { "" },
            r.failures,
            r.answers,
            r.connect_us_p50,
            r.connect_us_p99,
            r.max_gap_ms,
            r.persistent_opened,
            r.persistent_broken
        );
    }
    Ok(ExitCode::SUCCESS)
}
