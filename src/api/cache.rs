//! A short-lived cache of `stats` answers, with single-flight: the first request for a query
//! runs it, identical requests arriving meanwhile wait for that one answer, and later ones reuse
//! it until it is `ttl` old (`[api] stats_cache_ms`).
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
    asked: Instant,
    answer: Arc<OnceCell<Bytes>>,
}

#[derive(Default)]
pub struct StatsCache {
    entries: Mutex<HashMap<StatsKey, Entry>>,
}

impl StatsCache {
    /// The answer to `key`: cached if younger than `ttl`, else shared with an identical query in
    /// flight, else `compute`d here. Errors are not cached (a waiter then runs its own query).
    pub async fn get<F, Fut>(&self, key: StatsKey, ttl: Duration, compute: F) -> Result<(Bytes, CacheOutcome), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match entries.get(&key) {
                Some(e) if now.duration_since(e.asked) < ttl => Arc::clone(&e.answer),
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
                    entries.insert(key.clone(), Entry { asked: now, answer: Arc::clone(&answer) });
                    answer
                }
            }
        };
        if let Some(bytes) = cell.get() {
            return Ok((bytes.clone(), CacheOutcome::Hit));
        }
        let mut ran = false;
        let bytes = cell
            .get_or_try_init(|| {
                ran = true;
                compute()
            })
            .await?
            .clone();
        if ran && bytes.len() > MAX_ENTRY_BYTES {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.get(&key).is_some_and(|e| Arc::ptr_eq(&e.answer, &cell)) {
                entries.remove(&key);
            }
        }
        Ok((bytes, if ran { CacheOutcome::Miss } else { CacheOutcome::Shared }))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
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
        let cache = StatsCache::default();
        let runs = AtomicUsize::new(0);
        let ttl = Duration::from_secs(2);
        let compute = || async {
            let n = runs.fetch_add(1, SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Bytes::from(n.to_string()))
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

    #[test]
    fn errors_are_not_kept_and_memory_is_bounded() {
        let cache = StatsCache::default();
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
            cache.get(key(7), ttl, || async { Ok(big.clone()) }).await.unwrap();
            assert_eq!(cache.get(key(7), ttl, || async { Ok(Bytes::new()) }).await.unwrap().1, CacheOutcome::Miss);
        });
    }
}
