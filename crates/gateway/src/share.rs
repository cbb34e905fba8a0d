//! Fair shares of what the gateway holds for its callers: how many requests one principal may
//! have in flight at once. Upstream streams, upstream connections and tunnels are shared by
//! everyone; without a share per principal one caller (or one stolen credential) holding
//! long-lived streams could take them all and queue every other caller until their timeout.
//!
//! A request holds its place from the decision until its response (or tunnel) has ended; the
//! place returns when the last part of the exchange that holds it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Requests in flight per principal, each principal limited to `limit`.
#[derive(Debug)]
pub(crate) struct InFlight {
    limit: usize,
    held: Mutex<HashMap<String, usize>>,
}

impl InFlight {
    /// An account where no principal may hold more than `limit` requests at once.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), held: Mutex::default() })
    }

    /// The most one principal may hold.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more request of `principal`, or `None` when it already holds the limit.
    pub(crate) fn try_hold(self: &Arc<Self>, principal: &str) -> Option<Held> {
        // The counts stay consistent through a panic elsewhere (each change is one statement):
        // a poisoned lock is used as it is, so the limit still holds.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get_mut(principal) {
            Some(count) if *count >= self.limit => return None,
            Some(count) => *count += 1,
            None => {
                held.insert(principal.to_owned(), 1);
            }
        }
        Some(Held { _place: Arc::new(Place { owner: Arc::clone(self), principal: principal.to_owned() }) })
    }

    /// How many requests `principal` holds now.
    #[cfg(test)]
    fn holding(&self, principal: &str) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get(principal).copied().unwrap_or(0)
    }
}

/// One request's place in its principal's share. Clones are the same place (the parts of one
/// exchange that outlive each other each keep one); it returns when the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    _place: Arc<Place>,
}

#[derive(Debug)]
struct Place {
    owner: Arc<InFlight>,
    principal: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                // Principals that hold nothing take no memory.
                held.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_holds_at_most_its_share_and_gets_it_back_when_requests_end() {
        let in_flight = InFlight::new(2);
        let first = in_flight.try_hold("alice").expect("first");
        let second = in_flight.try_hold("alice").expect("second");
        assert!(in_flight.try_hold("alice").is_none(), "a third is past the share");
        assert!(in_flight.try_hold("bob").is_some(), "another principal has its own share");
        // A clone is the same place, not another one.
        let kept = second.clone();
        drop(second);
        assert!(in_flight.try_hold("alice").is_none());
        drop(kept);
        assert_eq!(in_flight.holding("alice"), 1);
        let third = in_flight.try_hold("alice").expect("a place came back");
        drop((first, third));
        assert_eq!(in_flight.holding("alice"), 0);
        assert!(in_flight.held.lock().unwrap().is_empty(), "nothing kept for principals that hold nothing");
    }
}
