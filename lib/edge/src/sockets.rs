//! What one user or one address may hold and send on this edge's WebSockets: a socket costs
//! a task, buffers and a share of a subscription for as long as it stays open, and each
//! client frame can start a service call, so neither may be unbounded.

use mosaic_api::UserId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Open sockets per user and per client network (see [`mosaic_mesh::ctx::client_network`]).
pub struct SocketCounts {
    max_per_user: usize,
    max_per_network: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    users: HashMap<UserId, usize>,
    networks: HashMap<String, usize>,
}

/// Why a socket was refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    User(usize),
    Network(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::User(max) => write!(f, "at most {max} open sockets per user; close one first"),
            Refused::Network(max) => write!(f, "at most {max} open sockets per client address"),
        }
    }
}

/// One open socket's place in the counts, given back when dropped.
pub struct SocketSlot {
    counts: Arc<SocketCounts>,
    user: UserId,
    network: Option<String>,
}

impl SocketCounts {
    /// Caps of `max_per_user` and `max_per_network` sockets; 0 lifts a cap.
    pub fn new(max_per_user: usize, max_per_network: usize) -> Arc<Self> {
        Arc::new(Self { max_per_user, max_per_network, open: Mutex::new(Open::default()) })
    }

    /// A place for one more socket of `user` from `ip`, if both have room.
    pub fn acquire(self: &Arc<Self>, user: &UserId, ip: Option<IpAddr>) -> Result<SocketSlot, Refused> {
        let network = ip.map(mosaic_mesh::ctx::client_network);
        let mut open = self.open.lock().expect("socket counts poisoned");
        let by_user = open.users.get(user).copied().unwrap_or(0);
        if self.max_per_user > 0 && by_user >= self.max_per_user {
            return Err(Refused::User(self.max_per_user));
        }
        if let Some(n) = &network {
            let by_network = open.networks.get(n).copied().unwrap_or(0);
            if self.max_per_network > 0 && by_network >= self.max_per_network {
                return Err(Refused::Network(self.max_per_network));
            }
            *open.networks.entry(n.clone()).or_default() += 1;
        }
        *open.users.entry(user.clone()).or_default() += 1;
        Ok(SocketSlot { counts: self.clone(), user: user.clone(), network })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("socket counts poisoned");
        fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        give_back(&mut open.users, &self.user);
        if let Some(n) = &self.network {
            give_back(&mut open.networks, n);
        }
    }
}

/// A token bucket for one socket's client frames: `per_sec` sustained, twice that at once.
pub struct FrameRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl FrameRate {
    pub fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self { per_sec, burst: per_sec * 2.0, tokens: per_sec * 2.0, at: Instant::now() }
    }

    /// Whether a frame arriving at `now` may be handled.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_api::Id as _;
    use std::time::Duration;

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    #[test]
    fn users_and_addresses_are_capped_and_slots_come_back() {
        let counts = SocketCounts::new(2, 3);
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        let a1 = counts.acquire(&user(1), Some(home)).unwrap();
        let _a2 = counts.acquire(&user(1), Some(home)).unwrap();
        assert_eq!(counts.acquire(&user(1), Some(home)).err(), Some(Refused::User(2)));
        let _b1 = counts.acquire(&user(2), Some(home)).unwrap();
        assert_eq!(counts.acquire(&user(2), Some(home)).err(), Some(Refused::Network(3)));
        // Another address of the same /64 is the same network.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let counts6 = SocketCounts::new(0, 1);
        let _c = counts6.acquire(&user(3), Some(v6a)).unwrap();
        assert_eq!(counts6.acquire(&user(4), Some(v6b)).err(), Some(Refused::Network(1)));
        drop(a1);
        counts.acquire(&user(2), Some(home)).expect("a closed socket frees its places");
        assert_eq!(counts.open.lock().unwrap().users.get(&user(1)), Some(&1));
    }

    #[test]
    fn frames_beyond_the_rate_wait_for_tokens() {
        let start = Instant::now();
        let mut rate = FrameRate::new(10);
        let admitted = (0..100).filter(|_| rate.admit(start)).count();
        assert_eq!(admitted, 20, "a burst of twice the rate");
        assert!(!rate.admit(start + Duration::from_millis(50)));
        assert!(rate.admit(start + Duration::from_millis(150)), "a tenth of a second earns a frame");
    }
}
