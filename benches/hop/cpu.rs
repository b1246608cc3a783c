//! CPU time from /proc (schedstat: nanoseconds on CPU, per thread).

/// CPU ns of the threads of `pid` (all of them, or those whose name starts with `prefix`).
pub fn cpu_ns(pid: u32, prefix: Option<&str>) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let path = task.path();
        if let Some(prefix) = prefix {
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Whose CPU time a configuration's closed loop reports.
#[derive(Clone, Copy)]
pub enum CpuOf {
    Nothing,
    Pid(u32),
    ThreadsOfThisProcess(&'static str),
}

impl CpuOf {
    pub fn read(self) -> Option<u64> {
        match self {
            CpuOf::Nothing => None,
            CpuOf::Pid(pid) => cpu_ns(pid, None),
            CpuOf::ThreadsOfThisProcess(prefix) => cpu_ns(std::process::id(), Some(prefix)),
        }
    }
}
