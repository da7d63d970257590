//! Recipes from the hub: for each product in `[fleet] products`, the station watches the
//! product's key in the recipes bucket (its history first, so a station that was offline during a
//! publish gets the latest when it reconnects), fetches the package named by the sha256,
//! verifies the bytes against it, unpacks it, and runs it as the local recipe's shadow or live
//! model (`[fleet] recipe_policy`). What it did is kept in the store (`fleet_recipes`: a restart
//! does not install a recipe twice), in the audit log, and in the station's status to the hub.

use super::wire::{self, FetchedRecipe, PublishedRecipe};
use super::{FleetMetrics, StationLink, now_ms, sleep_or_stop};
use crate::config::fleet::RecipePolicy;
use crate::sinks::store::{self, audit};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest recipe package a station takes (a model package is tens of MB at most).
pub const MAX_PACKAGE_BYTES: u64 = 1 << 30;

/// The recipes this store has fetched before.
pub fn already_fetched(db: &Path) -> Vec<FetchedRecipe> {
    let read = || -> rusqlite::Result<Vec<FetchedRecipe>> {
        let conn = store::open_read_only(db)?;
        let mut stmt =
            conn.prepare("SELECT product, sha256, recipe, action, outcome, at_ms FROM fleet_recipes ORDER BY at_ms")?;
        stmt.query_map([], |r| {
            Ok(FetchedRecipe {
                product: r.get(0)?,
                sha256: r.get(1)?,
                recipe: r.get(2)?,
                action: r.get(3)?,
                outcome: r.get(4)?,
                at_ms: r.get(5)?,
            })
        })?
        .collect()
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "fleet: cannot read the recipes fetched before");
        Vec::new()
    })
}

pub(super) async fn watch(
    link: &StationLink,
    js: &jetstream::Context,
    metrics: &FleetMetrics,
    fetched: &Mutex<Vec<FetchedRecipe>>,
    stop: &AtomicBool,
) {
    let watchers = link
        .config
        .products
        .iter()
        .map(|(product, recipe)| watch_product(link, js, metrics, fetched, stop, product, recipe));
    futures_util::future::join_all(watchers).await;
}

async fn watch_product(
    link: &StationLink,
    js: &jetstream::Context,
    metrics: &FleetMetrics,
    fetched: &Mutex<Vec<FetchedRecipe>>,
    stop: &AtomicBool,
    product: &str,
    recipe: &str,
) {
    let retry = Duration::from_secs(2);
    loop {
        let bucket = match js.get_key_value(wire::RECIPES_BUCKET).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "fleet: no recipes bucket yet (nothing published)");
                if sleep_or_stop(stop, retry).await {
                    return;
                }
                continue;
            }
        };
        let mut entries = match bucket.watch_with_history(product).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, product, "fleet: cannot watch the product's recipes; retrying");
                if sleep_or_stop(stop, retry).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), entries.next()).await;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            match next {
                Err(_) => continue, // no news; check the stop flag
                Ok(None) => break,  // the watcher ended: watch again
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, product, "fleet: recipe watch failed; watching again");
                    break;
                }
                Ok(Some(Ok(entry))) if entry.operation == kv::Operation::Put => {
                    let done = handle(link, js, product, recipe, &entry.value, fetched).await;
                    if let Some(done) = done {
                        metrics.recipes.with_label_values(&[if done.outcome == "ok" { "ok" } else { "failed" }]).inc();
                        fetched.lock().unwrap_or_else(|e| e.into_inner()).push(done);
                    }
                }
                Ok(Some(Ok(_))) => {} // a delete or purge: the station keeps what it runs
            }
        }
        if sleep_or_stop(stop, retry).await {
            return;
        }
    }
}

/// Fetch, verify and apply one published recipe; `None` when this store has it already.
async fn handle(
    link: &StationLink,
    js: &jetstream::Context,
    product: &str,
    recipe: &str,
    value: &[u8],
    fetched: &Mutex<Vec<FetchedRecipe>>,
) -> Option<FetchedRecipe> {
    let published: PublishedRecipe = match serde_json::from_slice(value) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, product, "fleet: a published recipe that cannot be read; ignored");
            return None;
        }
    };
    let seen = fetched
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|f| f.product == product && f.sha256 == published.sha256 && f.outcome == "ok");
    if seen {
        return None;
    }
    let policy = link.config.recipe_policy;
    tracing::info!(product, sha256 = %published.sha256, model = %published.model_name, recipe, policy = policy.as_str(), "fleet: new recipe published");
    let outcome = match fetch(js, &published, &link.packages_dir, product).await {
        Ok(dir) => {
            let (link_recipes, recipe_name, dir2) =
                (std::sync::Arc::clone(&link.recipes), recipe.to_string(), dir.clone());
            let settings = (published.threshold, published.rules.clone());
            let applied =
                tokio::task::spawn_blocking(move || apply(&link_recipes, &recipe_name, &dir2, policy, settings))
                    .await
                    .unwrap_or_else(|e| Err(format!("install task: {e}")));
            applied.map(|()| dir)
        }
        Err(e) => Err(e),
    };
    let (package, outcome) = match outcome {
        Ok(dir) => (dir.display().to_string(), "ok".to_string()),
        Err(e) => {
            tracing::error!(product, sha256 = %published.sha256, error = %e, "fleet: recipe not applied");
            (String::new(), e)
        }
    };
    let done = FetchedRecipe {
        product: product.into(),
        sha256: published.sha256.clone(),
        recipe: recipe.into(),
        action: policy.as_str().into(),
        outcome,
        at_ms: now_ms(),
    };
    record(&link.store, &done, &package);
    Some(done)
}

