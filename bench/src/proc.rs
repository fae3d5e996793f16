//! CPU time and resident memory of processes, read from `/proc`.
//!
//! The load generator measures the server from outside: the CPU a process
//! spent (user + system, all threads) between two samples, and its resident
//! set. Linux only; on other systems the readings are `None` and the report
//! says so.

use std::time::Instant;

/// Clock ticks per second for `/proc/PID/stat` times. Linux has reported
/// 100 on every mainstream architecture for decades (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system, every thread) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the fields
    // that follow start after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Pages of memory the kernel holds for TCP sockets, machine-wide
/// (`/proc/net/sockstat`). Not part of any process's RSS.
pub fn tcp_mem_pages() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_ascii_whitespace();
    words.find(|w| *w == "mem")?;
    words.next()?.parse().ok()
}

/// TCP segments the machine has sent so far (`OutSegs` in `/proc/net/snmp`):
/// both ends of every loopback connection, acknowledgements included.
pub fn tcp_out_segments() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_ascii_whitespace().position(|n| n == "OutSegs")?;
    values.split_ascii_whitespace().nth(i)?.parse().ok()
}

/// The CPU and memory of a set of processes (a server, and Redis behind it)
/// and of the load generator itself, sampled at the start and end of a
/// measurement window.
#[derive(Debug, Clone)]
pub struct Watch {
    pids: Vec<u32>,
    start: Instant,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    segments: Option<u64>,
}

/// What a [`Watch`] saw over its window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// Wall-clock seconds of the window.
    pub seconds: f64,
    /// CPU seconds the watched processes used in the window (summed).
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds the load generator used in the window.
    pub loadgen_cpu_seconds: Option<f64>,
    /// TCP segments sent on the machine in the window (both directions of
    /// loopback traffic, acknowledgements included).
    pub tcp_segments: Option<u64>,
}

impl Usage {
    /// Cores the watched processes kept busy on average.
    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu_seconds.map(|c| c / self.seconds)
    }

    /// Cores the load generator kept busy on average.
    pub fn loadgen_cores(&self) -> Option<f64> {
        self.loadgen_cpu_seconds.map(|c| c / self.seconds)
    }
}

impl Watch {
    /// Starts a window over `pids` (none: only the load generator is watched).
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: Instant::now(),
            server_cpu: sum_cpu(pids),
            own_cpu: cpu_seconds(std::process::id()),
            segments: tcp_out_segments(),
        }
    }

    /// Ends the window.
    pub fn stop(&self) -> Usage {
        let seconds = self.start.elapsed().as_secs_f64();
        let delta = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        Usage {
            seconds,
            server_cpu_seconds: delta(self.server_cpu, sum_cpu(&self.pids)),
            loadgen_cpu_seconds: delta(self.own_cpu, cpu_seconds(std::process::id())),
            tcp_segments: tcp_out_segments()
                .zip(self.segments)
                .map(|(after, before)| after.saturating_sub(before)),
        }
    }

    /// Resident memory of the watched processes now, in KiB (summed).
    pub fn rss_kib(&self) -> Option<u64> {
        sum_rss(&self.pids)
    }
}

/// True when the load generator kept its core busy (over 90 %) while the
/// server did not: the load generator, not the server, set the rate. When
/// both are saturated the server is the limit (it is pinned to one core).
/// Unknown (false) when the server's CPU is not watched.
pub fn loadgen_bound(window: &Usage) -> bool {
    match (window.loadgen_cores(), window.server_cores()) {
        (Some(loadgen), Some(server)) => loadgen > 0.9 && server < 0.9,
        _ => false, // the server is not watched: nothing to compare with
    }
}

/// Summed resident memory of `pids`, in KiB; `None` without pids or when one
/// is gone.
pub fn sum_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

fn sum_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(tcp_mem_pages().is_some());
        assert!(tcp_out_segments().is_some());
    }

    #[test]
    fn missing_process_is_none() {
        assert_eq!(rss_kib(u32::MAX), None);
        assert_eq!(sum_rss(&[]), None);
    }
}
