//! What `/proc` says about the server process and the machine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Samples a process's VmRSS on a timer.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<u64>>,
}

impl Sampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(m) = memory(pid) {
                    samples.push(m.rss_kib);
                }
                tokio::time::sleep(every).await;
            }
            samples
        });
        Sampler { stop, handle }
    }

    /// Stops and returns the samples (KiB), oldest first.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

/// A `kB` figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != key {
            return None;
        }
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(value),
            Some(_) => None,
        }
    })
}

/// Resident and peak resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM`: the peak since start or since the last [`reset_peak`].
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/status`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |key| {
        status_kib(&status, key).ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: get("VmRSS")?,
        hwm_kib: get("VmHWM")?,
    })
}

/// User plus system CPU time of a process from `/proc/<pid>/stat` text, in clock
/// ticks (fields 14 and 15, counted after the parenthesised command name).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds a process has used (0 when it cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ticks(&s))
        .map_or(0.0, |t| t as f64 / clock_ticks())
}

/// Resets a process's `VmHWM` to its current RSS (`clear_refs` value 5, Linux 4.0+).
pub fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// The mount holding `path` in `/proc/self/mounts` text: (device, mount point,
/// filesystem type) of the longest matching mount point.
pub fn mount_of(mounts: &str, path: &Path) -> Option<(String, String, String)> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let device = words.next()?;
            // Spaces in mount points are written as \040.
            let point = words.next()?.replace("\\040", " ");
            let fstype = words.next()?;
            path.starts_with(&point)
                .then(|| (device.to_owned(), point, fstype.to_owned()))
        })
        .max_by_key(|(_, point, _)| point.len())
}

/// Available KiB from `df -Pk` output (the first data line's fourth column).
pub fn df_available_kib(df: &str) -> Option<u64> {
    df.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// Free space of the filesystem holding `path`, in bytes (`df -Pk`).
pub fn available_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    df_available_kib(&String::from_utf8_lossy(&out.stdout)).map(|k| k * 1024)
}

/// Writes dirty pages out and drops the page cache (`sync`, then
/// `/proc/sys/vm/drop_caches`): needs root. Whether it was dropped.
pub fn drop_page_cache() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tvault-server\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1234568 kB\nVmHWM:\t   45120 kB\nVmRSS:\t   40000 kB\nThreads:\t5\n";

    #[test]
    fn status_figures() {
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(45_120));
        assert_eq!(status_kib(STATUS, "VmRSS"), Some(40_000));
        assert_eq!(status_kib(STATUS, "VmPeak"), Some(1_234_568));
        assert_eq!(status_kib(STATUS, "Threads"), Some(5));
        assert_eq!(status_kib(STATUS, "VmSwap"), None);
        assert_eq!(status_kib(STATUS, "State"), None);
        assert_eq!(status_kib(STATUS, "Vm"), None);
    }

    #[test]
    fn own_process_memory() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib / 2);
    }

    #[test]
    fn df_output() {
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         263174212 88000000 7123456      93% /\n";
        assert_eq!(df_available_kib(text), Some(7_123_456));
        assert_eq!(df_available_kib("Filesystem\n"), None);
        assert!(available_bytes(Path::new("/")).is_some_and(|b| b > 0));
    }

    #[test]
    fn stat_cpu() {
        // Field 2 may hold spaces and parentheses.
        let stat = "4242 (vault (x) srv) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1500 250 0 0 20 0 9 0 100 1000000 5000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(1750));
        assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()) >= 0.0);
        assert!(clock_ticks() > 0.0);
    }

    #[test]
    fn cpu_models() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn mounts() {
        let text = "/dev/vda / ext4 rw,relatime 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /srv/my\\040data xfs rw 0 0\n";
        let m = |p: &str| mount_of(text, Path::new(p)).map(|(d, _, t)| (d, t));
        assert_eq!(m("/tmp/x/y"), Some(("tmpfs".into(), "tmpfs".into())));
        assert_eq!(m("/tmpx"), Some(("/dev/vda".into(), "ext4".into())));
        assert_eq!(m("/srv/my data/v"), Some(("/dev/vdb".into(), "xfs".into())));
        assert_eq!(mount_of("", Path::new("/")), None);
    }
}
