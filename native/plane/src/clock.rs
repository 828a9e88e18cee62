//! The clocks the media plane and the load generator read, one `clock_gettime` each.

fn clock_ns(clock: libc::clockid_t) -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

/// Milliseconds on CLOCK_MONOTONIC, the clock of Python's `time.monotonic()`.
pub fn now_ms() -> u64 {
    let (s, ns) = clock_ns(libc::CLOCK_MONOTONIC);
    s as u64 * 1000 + ns as u64 / 1_000_000
}

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let (s, ns) = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    s as u64 * 1_000_000_000 + ns as u64
}

/// CLOCK_REALTIME in microseconds (the clock of kernel receive timestamps, `SO_TIMESTAMPNS`).
pub fn realtime_us() -> i64 {
    let (s, ns) = clock_ns(libc::CLOCK_REALTIME);
    s * 1_000_000 + ns / 1000
}
