//! What this CPU can do that decides how fast a model runs on it, and which cores the
//! inference workers run on.

/// CPUs whose VNNI-class instructions (8-bit dot products in one instruction) make INT8 models
/// pay, in words.
pub const VNNI_CPUS: &str =
    "Intel Xeon Cascade Lake and later, Intel Core Ice Lake and Alder Lake and later, AMD Zen 4 and later";

/// Whether this CPU has VNNI-class instructions (AVX-512 VNNI or AVX-VNNI on x86-64; the dot
/// product instructions on aarch64), which ONNX Runtime's quantized kernels use.
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

pub use affinity::{allowed_cores, pin_current_thread};

/// Where each of `workers` inference workers is pinned: a core each, in order, when every worker
/// runs one thread and there is a core for each; otherwise none (left to the scheduler).
/// `usable` is how many cores' worth of CPU the process may use (`config::available_cores`,
/// which counts a cgroup CPU quota): fewer than the cores it may run on means a quota shares out
/// the box's cores over time, not cores set aside for it, and pinning to particular ones could
/// put the workers on the cores the neighbours are busiest on.
pub fn worker_cores(workers: usize, single_threaded: bool, allowed: &[usize], usable: usize) -> Option<Vec<usize>> {
    let dedicated = usable >= allowed.len();
    (single_threaded && dedicated && workers > 0 && workers <= allowed.len()).then(|| allowed[..workers].to_vec())
}

/// Thread placement through the kernel's affinity calls.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod affinity {
    use std::mem::{size_of, zeroed};

    /// The cores this process may run on (its affinity mask, cgroup cpusets included), in order;
    /// empty where that cannot be read.
    pub fn allowed_cores() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its size,
        // and CPU_ISSET reads the set within CPU_SETSIZE.
        unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect()
        }
    }

    /// Pin the calling thread (only it) to `core`.
    pub fn pin_current_thread(core: usize) -> std::io::Result<()> {
        if core >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("there is no core {core}")));
        }
        // SAFETY: an empty set with one core below CPU_SETSIZE added; pid 0 is the calling thread
        // and sched_setaffinity reads at most the set's size.
        let done = unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
        };
        if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// Elsewhere workers are left to the scheduler.
#[cfg(not(target_os = "linux"))]
mod affinity {
    pub fn allowed_cores() -> Vec<usize> {
        Vec::new()
    }
    pub fn pin_current_thread(_core: usize) -> std::io::Result<()> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "pinning threads is Linux-only here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_core_per_single_threaded_worker_when_there_are_enough() {
        assert_eq!(worker_cores(2, true, &[0, 1], 2), Some(vec![0, 1]));
        assert_eq!(worker_cores(2, true, &[2, 5, 7], 3), Some(vec![2, 5]), "the cores the process may use");
        assert_eq!(worker_cores(3, true, &[0, 1], 2), None, "two workers would share a core");
        assert_eq!(worker_cores(2, false, &[0, 1, 2, 3], 4), None, "ONNX Runtime places its own threads");
        assert_eq!(worker_cores(0, true, &[0], 1), None);
    }

    #[test]
    fn a_cpu_quota_is_not_pinned_to_particular_cores() {
        // A container limited to 2 cores' worth of 16 by a quota runs on any of the 16.
        let all: Vec<usize> = (0..16).collect();
        assert_eq!(worker_cores(2, true, &all, 2), None);
        assert_eq!(worker_cores(2, true, &all, 16), Some(vec![0, 1]));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_on_its_core_only_and_the_others_keep_theirs() {
        let allowed = allowed_cores();
        assert!(!allowed.is_empty(), "this process may run somewhere");
        let last = *allowed.last().unwrap();
        let pinned = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            allowed_cores()
        })
        .join()
        .unwrap();
        assert_eq!(pinned, vec![last]);
        assert_eq!(allowed_cores(), allowed, "pinning one thread leaves the rest alone");
        assert!(pin_current_thread(usize::MAX).is_err());
    }
}
