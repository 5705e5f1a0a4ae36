//! Client addresses as the limits see them (an IPv4 address, or an IPv6 /64: what one subscriber
//! usually holds), with per-address slots and per-address token buckets.

use crate::rate::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The unit a per-address limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Net([u8; 8]),
}

impl AddressKey {
    /// The key for `ip`: IPv4 whole, IPv6 by its /64.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.octets()),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&v6.octets()[..8]);
                    AddressKey::V6Net(net)
                }
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressKey::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            AddressKey::V6Net(n) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(n);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
        }
    }
}

type Counts = Arc<Mutex<HashMap<AddressKey, usize>>>;

/// At most `limit` held slots per address. An address's entry lives only while it holds one.
#[derive(Debug, Clone)]
pub struct PerAddressSlots {
    limit: usize,
    counts: Counts,
}

/// One slot, given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    key: AddressKey,
    counts: Counts,
}

impl PerAddressSlots {
    /// At most `limit` slots per address.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::default(),
        }
    }

    /// A slot for `key`, unless it holds `limit` already.
    pub fn try_acquire(&self, key: AddressKey) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(key).or_insert(0);
        if *held >= self.limit {
            return None;
        }
        *held += 1;
        Some(AddressSlot {
            key,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A token bucket per address: `rate` per second, bursts of `burst`. A bucket that has refilled
/// completely says nothing an empty map would not, so such entries are dropped when the map grows:
/// no address is remembered longer than `burst / rate` seconds after its last call.
pub struct PerAddressRate {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl std::fmt::Debug for PerAddressRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerAddressRate").finish_non_exhaustive()
    }
}

/// The buckets, and the size past which full ones are dropped (twice what survived the last
/// pruning, so pruning costs amortised constant time per call).
struct Buckets {
    by_address: HashMap<AddressKey, TokenBucket>,
    prune_above: usize,
}

/// Buckets are never pruned below this many.
const MIN_PRUNE_ABOVE: usize = 1024;

impl PerAddressRate {
    /// `rate` calls a second per address, up to `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(Buckets {
                by_address: HashMap::new(),
                prune_above: MIN_PRUNE_ABOVE,
            }),
        }
    }

    /// How long one token takes to come back: the wait a refused caller is told.
    pub fn refill_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.rate.max(0.001))
    }

    /// Takes one token for `key`, or says the address is over its rate.
    pub fn allow(&self, key: AddressKey) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.by_address.len() > buckets.prune_above {
            buckets.by_address.retain(|_, b| !b.is_full(rate, burst));
            buckets.prune_above = (buckets.by_address.len() * 2).max(MIN_PRUNE_ABOVE);
        }
        buckets
            .by_address
            .entry(key)
            .or_insert_with(|| TokenBucket::full(burst))
            .take(rate, burst)
    }

    /// Addresses remembered now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_address
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a.into()), AddressKey::of(b.into()));
        assert_ne!(AddressKey::of(a.into()), AddressKey::of(c.into()));
        let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(
            AddressKey::of(mapped.into()),
            AddressKey::of(Ipv4Addr::new(10, 0, 0, 1).into())
        );
    }

    #[test]
    fn slots_are_per_address_and_given_back() {
        let slots = PerAddressSlots::new(2);
        let a = AddressKey::of(Ipv4Addr::new(127, 0, 0, 2).into());
        let b = AddressKey::of(Ipv4Addr::new(127, 0, 0, 3).into());
        let one = slots.try_acquire(a).unwrap();
        let _two = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none(), "third slot for a refused");
        assert!(slots.try_acquire(b).is_some(), "b is unaffected");
        drop(one);
        assert!(slots.try_acquire(a).is_some(), "a slot came back");
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_and_are_forgotten_once_full() {
        let rate = PerAddressRate::new(10.0, 5.0);
        let a = AddressKey::of(Ipv4Addr::new(127, 0, 0, 2).into());
        assert!((0..5).all(|_| rate.allow(a)));
        assert!(!rate.allow(a), "burst used up");
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(rate.allow(a), "one token back after 0.1 s at 10/s");
        for n in 0..3000u32 {
            rate.allow(AddressKey::of(Ipv4Addr::from(n).into()));
        }
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        for n in 10_000..13_000u32 {
            rate.allow(AddressKey::of(Ipv4Addr::from(n).into()));
        }
        // Without pruning 6,001 addresses would be held; the refilled first 3,000 are gone.
        assert!(rate.tracked() <= 3001, "tracked {}", rate.tracked());
    }
}
