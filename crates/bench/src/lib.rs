//! weft's benchmarks, each a lab driven from outside (`weft bench ...`):
//!
//! - [`cni`]: ADD/DEL latency and a burst, weft against the reference
//!   plugins, with a kernel-floor row;
//! - [`ipam`]: a 1000-pod burst on a 3-member etcd, group commit on and off;
//! - [`dataplane`]: iperf3 and TCP round trips through weft beside raw veth
//!   and raw VXLAN, with `--fastpath off` as a row of its own;
//!
//! and what they share: [`report`] (the machine, latency statistics, /proc
//! readings, writing the JSON report and its chart) and [`chart`] (every
//! chart, drawn with plotters). A new benchmark (Services: `services.rs`) is
//! one more module here with a `run`, a `render_table` and a `chart`.

pub mod chart;
pub mod cni;
pub mod dataplane;
pub mod ipam;
pub mod policy;
pub mod report;
pub mod services;