/// The package's bytes from the object store, checked against the sha256 they are named by,
/// unpacked into `packages_dir/<product>-<sha256>`.
async fn fetch(
    js: &jetstream::Context,
    p: &PublishedRecipe,
    packages_dir: &Path,
    product: &str,
) -> Result<PathBuf, String> {
    if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 {:?} is not 64 hex digits", p.sha256));
    }
    if p.bytes > MAX_PACKAGE_BYTES {
        return Err(format!("package of {} bytes is over the {MAX_PACKAGE_BYTES}-byte limit", p.bytes));
    }
    let store = js.get_object_store(wire::PACKAGES_BUCKET).await.map_err(|e| format!("packages bucket: {e}"))?;
    let mut object = store.get(&p.sha256).await.map_err(|e| format!("package {}: {e}", p.sha256))?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.map_err(|e| format!("package {}: {e}", p.sha256))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != p.sha256.to_ascii_lowercase() {
        return Err(format!("package bytes have sha256 {sha}, not the published {}: refused", p.sha256));
    }
    let dir = packages_dir.join(format!("{product}-{sha}"));
    let unpack_to = dir.clone();
    tokio::task::spawn_blocking(move || unpack(&bytes, &unpack_to))
        .await
        .map_err(|e| format!("unpack task: {e}"))??;
    Ok(dir)
}

/// Unpack a package's tar into `dir` (replaced), through a temporary folder beside it. Entries
/// that would land outside it are refused by `tar` itself.
fn unpack(bytes: &[u8], dir: &Path) -> Result<(), String> {
    let parent = dir.parent().ok_or("no parent folder")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    tar::Archive::new(bytes).unpack(&tmp).map_err(|e| format!("unpacking the package: {e}"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Run the package as `recipe`'s shadow or live model, as the policy says; a live one with the
/// published threshold and rules when given. (A shadow runs with the package's threshold and the
/// station's rules: see docs/FLEET.md.)
fn apply(
    recipes: &crate::api::LiveRecipes,
    recipe: &str,
    dir: &Path,
    policy: RecipePolicy,
    (threshold, rules): (Option<f32>, Option<serde_json::Value>),
) -> Result<(), String> {
    let index = recipes.switch.recipe_names().iter().position(|r| r == recipe).ok_or("no such recipe")?;
    match policy {
        RecipePolicy::Fetch => Ok(()),
        RecipePolicy::Shadow => {
            let shadows = recipes.shadows.as_ref().ok_or("this station cannot run shadow models (no result store)")?;
            shadows.start(index, dir, crate::shadow::DEFAULT_SHARE).map(|_| ())
        }
        RecipePolicy::Activate => {
            let installer = recipes.installer.as_ref().ok_or("this station cannot install models")?;
            // Rules that do not fit this station (its cameras, its scales) refuse the recipe
            // before anything changes.
            let rules = match &rules {
                Some(r) => Some(crate::api::parse_rules(r, installer.config()).map_err(|e| e.to_string())?),
                None => None,
            };
            let installed = installer.install(recipe, dir)?;
            let slot = match rules {
                Some(rules) => installer.install_rules(recipe, rules)?.slot,
                None => installed.slot,
            };
            if let Some(t) = threshold {
                recipes.thresholds.set(usize::from(slot), t).map_err(|why| format!("threshold {t}: {why}"))?;
            }
            recipes.move_cameras_blocking(installed.previous, slot);
            Ok(())
        }
    }
}

fn record(db: &Path, done: &FetchedRecipe, package: &str) {
    let write = || -> rusqlite::Result<()> {
        let mut conn = store::open_for_review(db)?;
        conn.execute(
            "INSERT OR REPLACE INTO fleet_recipes (product, sha256, recipe, package, action, outcome, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![done.product, done.sha256, done.recipe, package, done.action, done.outcome, done.at_ms],
        )?;
        let change = audit::Change {
            who: "fleet".into(),
            action: format!("fleet.recipe.{}", done.action),
            target: done.recipe.clone(),
            old: None,
            new: Some(format!("{} {} ({})", done.product, done.sha256, done.outcome)),
        };
        audit::record(&mut conn, done.at_ms, &[change])
    };
    if let Err(e) = write() {
        tracing::error!(error = %e, "fleet: cannot record the fetched recipe in the store");
    }
}
