//! The CPU time a policy call uses, for its time limit.
//!
//! A wall-clock limit fails policies on a busy machine: a call that needs 1 ms of CPU can wait
//! 100 ms for a core when many requests are in flight (seen on a 2-core CI runner with two
//! replicas and 64 clients). So the limit is on the CPU time of the threads that ran the call,
//! measured per poll of the call's future (the call may move between threads across polls),
//! with the time the policy spends waiting for the host (key-value store, outbound HTTP,
//! embeddings, vectors) left out. The epoch ticker still decides *when* to look: at each
//! deadline the callback compares the time used with the limit and either stops the call or
//! sets the next deadline to the remaining time.
//!
//! The thread CPU clock (`CLOCK_THREAD_CPUTIME_ID`) has no vDSO path: each read is a system
//! call that takes the run queue's lock, and reading it twice per poll was ~6% of the gateway's
//! CPU with two policies. Almost every call ends long before its limit, so a call is first
//! metered on the monotonic clock (vDSO, no system call): the wall time of its polls is an
//! upper bound of their CPU time, and while it is under the limit the call is certainly under
//! it too. Only when that bound reaches the limit (the call is long, or its thread was
//! preempted) does the meter switch to the thread CPU clock, counting from zero, and the call
//! is stopped when that reaches the limit. So a call is never stopped for time it spent off the
//! CPU, and one that never yields is stopped after at most twice its limit of CPU time.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    /// A metered call is in progress.
    active: bool,
    /// The call is waiting for the host: its polls do not count.
    host: bool,
    /// The call is metered on the thread CPU clock (else on the monotonic clock, an upper bound).
    cpu: bool,
    /// The clock's reading when the running segment began.
    since: Option<Duration>,
    /// Time used by the finished segments of the current call, on the current clock.
    used: Duration,
}

/// The CPU-time meter of one policy instance (shared by its store and the futures that run it).
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuMeter(Arc<Mutex<State>>);

