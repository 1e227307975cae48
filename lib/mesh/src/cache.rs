//! In-memory read caches that stay coherent across a service's instances.
//!
//! A service keeps what its hot reads need in a [`Coherent`] cache and, after every write
//! that changes such a value, drops it locally and tells its other instances with a
//! [`Broadcast`] ([`Mesh::broadcast`]); each instance drops it when it hears that
//! ([`Mesh::on_broadcast`]). The notice travels over core NATS after the write committed,
//! so an instance that hears it reads the new value when it next fills the entry. A notice
//! lost with a connection leaves the stale value until the entry's time to live runs out.
//!
//! The race every such cache has (a reader loads the old value from the database, the
//! writer commits and invalidates, then the reader stores what it loaded) is closed by
//! identity: a reader takes the entry's [`Slot`] before it reads the database and writes
//! what it loaded into that slot. Invalidation detaches the slot from the cache, so a load
//! that started before the invalidation lands in a slot nobody reads any more.

use crate::client::Mesh;
use crate::service::Lifecycle;
use anyhow::Context as _;
use futures::StreamExt as _;
use mosaic_api::Broadcast;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One cached entry: a value filled by readers, detached from the cache on invalidation.
#[derive(Debug)]
pub struct Slot<V> {
    born: Instant,
    value: Mutex<V>,
}

