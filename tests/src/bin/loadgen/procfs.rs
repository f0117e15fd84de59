//! Reading a process's memory and CPU time from `/proc` (Linux).

use std::io;
use std::time::Instant;

/// Clock ticks per second of the CPU times in `/proc/PID/stat`. This is USER_HZ, which the
/// Linux ABI fixes at 100 for `/proc` on every architecture (`getconf CLK_TCK` prints it);
/// reading it with sysconf would need unsafe FFI for a constant.
pub const TICKS_PER_SEC: u64 = 100;

/// A `Vm*` line of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn vm_kib(pid: u32, field: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field_kib(&text, field)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {field} in status")))
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu_ticks(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))
}

fn status_field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `utime + stime` (fields 14 and 15) of a stat line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the
/// last `)`: there the state is field 3.
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = text.get(text.rfind(')')?.checked_add(1)?..)?;
    let mut fields = after.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// CPU use of a process over a window of wall time.
pub struct CpuWindow {
    pid: u32,
    ticks: u64,
    start: Instant,
}

impl CpuWindow {
    /// Starts a window now; `None` when the process cannot be read.
    pub fn start(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            ticks: cpu_ticks(pid).ok()?,
            start: Instant::now(),
        })
    }

    /// Percent of one core used since the start (100 = one core busy all the time).
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_ticks(self.pid).ok()?.saturating_sub(self.ticks);
        let secs = self.start.elapsed().as_secs_f64();
        (secs > 0.0).then(|| used as f64 / TICKS_PER_SEC as f64 / secs * 100.0)
    }
}

/// Busy and softirq time of one CPU core over a window, from `/proc/stat`. The server's own
/// CPU time misses what the kernel charges elsewhere (softirq work of loopback TCP) and says
/// nothing of other processes that share its core; the core's figures show both.
pub struct CoreWindow {
    core: usize,
    start: CoreTimes,
}

#[derive(Clone, Copy)]
struct CoreTimes {
    total: u64,
    idle: u64,
    softirq: u64,
}

impl CoreWindow {
    /// Starts a window now; `None` when the core's line cannot be read.
    pub fn start(core: usize) -> Option<Self> {
        Some(Self {
            core,
            start: core_times(core)?,
        })
    }

    /// Percent of the window the core was busy (anything but idle and iowait), and the percent
    /// spent in softirq.
    pub fn percent(&self) -> Option<(f64, f64)> {
        let now = core_times(self.core)?;
        let total = now.total.checked_sub(self.start.total).filter(|&t| t > 0)? as f64;
        let idle = now.idle.saturating_sub(self.start.idle) as f64;
        let softirq = now.softirq.saturating_sub(self.start.softirq) as f64;
        Some((100.0 * (total - idle) / total, 100.0 * softirq / total))
    }
}

fn core_times(core: usize) -> Option<CoreTimes> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_core_times(&text, core)
}

/// The `cpuN` line: user nice system idle iowait irq softirq steal (guest times are already
/// inside user and nice, so they are not added again).
fn parse_core_times(text: &str, core: usize) -> Option<CoreTimes> {
    let label = format!("cpu{core}");
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some(label.as_str()))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let &[user, nice, system, idle, iowait, irq, softirq, steal] = values.as_slice() else {
        return None;
    };
    let total = [user, nice, system, idle, iowait, irq, softirq, steal]
        .iter()
        .try_fold(0u64, |acc, &v| acc.checked_add(v))?;
    Some(CoreTimes {
        total,
        idle: idle.checked_add(iowait)?,
        softirq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_line_is_found_by_its_exact_label() {
        let text =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu1 1 2 3 40 4 5 6 7 0 0\ncpu10 0 0 0 0 0 0 0 0 0 0\n";
        let times = parse_core_times(text, 1).expect("cpu1");
        assert_eq!(times.total, 68);
        assert_eq!(times.idle, 44);
        assert_eq!(times.softirq, 6);
        assert!(parse_core_times(text, 2).is_none());
        assert!(parse_core_times("cpu1 1 2\n", 1).is_none());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1337 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(line), Some(325));
        assert_eq!(stat_cpu_ticks("4242 (short"), None);
        assert_eq!(stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_field_in_kib() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field_kib(text, "VmRSS"), Some(1024));
        assert_eq!(status_field_kib(text, "VmHWM"), Some(2048));
        assert_eq!(status_field_kib(text, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(vm_kib(pid, "VmRSS").expect("own status") > 0);
        assert!(cpu_ticks(pid).is_ok());
    }
}
