//! Scheduling priority for the line's threads. A reject must fire at its deadline even when
//! inference keeps every core busy, so the line thread and the adapters' I/O thread ask for
//! real-time scheduling (`SCHED_FIFO`, a low real-time priority). They sleep almost all the time
//! and wake for microseconds, so they cannot starve the pipeline. Without the privilege
//! (`CAP_SYS_NICE`, granted in `deploy/linesight.service`) they run at normal priority, and the
//! station says so once at start.

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
