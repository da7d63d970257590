//! A short-lived cache of `stats` answers, with single-flight and refresh-ahead: the first
//! request for a query runs it, identical requests arriving meanwhile wait for that one answer,
//! and later ones reuse it until it is `ttl` old (`[api] stats_cache_ms`). A request that finds
//! an answer past [`REFRESH_AT`] of its `ttl` still gets it, and starts one query in the
//! background to replace it: a query asked for continuously is answered from the cache without
//! a wait, and never by more than one query at a time.
//!
//! **Staleness bound.** An entry's age counts from the moment its query was asked for, before
//! it read anything, and an entry is never used (nor waited on) at `ttl` or older. So an answer
//! reflects the store as it was at most `ttl` before it was sent: inspections committed in the
//! last `ttl` may be missing from it, nothing else.
//!
//! **Keys** are the query after parsing ([`StatsKey`]): times as unix ms (RFC 3339 and ms
//! spellings of one instant share an entry), the bucket with its default applied, the camera.
//! An explicit `from`/`to` is kept to the millisecond: the API never answers a window other
//! than the one asked for. An omitted `to` ("up to now") is kept as "now" in the key, not as a
//! time: every "last 24 h" dashboard shares one entry, computed up to the moment its query ran
//! (the answer's `to_unix_ms` says which), which is the same bound as above. Rounding "now" to
//! the second instead would expire every such entry at the same instant, each second, and make
//! all their clients queue behind the same burst of queries.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] entries, and answers over [`MAX_ENTRY_BYTES`] are
//! not kept (their waiters still share them).

use super::error::ApiError;
use super::metrics::CacheOutcome;
use super::params::Bucket;
use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Most entries kept at once; expired ones go first, then the oldest.
pub const MAX_ENTRIES: usize = 128;
/// Larger answers (long ranges of minute buckets) are not kept.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// From this share of its `ttl` on, a request served an entry starts its replacement.
pub const REFRESH_AT: f64 = 0.75;

/// Everything that shapes a `stats` answer, besides the store's contents (the UTC offset is
/// fixed by the configuration and `to`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatsKey {
    /// `None`: 24 h before `to`.
    pub from: Option<i64>,
    /// `None`: now.
    pub to: Option<i64>,
    pub camera: Option<String>,
    pub bucket: Bucket,
}

struct Entry {
    /// When its query was asked for: its age, and the staleness bound, count from here.
    asked: Instant,
    answer: Arc<OnceCell<Bytes>>,
    /// A background query to replace it is running.
    refreshing: bool,
}

#[derive(Default)]
pub struct StatsCache {
    entries: Mutex<HashMap<StatsKey, Entry>>,
}

/// What a lookup found.
enum Found {
    /// A usable entry (its answer may still be coming); `true`: refresh it in the background.
    Entry(Arc<OnceCell<Bytes>>, bool),
    /// Nothing usable: a new entry, to compute here.
    New(Arc<OnceCell<Bytes>>),
}

