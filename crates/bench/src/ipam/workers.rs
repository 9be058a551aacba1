//! Running the burst's work on many threads at once.

use super::*;

/// Runs `work(i)` for every index of every node's queue, `per_node` workers
/// on each node, all released at once; returns the seconds from the release
/// until the last one finished.
pub(super) fn run_per_node(
    queues: &[Vec<usize>],
    per_node: usize,
    work: impl Fn(usize) + Sync,
) -> f64 {
    let workers: usize = queues.iter().map(|q| per_node.min(q.len())).sum();
    let gate = Barrier::new(workers + 1);
    let next: Vec<AtomicUsize> = queues.iter().map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        for (n, q) in queues.iter().enumerate() {
            for _ in 0..per_node.min(q.len()) {
                let (gate, next, work) = (&gate, &next[n], &work);
                s.spawn(move || {
                    gate.wait();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = q.get(k) else { break };
                        work(i);
                    }
                });
            }
        }
        gate.wait();
        let start = Instant::now();
        // the scope joins every worker before it returns
        start
    })
    .elapsed()
    .as_secs_f64()
}

/// `f(i)` for `0..n` on `workers` threads; the results in order.
pub(super) fn parallel<T: Send>(n: usize, workers: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    out.into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}