fn read(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn thread_cpu() -> Duration {
    read(rustix::time::ClockId::ThreadCPUTime)
}

impl State {
    fn now(&self) -> Duration {
        if self.cpu {
            thread_cpu()
        } else {
            read(rustix::time::ClockId::Monotonic)
        }
    }
}

impl CpuMeter {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` (a call into the policy) with its time metered from zero.
    pub(crate) async fn run<T>(&self, f: impl Future<Output = T>) -> T {
        *self.state() = State {
            active: true,
            ..State::default()
        };
        let mut f = pin!(f);
        let out = std::future::poll_fn(|cx| {
            self.begin();
            let out = f.as_mut().poll(cx);
            self.end();
            out
        })
        .await;
        self.state().active = false;
        out
    }

    fn begin(&self) {
        let mut s = self.state();
        if s.active && !s.host {
            s.since = Some(s.now());
        }
    }

    fn end(&self) {
        let mut s = self.state();
        if let Some(since) = s.since.take() {
            let now = s.now();
            s.used += now.saturating_sub(since);
        }
    }

    /// Awaits `f`, an operation of the host: if it has to wait (a Redis round trip, an HTTP
    /// call), the wait is left out of the call's time. One that is ready at once (the
    /// in-memory store) is not worth two clock reads and counts as the policy's.
    pub(crate) async fn host<T>(&self, f: impl Future<Output = T>) -> T {
        let mut f = pin!(f);
        let mut waiting = false;
        let out = std::future::poll_fn(|cx| {
            let out = f.as_mut().poll(cx);
            if out.is_pending() && !waiting {
                waiting = true;
                self.end();
                self.state().host = true;
            }
            out
        })
        .await;
        if waiting {
            self.state().host = false;
            self.begin();
        }
        out
    }

    /// The time the current call has left of `limit`; `None` outside a metered call (loading a
    /// component, validating a configuration), where the deadline is wall time. Less than a
    /// `tick` left on the monotonic clock switches the call to the thread CPU clock with the
    /// whole limit left.
    pub(crate) fn left(&self, limit: Duration, tick: Duration) -> Option<Duration> {
        let mut s = self.state();
        if !s.active {
            return None;
        }
        let running = s
            .since
            .map_or(Duration::ZERO, |since| s.now().saturating_sub(since));
        let left = limit.saturating_sub(s.used + running);
        if s.cpu || left >= tick {
            return Some(left);
        }
        s.cpu = true;
        s.used = Duration::ZERO;
        if s.since.is_some() {
            s.since = Some(thread_cpu());
        }
        Some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu();
        while thread_cpu().saturating_sub(start) < d {
            std::hint::black_box(0u64);
        }
    }

    /// Spins `d` of CPU time, waits for the host while another thread spins `host`, spins `d`
    /// again; returns what the meter has left of `limit` then, after a first look with
    /// `first_limit` (which may switch it to the CPU clock).
    fn metered(
        meter: &CpuMeter,
        first_limit: Duration,
        d: Duration,
        host: Duration,
        limit: Duration,
    ) -> Option<Duration> {
        futures::executor::block_on(meter.run(async {
            spin(d);
            assert!(meter.left(first_limit, TICK).is_some());
            // Waiting for the host: time spent here (by the host, on another thread) is not
            // the policy's.
            meter
                .host(async {
                    let answer = std::thread::spawn(move || spin(host));
                    futures::future::poll_fn(|cx| {
                        if answer.is_finished() {
                            std::task::Poll::Ready(())
                        } else {
                            cx.waker().wake_by_ref();
                            std::task::Poll::Pending
                        }
                    })
                    .await;
                })
                .await;
            spin(d);
            meter.left(limit, TICK)
        }))
    }

    const TICK: Duration = Duration::from_millis(1);
    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn counts_running_time_and_leaves_out_host_waits() {
        let meter = CpuMeter::default();
        assert_eq!(meter.left(LIMIT, TICK), None);
        // On the monotonic clock (the limit is far): 10 ms of spinning, at least 10 ms of wall
        // time; the host's 200 ms are left out.
        let ms = Duration::from_millis;
        let left = metered(&meter, LIMIT, ms(5), ms(200), LIMIT).unwrap_or_default();
        let used = LIMIT - left;
        assert!(used >= ms(10) && used < ms(200), "{used:?}");
        assert!(!meter.state().cpu, "the limit was never near");
        assert_eq!(meter.left(LIMIT, TICK), None, "no call in progress");
        // A first look with a 2 ms limit switches to the CPU clock from zero: the second 5 ms
        // of spinning count, the host's 50 ms do not.
        let left = metered(&meter, ms(2), ms(5), ms(50), LIMIT).unwrap_or_default();
        let used = LIMIT - left;
        assert!(meter.state().cpu);
        assert!(used >= ms(5) && used < ms(50), "{used:?}");
    }

    #[test]
    fn time_off_the_cpu_does_not_count() {
        let meter = CpuMeter::default();
        let ms = Duration::from_millis;
        let left = futures::executor::block_on(meter.run(async {
            std::thread::sleep(ms(30));
            // 30 ms of wall time reach a 10 ms limit: the meter switches to the CPU clock
            // with the whole limit left, and the next 30 ms asleep do not count.
            assert_eq!(meter.left(ms(10), TICK), Some(ms(10)));
            std::thread::sleep(ms(30));
            meter.left(ms(10), TICK)
        }))
        .unwrap_or_default();
        assert!(left > ms(5), "{left:?}");
    }

    #[test]
    fn a_call_that_never_yields_is_stopped_within_twice_its_limit() {
        let meter = CpuMeter::default();
        let ms = Duration::from_millis;
        let limit = ms(20);
        let spent = futures::executor::block_on(meter.run(async {
            let start = thread_cpu();
            // What the epoch callback does: look at each tick until nothing is left.
            loop {
                spin(TICK);
                if meter.left(limit, TICK).is_some_and(|left| left < TICK) {
                    return thread_cpu().saturating_sub(start);
                }
            }
        }));
        assert!(
            spent >= limit - TICK && spent <= 2 * limit + ms(5),
            "{spent:?}"
        );
    }
}
