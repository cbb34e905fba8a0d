//! Keeping the revocation lists current, and refusing everything once they are not.
//!
//! A gateway learns of revocations by reading them from the store on an interval. Each read that
//! completes moves [`Revocations::trusted_until`] on to the time the read started plus a grace
//! period; `decide` refuses every request past it. So lists go stale by the clock alone: a store
//! that returns errors, a read that never returns and a refresh task that died all end in the
//! same refusal, without anything having to notice the failure first.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use zerogate_authn::identity::Revocations;

/// How often the lists are read, and how long a completed read keeps them trusted.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Between the starts of two reads.
    pub every: Duration,
    /// How long after a read started its lists are trusted.
    pub grace: Duration,
}

/// Reads the lists with `read` (on the blocking pool: it is a store query) every
/// `freshness.every`, forever. `apply` takes what a read returned, installs whatever else it
/// carries (certificate revocations, access keys) and returns the revocations, which are then
/// installed in `shared`, trusted until the read's start plus `freshness.grace`. A read that
/// fails is logged and changes nothing, so the lists age; one that does not return is waited
/// for, logged each interval, and the lists age meanwhile.
pub async fn keep_current<T, E, R, A>(read: R, mut apply: A, shared: Arc<RwLock<Revocations>>, freshness: Freshness)
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    R: Fn() -> Result<T, E> + Send + Sync + 'static,
    A: FnMut(T) -> Revocations,
{
    let read = Arc::new(read);
    let mut tick = tokio::time::interval(freshness.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_stale = false;
    loop {
        tick.tick().await;
        let started = Instant::now();
        // The clock `decide` compares with (tokio's may be paused in tests).
        let trusted_until = std::time::Instant::now() + freshness.grace;
        let reader = Arc::clone(&read);
        let mut reading = tokio::task::spawn_blocking(move || reader());
        let finished = loop {
            match tokio::time::timeout(freshness.every, &mut reading).await {
                Ok(finished) => break finished,
                Err(_) => {
                    report_if_stale(&shared, &mut reported_stale, freshness);
                    tracing::error!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "reading revocations has not returned; still waiting"
                    );
                }
            }
        };
        match finished {
            Ok(Ok(value)) => {
                let mut fresh = apply(value);
                fresh.trusted_until = Some(trusted_until);
                if let Ok(mut current) = shared.write() {
                    *current = fresh;
                }
                if reported_stale {
                    tracing::info!("revocations read again; requests are decided again");
                    reported_stale = false;
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "reading revocations failed"),
            Err(error) => tracing::error!(%error, "reading revocations panicked"),
        }
        report_if_stale(&shared, &mut reported_stale, freshness);
    }
}

fn report_if_stale(shared: &RwLock<Revocations>, reported: &mut bool, freshness: Freshness) {
    let current = shared.read().map(|r| r.is_current(std::time::Instant::now())).unwrap_or(false);
    if !current && !*reported {
        tracing::error!(
            grace_s = freshness.grace.as_secs_f64(),
            "revocations out of date past their grace period: every request is refused until they are read"
        );
        *reported = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const FAST: Freshness = Freshness { every: Duration::from_millis(20), grace: Duration::from_millis(200) };

    fn current(shared: &RwLock<Revocations>) -> bool {
        shared.read().unwrap().is_current(std::time::Instant::now())
    }

    /// Waits (at most five seconds) for `shared` to be current or not.
    async fn until(shared: &RwLock<Revocations>, wanted: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while current(shared) != wanted {
            assert!(std::time::Instant::now() < deadline, "the lists never became current={wanted}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn stale() -> Arc<RwLock<Revocations>> {
        let past = std::time::Instant::now();
        Arc::new(RwLock::new(Revocations { trusted_until: Some(past), ..Revocations::default() }))
    }

    #[tokio::test]
    // The lock is held across awaits on purpose: it is what makes the store read hang.
    #[allow(clippy::await_holding_lock)]
    async fn a_read_that_hangs_leaves_the_lists_stale_and_one_that_returns_makes_them_current_again() {
        let shared = stale();
        // The store answers until `hang` is held, then blocks on it.
        let hang = Arc::new(Mutex::new(()));
        let blocker = Arc::clone(&hang);
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let read = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(blocker.lock().unwrap());
            Ok::<_, String>(vec!["jti:t-1".to_owned()])
        };
        let apply = |ids: Vec<String>| Revocations { credentials: ids.into_iter().collect(), ..Revocations::default() };
        tokio::spawn(keep_current(read, apply, Arc::clone(&shared), FAST));

        until(&shared, true).await;
        assert!(shared.read().unwrap().credentials.contains("jti:t-1"));
        let held = hang.lock().unwrap();
        let reads_when_held = reads.load(Ordering::SeqCst);
        until(&shared, false).await;
        // One read is in flight and waited for; no pile of blocked threads builds up.
        assert!(reads.load(Ordering::SeqCst) <= reads_when_held + 1);
        drop(held);
        until(&shared, true).await;
    }

    #[tokio::test]
    async fn reads_that_fail_or_panic_age_the_lists_and_the_refresh_goes_on() {
        let shared = stale();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        // First read succeeds, then twenty fail (errors and panics alternating), then success.
        let read = move || match counted.fetch_add(1, Ordering::SeqCst) {
            0 | 21.. => Ok(()),
            n if n % 2 == 0 => panic!("store driver panicked"),
            _ => Err("database is locked"),
        };
        tokio::spawn(keep_current(read, |()| Revocations::default(), Arc::clone(&shared), FAST));
        until(&shared, true).await;
        until(&shared, false).await;
        until(&shared, true).await;
        assert!(calls.load(Ordering::SeqCst) > 21);
    }

    #[test]
    fn lists_without_a_deadline_stay_current_and_with_one_end_at_it() {
        let now = std::time::Instant::now();
        assert!(Revocations::default().is_current(now + Duration::from_secs(86_400)));
        let until = Revocations { trusted_until: Some(now), ..Revocations::default() };
        assert!(!until.is_current(now));
        assert!(until.is_current(now - Duration::from_millis(1)));
    }
}