impl StatsCache {
    /// The answer to `key`: cached if younger than `ttl`, else shared with an identical query in
    /// flight, else `compute`d here. Errors are not cached (a waiter then runs its own query).
    /// Must run inside a tokio runtime (a refresh is a task of its own).
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: StatsKey,
        ttl: Duration,
        compute: F,
    ) -> Result<(Bytes, CacheOutcome), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let found = {
            let mut entries = self.lock();
            let now = Instant::now();
            match entries.get_mut(&key) {
                Some(e) if now.duration_since(e.asked) < ttl => {
                    let refresh = !e.refreshing
                        && e.answer.initialized()
                        && now.duration_since(e.asked) >= ttl.mul_f64(REFRESH_AT);
                    e.refreshing |= refresh;
                    Found::Entry(Arc::clone(&e.answer), refresh)
                }
                _ => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, e| now.duration_since(e.asked) < ttl);
                    }
                    if entries.len() >= MAX_ENTRIES
                        && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.asked).map(|(k, _)| k.clone())
                    {
                        entries.remove(&oldest);
                    }
                    let answer = Arc::new(OnceCell::new());
                    entries.insert(key.clone(), Entry { asked: now, answer: Arc::clone(&answer), refreshing: false });
                    Found::New(answer)
                }
            }
        };
        let cell = match found {
            Found::Entry(cell, refresh) => {
                if let Some(bytes) = cell.get() {
                    if refresh {
                        self.refresh(key, compute());
                        return Ok((bytes.clone(), CacheOutcome::HitRefreshing));
                    }
                    return Ok((bytes.clone(), CacheOutcome::Hit));
                }
                cell
            }
            Found::New(cell) => cell,
        };
        let mut ran = false;
        let bytes = cell
            .get_or_try_init(|| {
                ran = true;
                compute()
            })
            .await?
            .clone();
        if ran && bytes.len() > MAX_ENTRY_BYTES {
            let mut entries = self.lock();
            if entries.get(&key).is_some_and(|e| Arc::ptr_eq(&e.answer, &cell)) {
                entries.remove(&key);
            }
        }
        Ok((bytes, if ran { CacheOutcome::Miss } else { CacheOutcome::Shared }))
    }

    /// Run `query` as a task; its answer replaces `key`'s entry, unless a newer one came first.
    /// On failure the entry stays as it was, and a later request tries again.
    fn refresh(self: &Arc<Self>, key: StatsKey, query: impl Future<Output = Result<Bytes, ApiError>> + Send + 'static) {
        let (cache, asked) = (Arc::clone(self), Instant::now());
        tokio::spawn(async move {
            let result = query.await;
            let mut entries = cache.lock();
            let Some(e) = entries.get_mut(&key) else { return };
            if e.asked > asked {
                return;
            }
            match result {
                Ok(bytes) if bytes.len() <= MAX_ENTRY_BYTES => {
                    *e = Entry { asked, answer: Arc::new(OnceCell::new_with(Some(bytes))), refreshing: false };
                }
                Ok(_) => drop(entries.remove(&key)),
                Err(error) => {
                    tracing::debug!(?error, "stats cache refresh failed");
                    e.refreshing = false;
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StatsKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn key(from: i64) -> StatsKey {
        StatsKey { from: Some(from), to: None, camera: None, bucket: Bucket::Hour }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn identical_queries_share_one_run_and_expire_after_the_ttl() {
        let cache = Arc::new(StatsCache::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let ttl = Duration::from_secs(2);
        let compute = || {
            let runs = Arc::clone(&runs);
            async move {
                let n = runs.fetch_add(1, SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Bytes::from(n.to_string()))
            }
        };
        rt().block_on(async {
            // Three at once: one runs, two wait for it.
            let (a, b, c) = tokio::join!(
                cache.get(key(1), ttl, compute),
                cache.get(key(1), ttl, compute),
                cache.get(key(1), ttl, compute)
            );
            let mut outcomes = vec![a.as_ref().unwrap().1, b.as_ref().unwrap().1, c.as_ref().unwrap().1];
            outcomes.sort_by_key(|o| *o as u8);
            assert_eq!(outcomes, [CacheOutcome::Shared, CacheOutcome::Shared, CacheOutcome::Miss]);
            assert_eq!(runs.load(SeqCst), 1);
            assert!([a, b, c].iter().all(|r| r.as_ref().unwrap().0 == "1"));
            // Within the TTL: the same answer; another key: its own run.
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("1"), CacheOutcome::Hit));
            assert_eq!(cache.get(key(2), ttl, compute).await.unwrap(), (Bytes::from("2"), CacheOutcome::Miss));
            tokio::time::sleep(ttl).await;
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("3"), CacheOutcome::Miss));
        });
    }

    /// Past 3/4 of its TTL an entry is still served, and replaced by one background query: the
    /// next request gets the new answer, and it lives a full TTL from its own query.
    #[test]
    fn a_busy_entry_is_refreshed_ahead_of_its_expiry() {
        let cache = Arc::new(StatsCache::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let ttl = Duration::from_secs(1);
        let compute = || {
            let runs = Arc::clone(&runs);
            async move {
                let n = runs.fetch_add(1, SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Bytes::from(n.to_string()))
            }
        };
        rt().block_on(async {
            let t0 = Instant::now();
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("1"), CacheOutcome::Miss));
            tokio::time::sleep(ttl.mul_f64(REFRESH_AT)).await;
            let (old, outcome) = cache.get(key(1), ttl, compute).await.unwrap();
            assert_eq!((old, outcome), (Bytes::from("1"), CacheOutcome::HitRefreshing));
            // One refresh at a time.
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("1"), CacheOutcome::Hit));
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("2"), CacheOutcome::Hit));
            tokio::time::sleep((t0 + ttl + Duration::from_millis(100)).saturating_duration_since(Instant::now())).await;
            assert_eq!(cache.get(key(1), ttl, compute).await.unwrap(), (Bytes::from("2"), CacheOutcome::Hit));
            assert_eq!(runs.load(SeqCst), 2);
        });
    }

    #[test]
    fn errors_are_not_kept_and_memory_is_bounded() {
        let cache = Arc::new(StatsCache::default());
        let ttl = Duration::from_secs(60);
        rt().block_on(async {
            let failed = cache.get(key(1), ttl, || async { Err(ApiError::Internal("boom".into())) }).await;
            assert!(failed.is_err());
            let ok = cache.get(key(1), ttl, || async { Ok(Bytes::from("fine")) }).await.unwrap();
            assert_eq!(ok, (Bytes::from("fine"), CacheOutcome::Miss));
            for n in 0..(MAX_ENTRIES as i64 + 20) {
                cache.get(key(100 + n), ttl, || async { Ok(Bytes::from("x")) }).await.unwrap();
            }
            assert_eq!(cache.len(), MAX_ENTRIES);
            // The newest stayed, the oldest went.
            let newest = 100 + MAX_ENTRIES as i64 + 19;
            assert_eq!(cache.get(key(newest), ttl, || async { Ok(Bytes::new()) }).await.unwrap().1, CacheOutcome::Hit);
            assert_eq!(cache.get(key(100), ttl, || async { Ok(Bytes::new()) }).await.unwrap().1, CacheOutcome::Miss);
            let big = Bytes::from(vec![b' '; MAX_ENTRY_BYTES + 1]);
            cache.get(key(7), ttl, move || async move { Ok(big) }).await.unwrap();
            assert_eq!(cache.get(key(7), ttl, || async { Ok(Bytes::new()) }).await.unwrap().1, CacheOutcome::Miss);
        });
    }
}
