//! The kernel floor beside each burst: the same pods' routed veths made
//! in-process over netlink (`weft bench cni`'s floor, [`kernel_floor_op`]),
//! on the same nodes with the same ADDs in flight per node, in the same lab
//! just before weft's burst: no exec, no IPAM, no agent, no store.

use super::*;

use crate::cni::kernel_floor_op;

/// What the floor's burst took.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    pub seconds: f64,
    pub pods_per_second: f64,
    /// The machine's busy CPU-seconds during it (the kernel's work and this
    /// process's netlink calls).
    pub cpu_busy_seconds: f64,
    pub failed: usize,
}

/// Makes every pod's veth in its namespace, per node `concurrency` at a
/// time, all at once; then removes them again (not timed) and waits until
/// the kernel is done with them.
pub(super) fn kernel_floor(
    lab: &Lab,
    pods: &[PodSlot],
    queues: &[Vec<usize>],
    concurrency: usize,
) -> anyhow::Result<FloorRun> {
    let dps = lab
        .nodes()
        .iter()
        .map(|n| {
            Ok(weft_datapath::netns::run_in(
                &n.netns,
                weft_datapath::LinuxDatapath::new,
            )??)
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("netlink in the lab's nodes")?;
    let failed = AtomicUsize::new(0);
    let before = CpuSample::take(&[]);
    let seconds = run_per_node(queues, concurrency, |i| {
        let p = &pods[i];
        if kernel_floor_op(&dps[p.node], "ADD", &format!("f{i}"), &p.netns, i).is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    });
    let span = CpuSample::take(&[]).since(&before);
    run_per_node(queues, concurrency, |i| {
        let p = &pods[i];
        let _ = kernel_floor_op(&dps[p.node], "DEL", &format!("f{i}"), &p.netns, i);
    });
    let failed = failed.into_inner();
    let made = pods.len() - failed;
    Ok(FloorRun {
        seconds,
        pods_per_second: made as f64 / seconds.max(1e-9),
        cpu_busy_seconds: span.busy_seconds,
        failed,
    })
}
