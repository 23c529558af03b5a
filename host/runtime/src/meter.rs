//! The CPU time a policy call uses, for its time limit.
//!
//! A wall-clock limit fails policies on a busy machine: a call that needs 1 ms of CPU can wait
//! 100 ms for a core when many requests are in flight (seen on a 2-core CI runner with two
//! replicas and 64 clients). So the limit is on the CPU time of the threads that ran the call,
//! measured per poll of the call's future (`CLOCK_THREAD_CPUTIME_ID`; the call may move between
//! threads across polls), with the time the policy spends waiting for the host (key-value store,
//! outbound HTTP, embeddings, vectors) left out. The epoch ticker still decides *when* to look:
//! at each deadline the callback compares the CPU time used with the limit and either stops the
//! call or sets the next deadline to the remaining time.

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
    /// CPU time of the current thread when the running segment began.
    since: Option<Duration>,
    /// CPU time used by the finished segments of the current call.
    used: Duration,
}

/// The CPU-time meter of one policy instance (shared by its store and the futures that run it).
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuMeter(Arc<Mutex<State>>);

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl CpuMeter {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` (a call into the policy) with its CPU time metered from zero.
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
            s.since = Some(thread_cpu());
        }
    }

    fn end(&self) {
        let mut s = self.state();
        if let Some(since) = s.since.take() {
            s.used += thread_cpu().saturating_sub(since);
        }
    }

    /// Awaits `f`, an operation of the host: if it has to wait (a Redis round trip, an HTTP
    /// call), the wait is left out of the call's CPU time. One that is ready at once (the
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

    /// CPU time used by the current call so far; `None` outside a metered call (loading a
    /// component, validating a configuration), where the deadline is wall time.
    pub(crate) fn used(&self) -> Option<Duration> {
        let s = self.state();
        if !s.active {
            return None;
        }
        let running = s
            .since
            .map_or(Duration::ZERO, |since| thread_cpu().saturating_sub(since));
        Some(s.used + running)
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

    #[test]
    fn counts_running_time_and_leaves_out_host_waits() {
        let meter = CpuMeter::default();
        assert_eq!(meter.used(), None);
        let used = futures::executor::block_on(meter.run(async {
            spin(Duration::from_millis(5));
            // Waiting for the host: CPU spent here (by the host, on another thread) is not
            // the policy's.
            meter
                .host(async {
                    let answer = std::thread::spawn(|| spin(Duration::from_millis(20)));
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
            spin(Duration::from_millis(5));
            meter.used()
        }));
        let used = used.unwrap_or_default();
        assert!(
            used >= Duration::from_millis(10) && used < Duration::from_millis(20),
            "{used:?}"
        );
        assert_eq!(meter.used(), None, "no call in progress");
    }

    #[test]
    fn time_off_the_cpu_does_not_count() {
        let meter = CpuMeter::default();
        let used = futures::executor::block_on(meter.run(async {
            std::thread::sleep(Duration::from_millis(30));
            meter.used()
        }))
        .unwrap_or_default();
        assert!(used < Duration::from_millis(10), "{used:?}");
    }
}
