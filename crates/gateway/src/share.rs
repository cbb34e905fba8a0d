//! Fair shares of what the gateway holds for its callers: how many requests one principal may
//! have in flight at once, and how many bytes of signed request bodies (read before any
//! credential is checked) one client address may have the gateway hold. Upstream streams,
//! upstream connections, tunnels and the signed-body budget are shared by everyone; without a
//! share per caller one caller (or one stolen credential) could take them all and queue or
//! refuse every other caller.
//!
//! A request holds its place from the decision until its response (or tunnel) has ended; the
//! place returns when the last part of the exchange that holds it is dropped. A signed body
//! holds its bytes while it is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::proxy::Unreadable;

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

/// Bytes of signed request bodies the gateway holds, across all connections, while it reads
/// them: they are read before any credential is checked, so without a bound anyone could make
/// the gateway hold `MAX_SIGNED_BODY` per HTTP/2 stream (a GiB per connection) by sending
/// bodies slowly. Past it a signed upload is refused with 503 until others finish.
pub(crate) const SIGNED_BODY_BUDGET: usize = 64 * 1024 * 1024;

/// The part of [`SIGNED_BODY_BUDGET`] the bodies from one client address (an IPv4 address, or
/// an IPv6 /64, what one host is given) may hold at once: two of the largest signed bodies. One
/// host alone cannot spend the budget that every other caller's uploads need; past it its
/// upload is refused with 429.
pub(crate) const SIGNED_BODY_SHARE: usize = 2 * crate::proxy::MAX_SIGNED_BODY;

/// The gateway-wide account of [`SIGNED_BODY_BUDGET`], and each client address's part of it.
#[derive(Debug)]
pub(crate) struct SignedBodyBudget {
    total: tokio::sync::Semaphore,
    share: usize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

impl SignedBodyBudget {
    /// A budget of `bytes` in all, of which one client address may hold `share`.
    pub(crate) fn new(bytes: usize, share: usize) -> Self {
        Self { total: tokio::sync::Semaphore::new(bytes), share, by_client: Mutex::default() }
    }

    /// An account for one body from `client`, empty at first; what it holds returns when it is
    /// dropped.
    pub(crate) fn hold(&self, client: IpAddr) -> HeldBody<'_> {
        HeldBody { budget: self, client: client_address(client), bytes: 0, permit: None }
    }
}

/// The address a share is kept for: IPv4 as it is (an IPv4-mapped IPv6 address as its IPv4
/// address), IPv6 by its /64, since one host is routinely given a whole /64 to pick from.
fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The part of the budget one body being read holds.
#[derive(Debug)]
pub(crate) struct HeldBody<'b> {
    budget: &'b SignedBodyBudget,
    client: IpAddr,
    bytes: usize,
    permit: Option<tokio::sync::SemaphorePermit<'b>>,
}

impl HeldBody<'_> {
    /// Takes `bytes` more, or fails when the client's share or the whole budget is spent.
    pub(crate) fn more(&mut self, bytes: usize) -> Result<(), Unreadable> {
        let wanted = u32::try_from(bytes).map_err(|_| Unreadable::TooLarge)?;
        // Each change to the map is one statement: a poisoned lock is used as it is.
        let mut by_client = self.budget.by_client.lock().unwrap_or_else(PoisonError::into_inner);
        let held = by_client.get(&self.client).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.budget.share {
            return Err(Unreadable::OverShare);
        }
        let taken = self.budget.total.try_acquire_many(wanted).map_err(|_| Unreadable::OverBudget)?;
        *by_client.entry(self.client).or_default() += bytes;
        self.bytes += bytes;
        match &mut self.permit {
            Some(permit) => permit.merge(taken),
            None => self.permit = Some(taken),
        }
        Ok(())
    }
}

impl Drop for HeldBody<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut by_client = self.budget.by_client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = by_client.get_mut(&self.client) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                // Addresses that hold nothing take no memory.
                by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_address_holds_at_most_its_share_of_the_signed_body_budget() {
        let budget = SignedBodyBudget::new(100, 40);
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let mut first = budget.hold(here);
        first.more(30).unwrap();
        // The same host on another IPv6 address of its /64, or IPv4-mapped, is the same client.
        let mut second = budget.hold(here);
        assert_eq!(second.more(11), Err(Unreadable::OverShare));
        second.more(10).unwrap();
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let mut mapped = budget.hold(v6("::ffff:192.0.2.1"));
        assert_eq!(mapped.more(1), Err(Unreadable::OverShare));
        let mut host6 = budget.hold(v6("2001:db8:1:2::10"));
        host6.more(40).unwrap();
        assert_eq!(budget.hold(v6("2001:db8:1:2:ffff::1")).more(1), Err(Unreadable::OverShare));
        // Past the whole budget every client is refused, with its own share left.
        let mut other = budget.hold(v6("2001:db8:1:3::10"));
        other.more(20).unwrap();
        assert_eq!(budget.hold("198.51.100.7".parse().unwrap()).more(1), Err(Unreadable::OverBudget));
        // A body dropped gives back both its bytes of the budget and of its client's share.
        drop((first, second, mapped));
        assert!(!budget.by_client.lock().unwrap().contains_key(&here), "nothing kept for an address holding nothing");
        budget.hold(here).more(40).unwrap();
        drop((host6, other));
        assert!(budget.by_client.lock().unwrap().is_empty());
        assert_eq!(budget.total.available_permits(), 100);
    }

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
