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

#[cfg(test)]
mod tests {
    use super::*;

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
