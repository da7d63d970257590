//! Scheduling priority for the line's threads. A reject must fire at its deadline even when
//! inference keeps every core busy, so the line thread and the adapters' I/O thread ask for
//! real-time scheduling (`SCHED_FIFO`, a low real-time priority). They sleep almost all the time
//! and wake for microseconds, so they cannot starve the pipeline. Without the privilege
//! (`CAP_SYS_NICE`, granted in `deploy/linesight.service`) they run at normal priority, and the
//! station says so once at start.
//!
//! Priority alone is not enough: an idle CPU sleeps in an idle state, and waking it takes time —
//! up to ~15 ms measured for a halted vCPU of this project's CI virtual machine (the haltpoll
//! idle driver), where the line thread overslept its deadlines by that much on a nearly idle
//! machine and missed fire windows. So the station also holds a CPU wake-latency request
//! ([`hold_cpu_wake_latency`], the kernel's PM QoS interface `/dev/cpu_dma_latency`, as
//! `cyclictest` and tuned's latency profiles do) while the line runs.

use std::io::Write;

use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
    thread_native_id,
};

/// `SCHED_FIFO` priority: above every normal thread, below the kernel's own real-time threads.
const FIFO_PRIORITY: u8 = 10;

/// Give the calling thread real-time priority; returns whether it worked.
pub fn raise_current_thread(thread: &str) -> bool {
    let priority = match FIFO_PRIORITY.try_into() {
        Ok(p) => ThreadPriority::Crossplatform(p),
        Err(_) => ThreadPriority::Min,
    };
    let policy = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
    match set_thread_priority_and_policy(thread_native_id(), priority, policy) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(thread, error = ?e, "could not get real-time scheduling (grant CAP_SYS_NICE, see deploy/linesight.service): rejects may fire late when the CPU is saturated");
            false
        }
    }
}

/// The kernel's CPU wake-latency (PM QoS) request file; the request lasts while it is open.
const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// Ask that idle CPUs use no idle state slower to leave than `max_us` microseconds (0: they
/// poll, the lowest latency and the most power) for as long as the returned file stays open.
/// Without access to the device (root, or the udev rule in `deploy/`) it warns once and returns
/// `None`: the line still runs, with wake-ups as late as the CPU's idle states make them.
pub fn hold_cpu_wake_latency(max_us: u32) -> Option<std::fs::File> {
    let request = i32::try_from(max_us).unwrap_or(i32::MAX).to_ne_bytes();
    let held = std::fs::OpenOptions::new().write(true).open(CPU_DMA_LATENCY).and_then(|mut f| {
        f.write_all(&request)?;
        Ok(f)
    });
    match held {
        Ok(f) => {
            tracing::info!(max_us, "CPU wake-latency request held while the line runs");
            Some(f)
        }
        Err(e) => {
            tracing::warn!(path = CPU_DMA_LATENCY, error = %e, "could not hold a CPU wake-latency request (run as root or install deploy/60-linesight-cpu-latency.rules): rejects may fire late when idle CPUs are slow to wake");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The strictest request now in force (the kernel reports the minimum over all holders).
    fn current_request_us() -> std::io::Result<i32> {
        let mut value = [0u8; 4];
        std::fs::File::open(CPU_DMA_LATENCY)?.read_exact(&mut value)?;
        Ok(i32::from_ne_bytes(value))
    }

    #[test]
    fn the_wake_latency_request_is_in_force_while_held() {
        if std::fs::OpenOptions::new().write(true).open(CPU_DMA_LATENCY).is_err() {
            eprintln!(
                "WARNING: SKIPPED the_wake_latency_request_is_in_force_while_held: {CPU_DMA_LATENCY} is not writable here (run as root)"
            );
            return;
        }
        let held = hold_cpu_wake_latency(3).expect("the device is writable");
        assert!(current_request_us().unwrap() <= 3, "the kernel does not have the request");
        drop(held);
    }
}
