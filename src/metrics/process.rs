//! The process metrics every Prometheus exporter has (`process_*`), read
//! from `/proc/self` at scrape time. Elsewhere than Linux they are absent.

/// One reading of this process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    /// Unix seconds.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// This process now; None where `/proc` is not there to read.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let (cpu_ticks, start_ticks) = parse_stat(&stat)?;
        let (virt_pages, rss_pages) = parse_statm(&statm)?;
        let boot_secs = parse_btime(&boot)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| parse_max_fds(&l));
        Some(ProcessStats {
            cpu_seconds: cpu_ticks as f64 / ticks,
            resident_memory_bytes: rss_pages * page,
            virtual_memory_bytes: virt_pages * page,
            open_fds,
            max_fds,
            start_time_seconds: boot_secs as f64 + start_ticks as f64 / ticks,
        })
    }
}

/// (utime + stime, starttime) in clock ticks, from `/proc/self/stat`. The
/// command name may hold spaces and parentheses: fields count from the last ')'.
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so field N is f[N - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// (size, resident) in pages, from `/proc/self/statm`.
fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// Boot time in Unix seconds, from `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of open files, from `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn unix_now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 12345 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 12345)));
        assert_eq!(parse_statm("2500 300 100 1 0 400 0\n"), Some((2500, 300)));
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_reads_sensibly() {
        let Some(p) = ProcessStats::read() else {
            return; // no /proc here
        };
        assert!(p.resident_memory_bytes > 0 && p.virtual_memory_bytes >= p.resident_memory_bytes);
        assert!(p.open_fds > 0);
        assert!(p.start_time_seconds > 1e9 && p.start_time_seconds <= unix_now() + 1.0);
    }
}
