//! CPU time from the kernel's own accounting (Linux `/proc`): what a thread or the whole process
//! has spent on a core, as opposed to wall time, so a run can say where its cycles went.

use std::time::Duration;

/// CPU time the calling thread has used so far (`/proc/thread-self/schedstat`, nanoseconds on a
/// core); `None` where that cannot be read.
pub fn this_thread() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// CPU time this whole process has used so far, user and system, every thread (`/proc/self/stat`,
/// in the kernel's 1/100 s ticks); `None` where that cannot be read.
pub fn this_process() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < d {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn a_busy_thread_counts_its_own_time_and_a_sleeping_one_does_not() {
        let busy = std::thread::spawn(|| {
            let before = this_thread().unwrap();
            spin(Duration::from_millis(200));
            this_thread().unwrap() - before
        });
        let asleep = std::thread::spawn(|| {
            let before = this_thread().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            this_thread().unwrap() - before
        });
        let (busy, asleep) = (busy.join().unwrap(), asleep.join().unwrap());
        // On a shared machine the busy thread may wait for a core: a loose lower bound.
        assert!(busy >= Duration::from_millis(50), "spinning 200 ms counted {busy:?}");
        assert!(asleep < Duration::from_millis(20), "sleeping 200 ms counted {asleep:?}");
    }

    #[test]
    fn the_process_total_grows_with_a_thread_s_work() {
        let before = this_process().unwrap();
        std::thread::spawn(|| spin(Duration::from_millis(300))).join().unwrap();
        let grew = this_process().unwrap() - before;
        assert!(grew >= Duration::from_millis(50), "the process's CPU grew by {grew:?}");
    }
}