impl<V> Slot<V> {
    /// Reads the value.
    pub fn read<R>(&self, f: impl FnOnce(&V) -> R) -> R {
        f(&self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes the value (a reader filling in what it loaded).
    pub fn write<R>(&self, f: impl FnOnce(&mut V) -> R) -> R {
        f(&mut self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A bounded cache of [`Slot`]s with a time to live; see the module documentation.
pub struct Coherent<K, V> {
    entries: quick_cache::sync::Cache<K, Arc<Slot<V>>>,
    ttl: Duration,
    /// Orders [`Coherent::update`] and [`Coherent::invalidate`], so neither loses the other.
    writers: Mutex<()>,
}

impl<K: Eq + Hash + Clone, V> std::fmt::Debug for Coherent<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coherent").field("len", &self.entries.len()).field("ttl", &self.ttl).finish()
    }
}

impl<K: Eq + Hash + Clone, V: Default> Coherent<K, V> {
    /// A cache of at most `capacity` entries, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { entries: quick_cache::sync::Cache::new(capacity.max(1)), ttl, writers: Mutex::new(()) }
    }

    /// The current slot of `key`, a fresh empty one if there is none or it is too old.
    /// Take it before reading the source, and fill it with what was read.
    pub fn slot(&self, key: &K) -> Arc<Slot<V>> {
        if let Some(slot) = self.entries.get(key)
            && slot.born.elapsed() < self.ttl
        {
            return slot;
        }
        let fresh = Arc::new(Slot { born: Instant::now(), value: Mutex::new(V::default()) });
        // Two readers may race to replace an expired slot; the later one wins and the
        // earlier one's fill is lost, which costs one more load, never correctness.
        self.entries.insert(key.clone(), fresh.clone());
        fresh
    }

    /// The live slot of `key`, if the cache holds one; unlike [`Coherent::slot`], never a
    /// new one.
    pub fn live(&self, key: &K) -> Option<Arc<Slot<V>>> {
        self.entries.get(key).filter(|slot| slot.born.elapsed() < self.ttl)
    }

    /// Holds `value` for `key` when the cache holds no live slot of it: for a writer that
    /// knows a value no reader has loaded yet (a record just created). Returns whether it
    /// did. The caller must know that no change is missing from `value`: a notice of a
    /// change that came before this call has nothing to drop.
    pub fn fill(&self, key: &K, value: V) -> bool {
        let _order = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.live(key).is_some() {
            return false;
        }
        self.entries.insert(key.clone(), Arc::new(Slot { born: Instant::now(), value: Mutex::new(value) }));
        true
    }

    /// Drops `key`: readers from now on start from an empty slot.
    pub fn invalidate(&self, key: &K) {
        let _order = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        self.entries.remove(key);
    }

    /// Replaces the value of `key` with what `change` makes of it, when the cache holds a
    /// live one and `change` returns `Some`; drops it like [`Coherent::invalidate`]
    /// otherwise. For a writer that knows what it changed (a new row to add to a cached
    /// list) instead of making every reader load again. The new value gets a new slot, so a
    /// load in flight lands in the old one; `change` may see a value that already holds
    /// the change (a reader loaded it after the write), so it must be idempotent.
    pub fn update(&self, key: &K, change: impl FnOnce(&V) -> Option<V>) {
        let _order = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        let next = self
            .entries
            .get(key)
            .filter(|slot| slot.born.elapsed() < self.ttl)
            .and_then(|slot| slot.read(change).map(|value| (slot.born, value)));
        match next {
            Some((born, value)) => self.entries.insert(key.clone(), Arc::new(Slot { born, value: Mutex::new(value) })),
            None => {
                self.entries.remove(key);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

impl Mesh {
    /// Tells every instance listening (through [`Mesh::on_broadcast`]) about `notice`. At
    /// most once: meant for cache invalidation, where a lost notice costs freshness only.
    pub async fn broadcast<B: Broadcast>(&self, notice: &B) -> anyhow::Result<()> {
        self.check(crate::component::Use::Publish(B::SUBJECT))?;
        let payload = serde_json::to_vec(notice).context("encoding broadcast")?;
        self.client().publish(B::SUBJECT, payload.into()).await.with_context(|| format!("publishing to {}", B::SUBJECT))
    }

    /// Calls `handle` with every `B` any instance broadcasts, this one's included, until
    /// shutdown. Returns once the server knows of the subscription.
    pub async fn on_broadcast<B: Broadcast>(
        &self,
        lifecycle: &Lifecycle,
        handle: impl Fn(B) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.listen(B::SUBJECT, lifecycle, move |payload| serde_json::from_slice::<B>(payload).map(&handle)).await
    }

    /// Calls `handle` with every `E` published from now on, at most once each, over core
    /// NATS (no consumer): for caches that a domain event invalidates. The event may arrive
    /// a moment after the write (it leaves through the writer's outbox), so such a cache
    /// serves the old value for that moment.
    pub async fn on_event_notice<E: mosaic_api::Event>(
        &self,
        lifecycle: &Lifecycle,
        handle: impl Fn(E) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.listen(E::SUBJECT, lifecycle, move |payload| {
            serde_json::from_slice::<mosaic_api::Envelope<E>>(payload).map(|e| handle(e.data))
        })
        .await
    }

    async fn listen(
        &self,
        subject: &'static str,
        lifecycle: &Lifecycle,
        handle: impl Fn(&[u8]) -> serde_json::Result<()> + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.check(crate::component::Use::Subscribe(subject))?;
        let mut sub = self.client().subscribe(subject).await.with_context(|| format!("subscribing to {subject}"))?;
        self.client().flush().await.context("flushing subscription")?;
        let shutdown = lifecycle.shutdown().clone();
        lifecycle.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = sub.next() => m,
                };
                let Some(msg) = msg else { return };
                if let Err(e) = handle(&msg.payload) {
                    tracing::warn!(subject, error = %e, "undecodable notice ignored");
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_started_before_an_invalidation_is_not_seen() {
        let cache: Coherent<u32, Option<u64>> = Coherent::new(16, Duration::from_secs(60));
        let reader = cache.slot(&1);
        // The writer commits and invalidates while the reader is loading the old value.
        cache.invalidate(&1);
        reader.write(|v| *v = Some(41));
        assert_eq!(cache.slot(&1).read(|v| *v), None);
    }

    #[test]
    fn a_known_value_is_filled_only_where_nothing_is_held() {
        let cache: Coherent<u32, Option<u64>> = Coherent::new(16, Duration::from_secs(60));
        assert!(cache.live(&1).is_none());
        assert!(cache.fill(&1, Some(0)));
        assert_eq!(cache.live(&1).map(|s| s.read(|v| *v)), Some(Some(0)));
        // A reader's load is not overwritten.
        cache.slot(&2).write(|v| *v = Some(7));
        assert!(!cache.fill(&2, Some(0)));
        assert_eq!(cache.slot(&2).read(|v| *v), Some(7));
        cache.invalidate(&1);
        assert!(cache.live(&1).is_none(), "live never makes a slot");
    }

    #[test]
    fn a_fill_is_seen_by_later_readers_until_it_expires() {
        let cache: Coherent<u32, Option<u64>> = Coherent::new(16, Duration::from_millis(30));
        cache.slot(&1).write(|v| *v = Some(42));
        assert_eq!(cache.slot(&1).read(|v| *v), Some(42));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.slot(&1).read(|v| *v), None);
    }

    #[test]
    fn an_update_changes_a_held_value_in_a_new_slot_and_drops_an_empty_one() {
        let cache: Coherent<u32, Option<Vec<u64>>> = Coherent::new(16, Duration::from_secs(60));
        let add = |n: u64| move |v: &Option<Vec<u64>>| v.as_ref().map(|v| Some([vec![n], v.clone()].concat()));
        cache.slot(&1).write(|v| *v = Some(vec![1]));
        let loading = cache.slot(&1);
        cache.update(&1, add(2));
        assert_eq!(cache.slot(&1).read(Clone::clone), Some(vec![2, 1]));
        // A load that started before the update lands in the old slot.
        loading.write(|v| *v = Some(vec![1]));
        assert_eq!(cache.slot(&1).read(Clone::clone), Some(vec![2, 1]));

        // Being filled (empty): dropped, so the fill in flight is not seen.
        let filling = cache.slot(&2);
        cache.update(&2, add(3));
        filling.write(|v| *v = Some(vec![1]));
        assert_eq!(cache.slot(&2).read(Clone::clone), None);
    }
}
