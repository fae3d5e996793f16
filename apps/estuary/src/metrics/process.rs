//! The process's CPU time, memory and open files, read from `/proc/self`
//! (Linux; elsewhere the families are left out).

use super::text::{Kind, Text};

/// Clock ticks per second of `/proc/self/stat`'s times (`USER_HZ`, 100 on
/// every Linux architecture Estuary builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// Writes the standard `process_*` families (the names every Prometheus
/// client library uses, so that existing dashboards work).
pub(super) fn render(text: &mut Text) {
    if let Some(cpu) = cpu_seconds() {
        text.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time spent by the process, in seconds.",
            cpu,
        );
    }
    if let Some((rss, virt)) = memory_bytes() {
        text.single(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            rss,
        );
        text.single(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            virt,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        text.single(
            "process_open_fds",
            Kind::Gauge,
            "Open file descriptors (connections, listeners, Redis, logs).",
            fds.count(),
        );
    }
    if let Some(max) = max_fds() {
        text.single(
            "process_max_fds",
            Kind::Gauge,
            "The open-file limit (soft RLIMIT_NOFILE).",
            max,
        );
    }
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // after its closing one. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn memory_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((kib("VmRSS:")? * 1024, kib("VmSize:")? * 1024))
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc_self() {
        let mut text = super::Text::default();
        super::render(&mut text);
        let text = text.finish();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
