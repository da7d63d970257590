//! Publishing a recipe for a product (`linesight hub publish-recipe`): the model package,
//! checked as a station would load it, packed as a tar (entries sorted, times and owners zeroed,
//! so the same package always gives the same bytes), stored in the packages object store under
//! the sha256 of those bytes, and named by the product's key in the recipes bucket. Stations
//! watching the product fetch it, verify the hash and install it (see `crate::fleet::recipes`).

use crate::fleet::wire::{self, PublishedRecipe};
use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, object_store, stream};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How many recipes per product the bucket keeps (the latest counts).
const HISTORY: i64 = 10;

/// The package folder as tar bytes, deterministic.
pub fn pack(dir: &Path) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut tar = tar::Builder::new(Vec::new());
    for rel in &files {
        let bytes = std::fs::read(dir.join(rel)).with_context(|| format!("reading {}", dir.join(rel).display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        tar.append_data(&mut header, rel, bytes.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

/// Publish `package` as the recipe of `product` (threshold: run it at this image-score threshold
/// where stations activate it). Returns what was published.
pub async fn publish(
    js: &jetstream::Context,
    product: &str,
    package: &Path,
    threshold: Option<f32>,
    rules: Option<serde_json::Value>,
    by: &str,
    replicas: usize,
) -> Result<PublishedRecipe> {
    if !crate::config::fleet::is_fleet_id(product) {
        bail!("product {product:?}: use 1-64 letters, digits, '-' or '_'");
    }
    if let Some(t) = threshold
        && !t.is_finite()
    {
        bail!("threshold {t}: give a finite number");
    }
    if rules.as_ref().is_some_and(|r| !r.is_array()) {
        bail!(
            "rules: give a JSON list of rules, as in [[rule]] (e.g. [{{\"class\": \"scratch\", \"min_area_px\": 20}}])"
        );
    }
    // A package a station could not load is refused here, not on every station.
    let loaded = crate::model::ModelPackage::load(package).with_context(|| format!("package {}", package.display()))?;
    let bytes = pack(package)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let objects = match js.get_object_store(wire::PACKAGES_BUCKET).await {
        Ok(o) => o,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: wire::PACKAGES_BUCKET.into(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .context("creating the packages object store")?,
    };
    objects.put(sha256.as_str(), &mut bytes.as_slice()).await.context("storing the package")?;
    let recipes = match js.get_key_value(wire::RECIPES_BUCKET).await {
        Ok(k) => k,
        Err(_) => {
            create_recipes_bucket(js, replicas).await?;
            js.get_key_value(wire::RECIPES_BUCKET).await.context("opening the recipes bucket")?
        }
    };
    let published = PublishedRecipe {
        v: wire::VERSION,
        product: product.into(),
        sha256,
        bytes: bytes.len() as u64,
        model_name: loaded.manifest.name.clone(),
        threshold,
        rules,
        published_ms: crate::fleet::now_ms(),
        published_by: by.into(),
    };
    recipes.put(product, serde_json::to_vec(&published)?.into()).await.context("naming the recipe for the product")?;
    Ok(published)
}

/// The recipes bucket's stream, as the key-value layer lays it out. Made directly because the
/// client's `create_key_value` first asks the account's API level, which servers before 2.10
/// (Debian 12's 2.9) answer in a shape the client cannot read.
async fn create_recipes_bucket(js: &jetstream::Context, replicas: usize) -> Result<()> {
    let bucket = wire::RECIPES_BUCKET;
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: HISTORY,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.context("creating the recipes bucket")?;
    Ok(())
}
