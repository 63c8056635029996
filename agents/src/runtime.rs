//! What every controller shares: per-key retry backoff, and running a controller's
//! stream of results.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;

use crate::error::AgentError;

/// Per-key exponential backoff for failed reconciles, client-go's default item rate
/// limiter: 5 ms doubled on each failure in a row, at most 1,000 s; a success forgets it.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1000);
    /// Keys tracked at most; beyond it the oldest failures are not remembered (a key
    /// then starts again from the base delay).
    const KEYS_MAX: usize = 100_000;

    /// The delay before `key` is tried again after one more failure.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .expect("invariant: no panics while the lock is held");
        if failures.len() >= Self::KEYS_MAX && !failures.contains_key(key) {
            failures.clear();
        }
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = Self::BASE
            .saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .expect("invariant: no panics while the lock is held")
            .remove(key);
    }
}

/// Requeues `key` after its next backoff delay, logging why.
pub fn retry_later(backoff: &Backoff, controller: &str, key: &str, error: &AgentError) -> Action {
    let delay = backoff.failed(key);
    tracing::warn!(controller, key, %error, ?delay, "reconciling failed");
    Action::requeue(delay)
}

/// Runs a controller's stream of results until its future is dropped (the stream ends
/// only then); errors are logged at debug level (each was handled by its error policy).
pub async fn drive<T, E: Display>(controller: &'static str, results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller, error = %e, "controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_key_up_to_its_cap_and_forgets_on_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), Duration::from_millis(5));
        assert_eq!(b.failed("a"), Duration::from_millis(10));
        assert_eq!(b.failed("a"), Duration::from_millis(20));
        assert_eq!(b.failed("b"), Duration::from_millis(5), "keys are independent");
        for _ in 0..40 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), Duration::from_secs(1000));
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_millis(5));
    }
}
