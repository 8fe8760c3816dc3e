//! `--cpu-hog`: keeps every core busy while the benchmark runs, as a
//! loaded host would (issue #10: failure detection must hold under load).
//! One busy-loop thread per CPU, at normal priority, so the members'
//! threads compete with them on equal terms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The busy-loop threads; dropping this stops and joins them.
pub(crate) struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHog {
    /// Starts one busy-loop thread per CPU the process may use.
    pub(crate) fn start() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .filter_map(|i| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("cpu-hog-{i}"))
                    .spawn(move || spin(&stop))
                    .ok()
            })
            .collect();
        Self { stop, threads }
    }

    /// How many busy-loop threads run.
    pub(crate) fn threads(&self) -> usize {
        self.threads.len()
    }
}

/// Burns CPU until `stop` is set, checking it every few thousand steps.
fn spin(stop: &AtomicBool) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..4096 {
            // xorshift: work the optimiser cannot remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A busy loop cannot panic; nothing to report if it did.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_one_thread_per_cpu_and_stops_when_dropped() {
        let hog = CpuHog::start();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(hog.threads(), cpus);
        // Joins every thread; a hang here would time the test out.
        drop(hog);
    }
}
