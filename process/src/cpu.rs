//! A process's CPU: the time it has used and the cores it may run on. The
//! server benchmark's pinned mode puts the client on one core and the
//! server on the other, and charges the server the CPU it used per
//! request.

use std::time::Duration;

/// CPU time process `pid` (`"self"` for this one) has used, user and
/// system, all its threads together, dead ones included: `utime` and
/// `stime` of `/proc/<pid>/stat` (Linux; the kernel's clock ticks, 10 ms
/// here).
pub fn cpu_time(pid: &str) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat: {stat}"),
        )
    };
    // The command name may hold spaces and parentheses: the fields after
    // it start at the last ')'. There, field 3 (the state) is first, so
    // utime (14) and stime (15) are the 12th and 13th.
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (utime, stime) = ticks(11).zip(ticks(12)).ok_or_else(bad)?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Duration::from_secs_f64(
        (utime + stime) as f64 / per_second as f64,
    ))
}

/// Restricts thread `tid` (0: the calling thread) to the cores `cpus`.
/// Threads it starts afterwards inherit the set.
pub fn pin_thread(tid: i32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it
    // for indices below CPU_SETSIZE, checked here; sched_setaffinity reads
    // the set it is given, by its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("core {c} is past the largest core number"),
                ));
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restricts every thread of process `pid` (`"self"` for this one) to
/// `cpus`: those running now, and through them those they start.
pub fn pin_process(pid: &str, cpus: &[usize]) -> std::io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let name = task?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        match pin_thread(tid, cpus) {
            // A thread that ended since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's CPU time by getrusage, the other kernel interface.
    fn rusage_self() -> Duration {
        // SAFETY: getrusage writes into `u`, a valid rusage owned here.
        let u = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
            u
        };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(u.ru_utime) + tv(u.ru_stime)
    }

    #[test]
    fn cpu_time_agrees_with_getrusage() {
        // Spin for 300 ms of this process's CPU, measured by getrusage.
        let start = rusage_self();
        let mut x = 0u64;
        while rusage_self() - start < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (a, ours, b) = (rusage_self(), cpu_time("self").unwrap(), rusage_self());
        // The stat file counts in clock ticks (10 ms): within two of them.
        let slack = Duration::from_millis(20);
        assert!(
            ours + slack >= a && ours <= b + slack,
            "{a:?} <= {ours:?} <= {b:?}"
        );
        assert!(ours >= Duration::from_millis(280), "{ours:?}");
        assert!(cpu_time("no-such-process").is_err());
    }

    /// The `Cpus_allowed_list` line of a thread's status file.
    fn allowed(tid: i32) -> String {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn pinned_threads_and_their_children_run_on_the_cores_named() {
        // On a thread of its own, so the test harness's threads keep theirs.
        std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            pin_thread(0, &[0]).unwrap();
            assert_eq!(allowed(tid), "0");
            let (tx, rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let h = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                let _ = stop_rx.recv();
            });
            let kid = rx.recv().unwrap();
            assert_eq!(allowed(kid), "0", "a new thread inherits the set");
            stop_tx.send(()).unwrap();
            h.join().unwrap();
            assert!(pin_thread(0, &[libc::CPU_SETSIZE as usize]).is_err());
        })
        .join()
        .unwrap();
    }
}
