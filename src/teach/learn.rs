//! `linesight teach`: a PatchCore-style anomaly model learned from a folder of good images.
//!
//! 1. **Split.** The images (sorted by name) are shuffled with the seed; `holdout_fraction` of them
//!    (at least [`MIN_HOLDOUT`]) are held out for validation and calibration, the rest teach.
//!    Labelled defective images (`--defects`, [`super::defects`]) are checked and kept apart: they
//!    are never taught as good.
//! 2. **Recipe search** ([`super::recipe`]): candidate input handlings and sizes follow from the
//!    images' median size and aspect ratio (explicit `--input-mode` / `--size` stay fixed). Each
//!    candidate, cheapest first and within `--time-budget`, is taught from the teach split
//!    (steps 3–5) and scores the validation set: the held-out goods, [`SYNTHETIC_PER_GOOD`]
//!    synthetic defects painted on each ([`super::synthetic`]) and the labelled defects. The
//!    candidate with the best validation AUROC (synthetic, averaged with labelled when at least
//!    [`operating_point::MIN_LABELLED`] are given) wins — but the default recipe
//!    ([`recipe::preferred`]) is kept unless another is better in at least
//!    [`selection::CONFIDENCE`] of paired bootstrap resamples of the validation set, since that
//!    set is small and its synthetic defects a noisy judge ([`super::selection`]). The winner is
//!    then tried on the finer patch grid and with the other contrast handling, which likewise
//!    need confident evidence. With labelled defects, how the winner's map is read (its
//!    smoothing and image-score rule, [`super::post`]) is chosen the same way, by them alone.
//!    For whole-part inputs, each place of the patch grid may then be scaled by what the held-out
//!    goods score there, when the places differ enough ([`super::place_scale`]).
//! 3. **Features.** Each image is fed exactly as the runtime will feed frames — squashed to the
//!    model size (`resize`) or cut into overlapping model-size tiles (`tile`), with the runtime's
//!    own preprocessing functions — through the feature graph ([`super::onnx::feature_graph`]):
//!    backbone taps, 3×3 local averaging, per-tap L2 normalisation, one row per feature cell.
//!    Very large teach sets are thinned to `max_patches` rows by a seeded per-tile sample.
//! 4. **PCA** to `pca_dims` ([`super::pca`]), fitted on a seeded 200,000-row sample, then
//!    whitened to the power `whiten` (1: each component scaled to unit variance, so the search
//!    measures Mahalanobis distances in the PCA space; worth +0.014 image AUROC on MTD).
//! 5. **Coreset.** Greedy k-center selection of `coreset_ratio` of the rows, at most
//!    `max_bank_rows` (default: what the backbone's scoring budget allows) ([`super::coreset`]),
//!    run on a seeded pool of [`CORESET_POOL_PER_ROW`] rows per bank row: the memory bank.
//!    With `local_scale_k` > 0, each bank row also gets its local scale (mean distance to its k
//!    nearest other rows, [`super::knn::Bank::local_scales`]), which divides its patches' distances.
//! 6. **Operating point** ([`super::operating_point`]): the winning candidate's calibration
//!    model (taught without the held-out images) gives the scores the threshold is chosen from —
//!    by default the 99th percentile of the held-out goods (`--max-overkill 1`), lowered to catch
//!    labelled defects, or at `--target-escape` — and the expected overkill (with its confidence
//!    bound) and escape (synthetic, labelled) at it, written to the manifest.
//! 7. **Model.** Steps 3–5 again on every image, the held-out ones included (a bank from all the
//!    goods scores better), with the backbone and the bank baked into one ONNX graph and the
//!    threshold from step 6.
//!
//! The package (`model.onnx` + `model.toml`, task `anomaly`) is written to a temporary folder next
//! to `out` and renamed into place, so a failed teach never leaves half a package.

use super::backbone::Backbone;
use super::coreset::{CoresetParams, CoresetSize, greedy_coreset};
use super::defects;
use super::feeder::{Feeder, decode, header};
use super::head::{self, HeadChoice, HeadMode, ImagePatches};
use super::int8;
use super::knn::Bank;
use super::onnx::{self, InputShape, NearestSearch, Scoring};
use super::operating_point::{self, Rule, ScoreStats, Scores};
pub use super::options::{Stage, TeachOptions};
use super::options::{check_options, set_stage};
use super::package::write_package;
use super::pca;
use super::place_scale;
use super::placed::PlacedGaussians;
use super::post::{self, GridScores, Post};
use super::precision;
use super::recipe::{self, Fixed, Geometry, Recipe};
use super::selection;
use super::synthetic;
use crate::model::manifest::{HeadInfo, OperatingPointEstimate, RecipeSearch, RecipeTrial, TeachInfo};
use crate::sources::mask_files;
use crate::stages::infer::runtime;
use anyhow::{Context, Result, anyhow, bail};
use ort::session::Session;
use ort::value::TensorRef;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Fewest images `teach` accepts: enough for a bank and a held-out set of [`MIN_HOLDOUT`].
pub const MIN_IMAGES: usize = 8;
/// Fewest held-out images for calibration.
pub const MIN_HOLDOUT: usize = 2;
/// Rows drawn for the PCA fit.
const PCA_SAMPLE_ROWS: usize = 200_000;
/// Images per feature-graph run.
const BATCH: usize = 8;
/// Multiply-adds per input pixel the nearest-neighbour search may cost by default (query patches
/// × bank rows × dims ÷ pixels) when `backbone.toml` does not say
/// (`scoring_budget_macs_per_pixel`): 2,048, i.e. 2²⁷ ≈ 134 M for a 256² input. The backbone's
/// cost grows with the input's area too, so a per-pixel budget keeps scoring below the backbone
/// at any size. Lite2 uses this (`make bench-teach`: scoring 0.65–0.73 of its backbone on one
/// CPU thread with local scales): 8,192 bank rows on the stride-16 grid with 64 dims, 2,048 on
/// stride 8, whatever the input size. Lite0 is a third cheaper per pixel, so its package says
/// 1,536 (6,144 and 1,536 rows).
pub const SCORING_BUDGET_MACS_PER_PIXEL: usize = 2048;

/// What a teach run did, for the command's summary and the manifest.
#[derive(Clone, Debug)]
pub struct TeachReport {
    pub out: PathBuf,
    pub info: TeachInfo,
    pub threshold: f32,
    /// Things the user should know (skipped defects, suspect goods, skipped candidates).
    pub warnings: Vec<String>,
}

/// Synthetic defects painted on each held-out good image for validation.
const SYNTHETIC_PER_GOOD: usize = 2;

/// One candidate recipe taught from the teach split and scored on the validation set.
struct Trial {
    recipe: Recipe,
    /// The calibration model's PCA, bank and local scales (no bank when the places' Gaussians
    /// score).
    calibration: (pca::Pca, Vec<f32>, Option<Vec<f32>>),
    /// The teach split's patches (kept for the shipped bank when this recipe wins).
    patches: Vec<f32>,
    /// Patch rows kept per tile.
    keep: usize,
    /// Tiles of every image (teach split and held out).
    tiles: usize,
    scores: Scores,
    /// The validation images' patch scores, for the post-processing search.
    grids: GridScores,
    validation: f64,
    synthetic_auroc: f64,
    labelled_auroc: Option<f64>,
    seconds: f64,
    seconds_features: f64,
    seconds_calibration: f64,
}

/// Teach a model package from good images. See the module docs for the procedure.
pub fn teach(opts: &TeachOptions) -> Result<TeachReport> {
    let started = Instant::now();
    check_options(opts)?;
    let mut backbone = Backbone::load(&opts.backbone).map_err(|e| anyhow!(e))?;
    if let Some(size) = opts.size
        && !(size as usize).is_multiple_of(backbone.multiple_of)
    {
        bail!("--size {size} must be a multiple of {} for backbone {}", backbone.multiple_of, backbone.name);
    }
    let listed = list_images(&opts.images)?;
    let mut warnings: Vec<String> = listed.masks_warning().into_iter().collect();
    let files = listed.files;
    let (teach_set, holdout) = split(&files, opts.holdout_fraction, opts.seed);
    let labelled = match &opts.defects {
        Some(dir) => {
            let found = defects::load(dir)?;
            warnings.extend(found.warnings());
            found.usable
        }
        None => Vec::new(),
    };
    let headers = files.iter().map(|p| header(p)).collect::<Result<Vec<_>>>()?;
    let sizes: Vec<(u32, u32)> = headers.iter().map(|h| (h.width, h.height)).collect();
    let geometry = Geometry::median(&sizes);
    let fixed = Fixed {
        mode: opts.input_mode,
        size: opts.size,
        grid: opts.grid_stride,
        contrast: opts.input_contrast,
        scorer: opts.placed,
    };
    // Gray parts are fed on one channel when the backbone can fold its colour input (see
    // `onnx::gray`): the same features for a third of the stem's work.
    let gray = headers.iter().all(|h| h.gray);
    let foldable = gray && onnx::gray_input_supported(&backbone);
    if gray && !foldable && backbone.int8 {
        warnings.push(format!(
            "the INT8 copy {} quantizes its stem, so these gray parts are fed on three channels; `make \
             backbone-int8 IMAGES=DIR` again makes a copy that reads them on one (faster)",
            backbone.name
        ));
    }
    let channels = if foldable { 1 } else { 3 };
    let candidates = recipe::candidates(geometry, fixed, backbone.multiple_of as u32, channels);
    let preferred = recipe::preferred(&candidates, geometry);
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let mut quantized = None;
    let recipe_for_calibration = preferred.or_else(|| candidates.first().copied());
    let vnni = precision::cpu_has_vnni();
    if let Some(recipe) = recipe_for_calibration
        && !backbone.int8
        && opts.precision.int8(true, vnni)
    {
        set_stage(opts, || format!("quantizing backbone {} to INT8 on the good images", backbone.name));
        let feeder = Feeder::new(recipe, opts.tile_overlap_px);
        let inputs = calibration_inputs(&feeder, &teach_set, opts.seed);
        // Eight-bit weights where the taught model will run at full precision (this CPU has VNNI;
        // `auto` quantizes only then), seven where `int8` was asked for without it.
        let bits = if vnni { int8::WeightBits::Eight } else { int8::WeightBits::Seven };
        let (quantized_backbone, report) = int8::quantize(&backbone, feeder.shape, &inputs, bits, threads)?;
        tracing::info!(backbone = %quantized_backbone.name, inputs = report.calibration_inputs, tensors = report.tensors, seconds = report.seconds, "teach quantized the backbone");
        backbone = quantized_backbone;
        quantized = Some(report);
    }
    let validation = Validation { holdout: &holdout, labelled: &labelled, seed: opts.seed };
    let fixed_post = post::Fixed { blur_sigma_px: opts.blur_sigma_px, top_fraction: opts.top_fraction };
    // How the map is read is searched on the winner only with labelled defects to judge it and
    // something left to choose.
    let post_search = labelled.len() >= operating_point::MIN_LABELLED && fixed_post.leaves_choice();
    let ctx = Ctx { opts, backbone: &backbone, threads, post: fixed_post.starting(), post_search, place_scale: None };

    // The search: every candidate taught from the teach split and judged on the validation set,
    // cheapest first, as long as the candidate and the final teach still fit the time budget.
    let mut best: Option<Trial> = None;
    let mut trials: Vec<RecipeTrial> = Vec::new();
    let mut per_pixel_s = 0.0f64;
    let mut skipped: Vec<String> = Vec::new();
    let mut too_narrow: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<Recipe> = candidates.into();
    let mut refined = false;
    while let Some(recipe) = queue.pop_front() {
        let pixels = recipe.pixels_per_image(geometry) as f64;
        if !ctx.post.fits(recipe) {
            // A strip-shaped input too narrow for the map's blur (its kernel reaches 4σ).
            too_narrow.push(format!(
                "{} (too narrow for the map's blur of {} px)",
                recipe.describe(),
                ctx.post.blur_sigma_px
            ));
            continue;
        }
        if let Some(b) = &best {
            // This candidate, then the final teach of whichever wins (on every image, not only the
            // teach split) and the checks after it.
            let predicted = per_pixel_s * pixels;
            let final_teach = predicted.max(b.seconds) * files.len() as f64 / teach_set.len().max(1) as f64;
            let total = started.elapsed().as_secs_f64() + predicted + final_teach;
            if total > opts.time_budget_s {
                skipped.push(format!(
                    "{} (about {predicted:.0} s; the teach would end near {total:.0} s)",
                    recipe.describe()
                ));
                continue;
            }
        }
        set_stage(opts, || {
            format!("trying input recipe {} ({} tried, {} to go)", recipe.describe(), trials.len(), queue.len())
        });
        let trial = ctx.try_recipe(recipe, &files, &teach_set, &validation)?;
        per_pixel_s = per_pixel_s.max(trial.seconds / pixels);
        let is_preferred = Some(recipe) == preferred;
        // The default recipe stays unless another is better with confidence; between two others,
        // the one tried first (cheaper) stays unless the later one is (see `selection`).
        let (replace, beat_best) = match &best {
            None => (true, None),
            Some(b) if recipe.placed && fixed.scorer.is_none() => {
                let (replace, p) = selection::replaces_on_labelled(&trial.scores, &b.scores, opts.seed);
                (replace, Some(p))
            }
            Some(b) => {
                let (replace, p) = selection::replaces(&trial.scores, &b.scores, is_preferred, opts.seed);
                (replace, Some(p))
            }
        };
        tracing::info!(recipe = %recipe.describe(), validation = trial.validation, ?beat_best, replace, seconds = trial.seconds, "teach candidate");
        trials.push(RecipeTrial {
            recipe: recipe.describe(),
            validation: round4(trial.validation),
            synthetic_auroc: round4(trial.synthetic_auroc),
            labelled_auroc: trial.labelled_auroc.map(round4),
            seconds: round1(trial.seconds),
            preferred: is_preferred,
            beat_best: beat_best.map(round4),
        });
        if replace {
            best = Some(trial);
        }
        // Once every input recipe was tried, the winner on the finer patch grid and with the
        // other contrast handling.
        if queue.is_empty() && !refined {
            refined = true;
            // The places' Gaussians only where labelled defects can judge them: the synthetic
            // defects misjudge them (research round 13).
            let placed_judged = labelled.len() >= operating_point::MIN_LABELLED;
            queue.extend(
                best.as_ref()
                    .map(|b| recipe::refinements(b.recipe, fixed))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| !r.placed || placed_judged),
            );
        }
    }
    let search_s = started.elapsed().as_secs_f64();
    if !skipped.is_empty() {
        warnings.push(format!(
            "not tried within the --time-budget of {:.0} s: {}",
            opts.time_budget_s,
            skipped.join(", ")
        ));
    }
    if !too_narrow.is_empty() {
        warnings.push(format!("not tried: {} (a smaller --blur-sigma would fit them)", too_narrow.join(", ")));
    }
    skipped.append(&mut too_narrow);
    let Trial {
        recipe,
        calibration,
        mut patches,
        keep,
        tiles,
        mut scores,
        grids,
        seconds_features,
        seconds_calibration,
        ..
    } = best.ok_or_else(|| anyhow!("no input recipe fits these images: {}", skipped.join(", ")))?;

    // The map's smoothing and image-score rule, on the winner, when labelled defects can judge
    // it (see `post`): the same validation images rescored from their patch scores; the default
    // stays unless another is better with confidence, as for the recipes.
    let mut post_trials = Vec::new();
    let mut chosen_post = ctx.post;
    let alternatives = if ctx.post_search { post::alternatives(fixed_post, recipe) } else { Vec::new() };
    if !alternatives.is_empty() {
        set_stage(opts, || format!("trying {} ways to read the anomaly map", alternatives.len() + 1));
        post_trials.push(post_trial(ctx.post, &scores, 0.0, true, None));
        // Every side of a comparison through the same post-processing graph (the incumbent too).
        let mut incumbent = post::rescore(&backbone, recipe, ctx.post, None, &grids, threads)?;
        for alt in alternatives {
            let t = Instant::now();
            let rescored = post::rescore(&backbone, recipe, alt, None, &grids, threads)?;
            let (replace, p) = selection::replaces_on_labelled(&rescored, &incumbent, opts.seed);
            tracing::info!(post = %alt.describe(), beat_best = p, replace, "teach post-processing candidate");
            post_trials.push(post_trial(alt, &rescored, t.elapsed().as_secs_f64(), false, Some(p)));
            if replace {
                (chosen_post, incumbent) = (alt, rescored);
            }
        }
        // The threshold is set from the chosen reading's scores; the default's are the full
        // calibration model's own.
        if chosen_post != ctx.post {
            scores = incumbent;
        }
    }
    // Where parts are fixtured, each place's patch scores over what the held-out goods score
    // there (see `place_scale`): measured on the winner's grids, used when the places differ
    // enough (or as `--place-scale` says), and the validation images rescored with it.
    // (The places' Gaussians already judge each place on its own.)
    let scalable = recipe.fixed_places() && !recipe.placed;
    let measured = if scalable {
        let (gh, gw) = recipe.patch_grid();
        place_scale::measure(&grids.goods, gh, gw)
    } else {
        None
    };
    if opts.place_scale == Some(true) && measured.is_none() {
        warnings.push(format!(
            "--place-scale on: not used, {}",
            if scalable {
                "too few held-out good images to measure it on"
            } else {
                "tiles and the places' Gaussians have no fixed places to scale"
            }
        ));
    }
    let place_structure = measured.as_ref().map(|m| round4(m.structure));
    let place_scale = measured.filter(|m| opts.place_scale.unwrap_or_else(|| m.worth_it())).map(|m| m.scale);
    if let Some(scale) = &place_scale {
        scores = post::rescore(&backbone, recipe, chosen_post, Some(scale), &grids, threads)?;
    }
    drop(grids);
    let ctx = Ctx { post: chosen_post, place_scale, ..ctx };
    let feeder = Feeder::new(recipe, opts.tile_overlap_px);
    warnings.extend(suspects(&holdout, &scores.goods, "scores"));
    let per_image: Vec<usize> = teach_set.iter().map(|p| Ok(feeder.tile_count(p)? * keep)).collect::<Result<_>>()?;
    warnings.extend(ctx.suspect_teach_images(&teach_set, &patches, &per_image, &calibration.0)?);

    // Mixed supervision: a distance correction learned from the labelled defects, used when it
    // beats the plain distance leave-one-defect-out. The held-out goods with even positions are
    // its negatives, so only the others calibrate the threshold from then on.
    let mut head_info = None;
    let mut correction = None;
    let judges = holdout.len() / 2;
    // The correction is learned on bank distances; the places' Gaussians have none.
    let try_head = opts.head != HeadMode::Off && labelled.len() >= operating_point::MIN_LABELLED && !recipe.placed;
    if try_head && judges < HEAD_MIN_JUDGES {
        warnings.push(format!(
            "no distance correction learned from the labelled defects: it needs {} held-out good images, {} were held \
             out (more good images, or a larger --holdout)",
            2 * HEAD_MIN_JUDGES,
            holdout.len()
        ));
    } else if try_head {
        set_stage(opts, || "learning a correction from the labelled defects".into());
        let mut choice = ctx.learn_head(&feeder, &calibration, &holdout, &labelled)?;
        if let Some(c) = &choice.correction {
            let (fitted, bank, scales) = &calibration;
            let model = ctx.scoring_model(fitted, bank, scales, recipe, Some(c), None, false)?;
            let mut scorer = session_from_bytes(&model, threads).context("loading the calibration model")?;
            let (mut with, _) = score_validation(&mut scorer, &feeder, &validation, false, opts.progress)?;
            with.goods = odd_positions(&with.goods);
            // The graph's own image score (top of the blurred map) must agree with the
            // leave-one-out's stand-in (the worst patch): on goods the head never saw, the
            // synthetic defects must not rank worse with it.
            let without = Scores { goods: odd_positions(&scores.goods), ..scores.clone() };
            let (a_with, a_without) = (with.aurocs().0.unwrap_or(0.5), without.aurocs().0.unwrap_or(0.5));
            if a_with + HEAD_SYNTHETIC_SLACK < a_without && opts.head == HeadMode::Auto {
                warnings.push(format!(
                    "the distance correction learned from the labelled defects is not used: it ranks the synthetic \
                     defects worse (AUROC {a_with:.4} against {a_without:.4})"
                ));
                choice.correction = None;
            } else {
                scores = with;
            }
        }
        tracing::info!(?choice.lambda, choice.loo_auroc, choice.baseline_loo_auroc, used = choice.correction.is_some(), "teach head");
        head_info = Some(head_record(&choice, labelled.len()));
        correction = choice.correction;
    }
    // A correction was learned on the calibration PCA's whitened features: the shipped bank
    // must be searched in that same basis (a PCA refitted on every image may order, sign and
    // scale its components differently).
    let basis = correction.as_ref().map(|_| calibration.0.clone());
    drop(calibration);

    let rule =
        Rule { sigmas: opts.threshold_sigmas, target_escape: opts.target_escape, max_overkill: opts.max_overkill };
    let point = operating_point::choose(&scores, &rule).ok_or_else(|| anyhow!("no held-out good image was scored"))?;
    let threshold = point.threshold;
    if opts.target_escape.is_some() && labelled.len() < operating_point::MIN_LABELLED && scores.synthetic.is_empty() {
        warnings.push("--target-escape: no defects to measure it on; the threshold follows --max-overkill".into());
    }
    if (1..operating_point::MIN_LABELLED).contains(&labelled.len()) {
        warnings.push(format!(
            "only {} usable labelled defect(s): they adjust the threshold but do not choose the recipe (give at least {})",
            labelled.len(),
            operating_point::MIN_LABELLED
        ));
    }

    // The shipped model: the winning recipe taught again from every image, held-out ones
    // included (research round 3: a bank from all the goods is worth ~0.015 image AUROC on MTD),
    // with the threshold above.
    let shape = recipe.shape();
    let t_final = Instant::now();
    set_stage(opts, || format!("teaching {} on all {} images", recipe.describe(), files.len()));
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x686f_6c64);
    let dim = backbone.feature_dim();
    let added = if recipe.placed {
        placed_images(&holdout, keep, patches.len() / (dim * keep).max(1), opts)
    } else {
        holdout.clone()
    };
    ctx.features(&feeder, &added, keep, &mut rng, &mut patches)?;
    let rows = patches.len() / dim;
    let ((fitted, bank, scales, times), placed) = if recipe.placed {
        let (fitted, placed, times) = ctx.placed_of(&patches, recipe)?;
        ((fitted, Vec::new(), None, times), Some(placed))
    } else {
        (ctx.bank_of(&patches, recipe.grid, basis.as_ref(), "bank")?, None)
    };
    drop(patches);
    let model_bytes =
        ctx.scoring_model(&fitted, &bank, &scales, recipe, correction.as_deref(), placed.as_ref(), false)?;
    let bank_rows = bank.len() / fitted.dims;
    let final_s = t_final.elapsed().as_secs_f64();
    let stats = ScoreStats::of(&scores.goods);
    let info = TeachInfo {
        backbone: backbone.name.clone(),
        backbone_sha256: backbone.sha256.clone(),
        backbone_int8: backbone.int8,
        int8_calibration_inputs: quantized.as_ref().map_or(0, |q| q.calibration_inputs),
        int8_weight_bits: quantized.as_ref().map_or(0, |q| q.weight_bits.count()),
        nearest_search: nearest_search(&backbone).name().into(),
        input_mode: recipe.mode,
        images: files.len(),
        teach_images: teach_set.len(),
        holdout_images: holdout.len(),
        tiles,
        patches: rows,
        feature_dim: dim,
        grid_stride: recipe.grid,
        input_contrast: recipe.contrast,
        pca_dims: fitted.dims,
        pca_explained: round4(fitted.explained),
        pca_whiten: opts.whiten,
        coreset_ratio: opts.coreset_ratio,
        max_bank_rows: ctx.max_bank_rows(recipe.grid),
        bank_rows,
        placed: recipe.placed,
        place_scale: ctx.place_scale.is_some(),
        place_structure,
        local_scale_k: opts.local_scale_k,
        seed: opts.seed,
        blur_sigma_px: chosen_post.blur_sigma_px,
        top_fraction: chosen_post.top_fraction,
        threshold_rule: format!(
            "{}, scored by a model taught without them; the shipped bank is taught from all {} images",
            point.rule,
            files.len()
        ),
        holdout_score_mean: stats.mean as f32,
        holdout_score_std: stats.std as f32,
        holdout_score_max: stats.max as f32,
        holdout_rejected: point.holdout_goods_rejected,
        seconds_features: round1(seconds_features),
        seconds_pca: round1(times.pca),
        seconds_coreset: round1(times.coreset),
        seconds_local_scale: round1(times.local_scale),
        seconds_calibration: round1(seconds_calibration),
        seconds_quantize: round1(quantized.as_ref().map_or(0.0, |q| q.seconds)),
        seconds_total: round1(started.elapsed().as_secs_f64()),
        peak_memory_mb: peak_memory_mb(),
        linesight_version: env!("CARGO_PKG_VERSION").into(),
        defect_images: labelled.len(),
        operating_point: Some(round_point(point)),
        recipe: Some(RecipeSearch {
            chosen: recipe.describe(),
            criterion: criterion(labelled.len()),
            seconds: round1(search_s),
            candidates: trials,
            skipped,
            post_chosen: (!post_trials.is_empty()).then(|| chosen_post.describe()),
            post_candidates: post_trials,
        }),
        head: head_info,
    };
    tracing::info!(seconds = final_s, "teach: shipped model");
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| opts.out.file_name().map_or_else(|| "taught".into(), |n| n.to_string_lossy().into_owned()));
    write_package(&opts.out, &name, &model_bytes, shape, threshold, &info, opts.keep_existing)?;
    Ok(TeachReport { out: opts.out.clone(), info, threshold, warnings })
}

/// A post-processing candidate as the manifest records it: judged by the labelled defects.
fn post_trial(p: Post, scores: &Scores, seconds: f64, preferred: bool, beat_best: Option<f64>) -> RecipeTrial {
    let (synthetic, labelled) = scores.aurocs();
    RecipeTrial {
        recipe: p.describe(),
        validation: round4(labelled.unwrap_or(0.5)),
        synthetic_auroc: round4(synthetic.unwrap_or(0.5)),
        labelled_auroc: labelled.map(round4),
        seconds: round1(seconds),
        preferred,
        beat_best: beat_best.map(round4),
    }
}

fn criterion(labelled: usize) -> String {
    let synthetic = format!(
        "image AUROC of the held-out goods against {SYNTHETIC_PER_GOOD} synthetic defects painted on each (scratch, \
         pit, crack, stain, texture patch)"
    );
    let figure = if labelled >= operating_point::MIN_LABELLED {
        format!("mean of the {synthetic} and the same against the {labelled} labelled defects")
    } else {
        synthetic
    };
    format!(
        "{figure}; the default recipe is kept unless another beats it in {:.0}% of paired bootstrap resamples of the \
         validation set, and any other must beat the best so far as often",
        100.0 * selection::CONFIDENCE
    )
}

fn round_point(mut p: OperatingPointEstimate) -> OperatingPointEstimate {
    p.estimated_overkill = round4(p.estimated_overkill);
    p.estimated_overkill_upper95 = round4(p.estimated_overkill_upper95);
    p.estimated_escape_synthetic = p.estimated_escape_synthetic.map(round4);
    p.estimated_escape_labelled = p.estimated_escape_labelled.map(round4);
    p
}

/// Images whose score is far above the others' (robust z > [`SUSPECT_Z`]: median +
/// z × 1.4826 × MAD): likely defective parts in the good folder, named so that someone looks at
/// them. `what` says which scores.
fn suspects(paths: &[PathBuf], scores: &[f32], what: &str) -> Vec<String> {
    if scores.len() < 8 || scores.len() != paths.len() {
        return Vec::new();
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut dev: Vec<f32> = sorted.iter().map(|s| (s - median).abs()).collect();
    dev.sort_by(f32::total_cmp);
    let mad = dev[dev.len() / 2] * 1.4826;
    if mad <= 0.0 {
        return Vec::new();
    }
    paths
        .iter()
        .zip(scores)
        .filter(|&(_, &s)| (s - median) / mad > SUSPECT_Z)
        .map(|(p, s)| {
            format!(
                "{} looks defective ({what} {s:.4}, {:.0} robust deviations above the good images' median): check it, \
                 and remove it from the good images if it is",
                p.display(),
                (s - median) / mad
            )
        })
        .collect()
}

/// Robust deviations above the median that make a good image suspect.
const SUSPECT_Z: f32 = 6.0;
/// Bank rows (a seeded sample of the other fold's patches) the teach images are checked against.
const SUSPECT_BANK_ROWS: usize = 2048;

/// What every step of a teach run needs.
struct Ctx<'a> {
    opts: &'a TeachOptions,
    backbone: &'a Backbone,
    threads: usize,
    /// How the models it builds read their maps.
    post: Post,
    /// Whether the map's reading is searched (with labelled defects to judge it).
    post_search: bool,
    /// Each place's typical good score over the median place's, once chosen
    /// ([`super::place_scale`]): the models built from then on divide by it.
    place_scale: Option<Vec<f32>>,
}

/// Seconds spent in the bank's steps.
#[derive(Clone, Copy, Debug, Default)]
struct BankTimes {
    pca: f64,
    coreset: f64,
    local_scale: f64,
}

/// A fitted PCA, the bank in its space, the local scales, and what they took.
type LearnedBank = (pca::Pca, Vec<f32>, Option<Vec<f32>>, BankTimes);

/// The images a recipe is judged on.
struct Validation<'a> {
    holdout: &'a [PathBuf],
    labelled: &'a [PathBuf],
    seed: u64,
}

impl Ctx<'_> {
    /// The bank bound on a patch grid of stride `grid`: `--max-bank-rows`, else the backbone's
    /// scoring budget.
    fn max_bank_rows(&self, grid: usize) -> usize {
        self.opts
            .max_bank_rows
            .unwrap_or_else(|| budget_bank_rows(self.backbone.scoring_budget_macs_per_pixel, grid, self.opts.pca_dims))
    }

    /// The tiles of every image, and the rows kept per tile so that together they stay within
    /// `max_patches`.
    fn tiles_and_keep(&self, feeder: &Feeder, files: &[PathBuf]) -> Result<(usize, usize)> {
        let total: usize = files.iter().map(|p| feeder.tile_count(p)).sum::<Result<usize>>()?;
        Ok((total, (self.opts.max_patches / total.max(1)).clamp(1, feeder.cells())))
    }

    /// Teach `recipe` from the teach split and score the validation set with it.
    fn try_recipe(&self, recipe: Recipe, files: &[PathBuf], teach_set: &[PathBuf], v: &Validation) -> Result<Trial> {
        let t0 = Instant::now();
        let feeder = Feeder::new(recipe, self.opts.tile_overlap_px);
        let (tiles, keep) = self.tiles_and_keep(&feeder, files)?;
        // Each place's Gaussian needs every patch of an image, in grid order: thinned by whole
        // images instead.
        let (keep, teach_set) = if recipe.placed {
            (feeder.cells(), placed_images(teach_set, feeder.cells(), 0, self.opts))
        } else {
            (keep, teach_set.to_vec())
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed ^ 0x7465_6163_6800);
        let mut patches = Vec::new();
        self.features(&feeder, &teach_set, keep, &mut rng, &mut patches)?;
        let seconds_features = t0.elapsed().as_secs_f64();
        let ((fitted, bank, scales), placed) = if recipe.placed {
            let (fitted, placed, _) = self.placed_of(&patches, recipe)?;
            ((fitted, Vec::new(), None), Some(placed))
        } else {
            let (fitted, bank, scales, _) =
                self.bank_of(&patches, recipe.grid, None, &format!("{}: calibration bank", recipe.describe()))?;
            ((fitted, bank, scales), None)
        };
        let t1 = Instant::now();
        // The calibration models keep their patch scores on the grid: the map's reading and the
        // places' scale are chosen on them.
        let model = self.scoring_model(&fitted, &bank, &scales, recipe, None, placed.as_ref(), true)?;
        let mut scorer = session_from_bytes(&model, self.threads).context("loading the calibration model")?;
        let (scores, grids) = score_validation(&mut scorer, &feeder, v, true, self.opts.progress)?;
        let seconds_calibration = t1.elapsed().as_secs_f64();
        let (synthetic, labelled) = scores.aurocs();
        let synthetic = synthetic.unwrap_or(0.5);
        let validation = selection::criterion(&scores);
        Ok(Trial {
            recipe,
            calibration: (fitted, bank, scales),
            patches,
            keep,
            tiles,
            scores,
            grids,
            validation,
            synthetic_auroc: synthetic,
            labelled_auroc: labelled,
            seconds: t0.elapsed().as_secs_f64(),
            seconds_features,
            seconds_calibration,
        })
    }

    /// Teach-split images unlike the others (see [`suspects`]): the split in two folds by
    /// position, each image's patches (projected with the calibration PCA, `per_image` rows each,
    /// in order) against a seeded sample of the other fold's; its score is the mean of its 3
    /// largest nearest-neighbour distances. A coarse check, for obvious defects among the goods.
    fn suspect_teach_images(
        &self,
        teach_set: &[PathBuf],
        patches: &[f32],
        per_image: &[usize],
        fitted: &pca::Pca,
    ) -> Result<Vec<String>> {
        let z = fitted.project(patches)?;
        let dims = fitted.dims;
        if per_image.iter().sum::<usize>() * dims != z.len() {
            bail!("the teach images' patch rows do not add up: an image changed while teaching");
        }
        let mut starts = Vec::with_capacity(per_image.len());
        let mut at = 0;
        for &n in per_image {
            starts.push(at);
            at += n;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed ^ 0x7375_7370);
        let mut scores = vec![0.0f32; teach_set.len()];
        for fold in 0..2 {
            let other: Vec<usize> = (0..per_image.len())
                .filter(|i| i % 2 != fold)
                .flat_map(|i| starts[i]..starts[i] + per_image[i])
                .collect();
            if other.is_empty() {
                return Ok(Vec::new());
            }
            let picked = rand::seq::index::sample(&mut rng, other.len(), SUSPECT_BANK_ROWS.min(other.len()));
            let rows: Vec<f32> =
                picked.iter().flat_map(|k| z[other[k] * dims..(other[k] + 1) * dims].iter().copied()).collect();
            let bank = Bank::new(rows, dims)?;
            for i in (0..per_image.len()).filter(|i| i % 2 == fold) {
                let mut d = bank.nearest_distances_with_threads(
                    &z[starts[i] * dims..(starts[i] + per_image[i]) * dims],
                    self.opts.threads,
                )?;
                d.sort_by(|a, b| b.total_cmp(a));
                d.truncate(3);
                scores[i] = d.iter().sum::<f32>() / d.len().max(1) as f32;
            }
        }
        Ok(suspects(teach_set, &scores, "distance to the other good images"))
    }

    /// Fit and judge the distance correction ([`super::head`]) on the calibration model's
    /// patches: held-out goods with even positions as negatives (at most [`HEAD_GOOD_PATCHES`]
    /// seeded patches each), the other held-out goods to judge it, and the labelled defects.
    fn learn_head(
        &self,
        feeder: &Feeder,
        calibration: &(pca::Pca, Vec<f32>, Option<Vec<f32>>),
        holdout: &[PathBuf],
        labelled: &[PathBuf],
    ) -> Result<HeadChoice> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed ^ 0x6865_6164);
        let goods = self.image_patches(feeder, calibration, holdout)?;
        let defects = self.image_patches(feeder, calibration, labelled)?;
        let mut train = Vec::new();
        let mut eval = Vec::new();
        for (i, g) in goods.into_iter().enumerate() {
            if i % 2 == 0 {
                train.push(sample_patches(g, HEAD_GOOD_PATCHES, calibration.0.dims, &mut rng));
            } else {
                eval.push(g);
            }
        }
        Ok(head::choose(&train, &eval, &defects, calibration.0.dims, self.opts.head == HeadMode::Always))
    }

    /// Every patch of each image (all tiles) as the calibration model sees it: whitened features
    /// and (locally scaled) nearest-neighbour distance.
    fn image_patches(
        &self,
        feeder: &Feeder,
        (fitted, bank, scales): &(pca::Pca, Vec<f32>, Option<Vec<f32>>),
        paths: &[PathBuf],
    ) -> Result<Vec<ImagePatches>> {
        let mut rows = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        self.features(feeder, paths, feeder.cells(), &mut rng, &mut rows)?;
        let z = fitted.project(&rows)?;
        drop(rows);
        let dims = fitted.dims;
        let bank = Bank::new(bank.clone(), dims)?;
        let ones;
        let scales = match scales {
            Some(s) => s.as_slice(),
            None => {
                ones = vec![1.0f32; bank.len()];
                &ones
            }
        };
        let d = bank.nearest_scaled_distances(&z, scales, self.opts.threads)?;
        let counts: Vec<usize> =
            paths.iter().map(|p| Ok(feeder.tile_count(p)? * feeder.cells())).collect::<Result<_>>()?;
        if counts.iter().sum::<usize>() != d.len() {
            bail!(
                "{} patch rows for images whose headers promise {}: an image changed while teaching",
                d.len(),
                counts.iter().sum::<usize>()
            );
        }
        let mut out = Vec::with_capacity(paths.len());
        let mut at = 0;
        for n in counts {
            out.push(ImagePatches { z: z[at * dims..(at + n) * dims].to_vec(), d: d[at..at + n].to_vec() });
            at += n;
        }
        Ok(out)
    }

    /// Append the patch rows of `paths` (`keep` seeded rows per tile) to `patches`.
    fn features(
        &self,
        feeder: &Feeder,
        paths: &[PathBuf],
        keep: usize,
        rng: &mut ChaCha8Rng,
        patches: &mut Vec<f32>,
    ) -> Result<()> {
        let feature_model =
            onnx::feature_graph(self.backbone, feeder.shape, feeder.grid).map_err(|e| anyhow!("--grid-stride: {e}"))?;
        let mut session = session_from_bytes(&feature_model, self.threads).context("loading the feature graph")?;
        let bar = progress_bar(self.opts.progress, paths.len() as u64, "features");
        let (cells, dim) = (feeder.cells(), self.backbone.feature_dim());
        let mut batch = Vec::new();
        let mut failures = Vec::new();
        for path in paths {
            if let Err(e) = feeder.tensors(path, &mut batch) {
                failures.push(format!("{}: {e}", path.display()));
            }
            if batch.len() >= BATCH * feeder.shape.item_len() {
                run_features(&mut session, &mut batch, feeder.shape, cells, dim, keep, rng, patches)?;
            }
            bar.inc(1);
        }
        run_features(&mut session, &mut batch, feeder.shape, cells, dim, keep, rng, patches)?;
        bar.finish_and_clear();
        if !failures.is_empty() {
            bail!(
                "{} teach image(s) could not be read; remove or replace them and teach again:\n  {}",
                failures.len(),
                failures.join("\n  ")
            );
        }
        Ok(())
    }

    /// PCA (fitted here, or `basis`), coreset and local scales of `rows`.
    fn bank_of(&self, rows: &[f32], grid: usize, basis: Option<&pca::Pca>, what: &str) -> Result<LearnedBank> {
        let dim = self.backbone.feature_dim();
        let ((fitted, bank), pca_s, coreset_s) =
            learn_bank(rows, dim, self.opts, self.max_bank_rows(grid), basis, what)?;
        let t = Instant::now();
        let scales = match self.opts.local_scale_k {
            0 => None,
            k => Some(floor_scales(Bank::new(bank.clone(), fitted.dims)?.local_scales(k, self.opts.threads)?)),
        };
        let times = BankTimes { pca: pca_s, coreset: coreset_s, local_scale: t.elapsed().as_secs_f64() };
        Ok((fitted, bank, scales, times))
    }

    /// PCA of `rows` (every patch of whole images, in grid order) and the places' Gaussians in
    /// its space.
    fn placed_of(&self, rows: &[f32], recipe: Recipe) -> Result<(pca::Pca, PlacedGaussians, BankTimes)> {
        let t = Instant::now();
        let dim = self.backbone.feature_dim();
        let fitted = fit_pca(rows, dim, self.opts)?;
        let z = fitted.project(rows)?;
        let (gh, gw) = recipe.patch_grid();
        let images = z.len() / (gh * gw * fitted.dims).max(1);
        let placed = PlacedGaussians::fit(&z, images, gh, gw, fitted.dims).map_err(|e| anyhow!(e))?;
        Ok((fitted, placed, BankTimes { pca: t.elapsed().as_secs_f64(), ..BankTimes::default() }))
    }

    #[allow(clippy::too_many_arguments)]
    fn scoring_model(
        &self,
        fitted: &pca::Pca,
        bank: &[f32],
        scales: &Option<Vec<f32>>,
        recipe: Recipe,
        correction: Option<&[f32]>,
        placed: Option<&PlacedGaussians>,
        grid_scores: bool,
    ) -> Result<Vec<u8>> {
        let shape = recipe.shape();
        let scoring = Scoring {
            mean: &fitted.mean,
            projection: &fitted.components,
            bank,
            grid_stride: recipe.grid,
            blur_sigma_px: self.post.blur_sigma_px,
            top_fraction: self.post.top_fraction,
            local_scale: scales.as_deref(),
            correction,
            search: nearest_search(self.backbone),
            grid_scores,
            placed,
            place_scale: self.place_scale.as_deref(),
        };
        onnx::scoring_model(self.backbone, shape, &scoring).map_err(|e| anyhow!(e))
    }
}

/// Negative patches per held-out good image for the head's fit.
const HEAD_GOOD_PATCHES: usize = 32;
/// Held-out goods (those at odd positions) the head needs to be judged and to set the threshold.
const HEAD_MIN_JUDGES: usize = 10;
/// How much lower the synthetic defects' AUROC may be with the head before it is dropped.
const HEAD_SYNTHETIC_SLACK: f64 = 0.01;

/// The values at odd positions: the held-out goods the head was not fitted on.
fn odd_positions(v: &[f32]) -> Vec<f32> {
    v.iter().skip(1).step_by(2).copied().collect()
}

/// At most `keep` seeded patches of an image, plus its [`head::TOP_PATCHES`] most anomalous ones
/// (the head's hard negatives).
fn sample_patches(img: ImagePatches, keep: usize, dims: usize, rng: &mut ChaCha8Rng) -> ImagePatches {
    if img.d.len() <= keep + head::TOP_PATCHES {
        return img;
    }
    let mut rows = rand::seq::index::sample(rng, img.d.len(), keep).into_vec();
    rows.extend(img.top(head::TOP_PATCHES));
    rows.sort_unstable();
    rows.dedup();
    ImagePatches {
        z: rows.iter().flat_map(|&r| img.z[r * dims..(r + 1) * dims].iter().copied()).collect(),
        d: rows.iter().map(|&r| img.d[r]).collect(),
    }
}

fn head_record(choice: &HeadChoice, labelled: usize) -> HeadInfo {
    HeadInfo {
        used: choice.correction.is_some(),
        labelled_defects: labelled,
        lambda: choice.lambda,
        loo_auroc: round4(choice.loo_auroc),
        baseline_loo_auroc: round4(choice.baseline_loo_auroc),
    }
}

/// Scores of the held-out goods, of [`SYNTHETIC_PER_GOOD`] synthetic defects painted on each (the
/// kinds in turn, each seeded by the image's place in the hold-out, the texture lent by the next
/// held-out image), and of the labelled defects; with `grids` (a calibration model's
/// [`onnx::GRID_SCORES`]) also each image's patch scores.
fn score_validation(
    scorer: &mut Session,
    feeder: &Feeder,
    v: &Validation,
    grids: bool,
    progress: bool,
) -> Result<(Scores, GridScores)> {
    let shape = feeder.shape;
    let mut batch = Vec::new();
    let mut scores = Scores::default();
    let mut patch_scores = GridScores::default();
    let bar = progress_bar(progress, (v.holdout.len() + v.labelled.len()) as u64, "validating");
    let read = |path: &PathBuf| decode(path).map_err(|e| anyhow!("{}: {e}; remove or replace it", path.display()));
    let n = v.holdout.len();
    let mut next = if n > 0 { Some(read(&v.holdout[0])?) } else { None };
    for i in 0..n {
        let good = next.take().ok_or_else(|| anyhow!("hold-out image {i} missing"))?;
        let donor = if n > 1 { read(&v.holdout[(i + 1) % n])? } else { good.clone() };
        feeder.image_tensors(&good, &mut batch);
        let (score, grid) = image_score(scorer, &mut batch, shape, grids)?;
        scores.goods.push(score as f32);
        patch_scores.goods.extend(grid);
        for k in 0..SYNTHETIC_PER_GOOD {
            let j = i * SYNTHETIC_PER_GOOD + k;
            let kind = synthetic::Kind::ALL[j % synthetic::Kind::ALL.len()];
            let mut rng =
                ChaCha8Rng::seed_from_u64(v.seed ^ (0x5379_6e74 + j as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut painted = good.clone();
            if synthetic::paint(&mut painted, &donor, kind, &mut rng) == 0 {
                continue;
            }
            feeder.image_tensors(&painted, &mut batch);
            let (score, grid) = image_score(scorer, &mut batch, shape, grids)?;
            scores.synthetic.push(score as f32);
            patch_scores.synthetic.extend(grid);
        }
        next = Some(donor);
        bar.inc(1);
    }
    for path in v.labelled {
        feeder.image_tensors(&read(path)?, &mut batch);
        let (score, grid) = image_score(scorer, &mut batch, shape, grids)?;
        scores.labelled.push(score as f32);
        patch_scores.labelled.extend(grid);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((scores, patch_scores))
}

/// Models on an INT8 backbone search the bank in 8-bit integers too: with the backbone quantized,
/// the float search would be half of every run.
pub fn nearest_search(backbone: &Backbone) -> NearestSearch {
    if backbone.int8 { NearestSearch::Int8 } else { NearestSearch::Exact }
}

/// Local scales with a floor of 1/1000 of their mean (1 when all are 0): a bank row whose nearest
/// rows coincide with it (a teach set with fewer distinct patches than bank rows, e.g. flat
/// synthetic parts) would otherwise divide its patches' distances by 0.
fn floor_scales(mut scales: Vec<f32>) -> Vec<f32> {
    let mean = scales.iter().map(|&v| v as f64).sum::<f64>() / scales.len().max(1) as f64;
    let floor = if mean > 0.0 { (mean * 1e-3) as f32 } else { 1.0 };
    scales.iter_mut().for_each(|v| *v = v.max(floor));
    scales
}

/// Bank rows that keep the scoring step within `macs_per_pixel` (the backbone's
/// [`Backbone::scoring_budget_macs_per_pixel`]) on the patch grid of stride `grid` (one patch per
/// grid² pixels) with `dims`-d patches.
pub fn budget_bank_rows(macs_per_pixel: usize, grid: usize, dims: usize) -> usize {
    (macs_per_pixel * grid * grid / dims.max(1)).max(1)
}

/// PCA fitted on `rows` (`dim` wide), then the greedy coreset of the projected rows:
/// `coreset_ratio` of them, at most `max_bank_rows`. Returns the fit, the bank and the seconds
/// each step took.
fn learn_bank(
    rows: &[f32],
    dim: usize,
    opts: &TeachOptions,
    max_bank_rows: usize,
    basis: Option<&pca::Pca>,
    what: &str,
) -> Result<((pca::Pca, Vec<f32>), f64, f64)> {
    let t1 = Instant::now();
    let fitted = match basis {
        Some(b) => b.clone(),
        None => fit_pca(rows, dim, opts)?,
    };
    let projected = fitted.project(rows)?;
    let pca_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let n = projected.len() / fitted.dims;
    let k = CoresetSize::Ratio(opts.coreset_ratio).resolve(n)?.min(max_bank_rows);
    let params = CoresetParams {
        size: CoresetSize::Count(k),
        // Already ≤ 64-d after PCA: greedy distances on the projected rows themselves.
        proj_dim: 0,
        seed: opts.seed,
        threads: opts.threads,
    };
    // The greedy pass costs N·k·dims: on a large teach set, run it on a seeded sample of
    // CORESET_POOL_PER_ROW·k rows instead of all N (a k-center cover of a random sample that large
    // keeps the rare good modes a few-thousand-row bank can hold, at a fraction of the time).
    let pool = coreset_pool(n, k, opts.seed);
    let candidates: std::borrow::Cow<[f32]> = match &pool {
        None => std::borrow::Cow::Borrowed(&projected),
        Some(rows) => std::borrow::Cow::Owned(
            rows.iter().flat_map(|&r| &projected[r * fitted.dims..(r + 1) * fitted.dims]).copied().collect(),
        ),
    };
    let spinner = progress_spinner(
        opts.progress,
        &format!("{what}: selecting {k} of {} patches ({n} in all)", candidates.len() / fitted.dims),
    );
    let picked = greedy_coreset(&candidates, fitted.dims, &params)?;
    spinner.finish_and_clear();
    let mut bank = Vec::with_capacity(picked.len() * fitted.dims);
    for &r in &picked {
        bank.extend_from_slice(&candidates[r * fitted.dims..(r + 1) * fitted.dims]);
    }
    Ok(((fitted, bank), pca_s, t2.elapsed().as_secs_f64()))
}

/// The teach PCA of `rows` (`dim` wide): `--pca-dims` components fitted on a seeded sample,
/// whitened to `--whiten`; the bank and the places' Gaussians both live in its space.
fn fit_pca(rows: &[f32], dim: usize, opts: &TeachOptions) -> Result<pca::Pca> {
    let mut fitted = pca::fit(rows, dim, opts.pca_dims, PCA_SAMPLE_ROWS, opts.seed)?;
    fitted.whiten(opts.whiten);
    Ok(fitted)
}

/// The greedy coreset runs on at most this many candidate rows per bank row.
pub const CORESET_POOL_PER_ROW: usize = 16;

/// The images whose every patch the places' Gaussians are fitted on, `taken` images already in:
/// all of `paths` while the lot stays within `max_patches` rows of `cells` each, else a seeded
/// sample (in name order) that fills it — at least one image when none is in yet, so that a teach
/// set always yields a model.
fn placed_images(paths: &[PathBuf], cells: usize, taken: usize, opts: &TeachOptions) -> Vec<PathBuf> {
    let room = (opts.max_patches / cells.max(1)).saturating_sub(taken).max(usize::from(taken == 0));
    if paths.len() <= room {
        return paths.to_vec();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x706c_6163_6564);
    sorted_sample(&mut rng, paths.len(), room).into_iter().map(|i| paths[i].clone()).collect()
}

/// `k` of the indices `0..n`, drawn with `rng`, in ascending order: a seeded subset that keeps
/// its source's order.
fn sorted_sample(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<usize> {
    let mut chosen = rand::seq::index::sample(rng, n, k).into_vec();
    chosen.sort_unstable();
    chosen
}

/// Seeded sorted sample of `CORESET_POOL_PER_ROW · k` of `n` rows, or `None` when `n` is already
/// that small.
fn coreset_pool(n: usize, k: usize, seed: u64) -> Option<Vec<usize>> {
    let size = k.saturating_mul(CORESET_POOL_PER_ROW);
    if n <= size {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x706f_6f6c);
    Some(sorted_sample(&mut rng, n, size))
}

/// The image files directly in `dir`, sorted by name; at least [`MIN_IMAGES`].
pub fn list_images(dir: &Path) -> Result<GoodImages> {
    let files = crate::sources::folder::image_files(dir).with_context(|| {
        format!("cannot read the teach folder {} (pass --images a folder of good images)", dir.display())
    })?;
    let (files, masks) = mask_files::split_off(files);
    if files.len() < MIN_IMAGES {
        let masks = if masks.is_empty() { String::new() } else { format!(" besides {} defect mask(s)", masks.len()) };
        bail!(
            "{} holds {} image(s) (png, jpg, bmp, tif){masks}; teach needs at least {MIN_IMAGES} good images — {} to teach \
             from and {MIN_HOLDOUT} held out to set the threshold — and a few hundred for a robust model",
            dir.display(),
            files.len(),
            MIN_IMAGES - MIN_HOLDOUT,
        );
    }
    Ok(GoodImages { files, masks })
}

/// A teach folder's images: the parts, and the defect masks found among them and left out.
pub struct GoodImages {
    pub files: Vec<PathBuf>,
    pub masks: Vec<PathBuf>,
}

impl GoodImages {
    /// What teach says about the masks it left out, if any.
    pub fn masks_warning(&self) -> Option<String> {
        let first = self.masks.first()?;
        Some(format!(
            "{} defect mask(s) among the good images left out (e.g. {}: black and white, named as the mask of another \
             image); keep masks out of the good folder",
            self.masks.len(),
            first.display()
        ))
    }
}

/// Seeded split into (teach, held out); both keep name order.
fn split(files: &[PathBuf], holdout_fraction: f64, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let n = files.len();
    let held = ((holdout_fraction * n as f64).round() as usize).clamp(MIN_HOLDOUT, n - 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let chosen = sorted_sample(&mut rng, n, held);
    let mut teach = Vec::with_capacity(n - held);
    let mut holdout = Vec::with_capacity(held);
    for (i, f) in files.iter().enumerate() {
        if chosen.binary_search(&i).is_ok() { holdout.push(f.clone()) } else { teach.push(f.clone()) }
    }
    (teach, holdout)
}

pub fn session_from_bytes(model: &[u8], threads: usize) -> Result<Session> {
    let env = runtime::environment().map_err(|e| anyhow!(e))?;
    let ort_err = |e: &dyn std::fmt::Display| anyhow!("ONNX Runtime: {e}");
    let session = Session::builder(env)
        .map_err(|e| ort_err(&e))?
        .with_intra_threads(threads)
        .map_err(|e| ort_err(&e))?
        .with_inter_threads(1)
        .map_err(|e| ort_err(&e))?
        .commit_from_memory(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the graph: {e}"))?;
    Ok(session)
}

/// Model inputs for the INT8 calibration: up to [`int8::CALIBRATION_INPUTS`] of them, from teach
/// images in a seeded order (an unreadable one is skipped here; the teach itself reports it).
fn calibration_inputs(feeder: &Feeder, images: &[PathBuf], seed: u64) -> Vec<f32> {
    let mut order: Vec<&PathBuf> = images.iter().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x696e_7438));
    let item = feeder.shape.item_len();
    let mut inputs = Vec::new();
    for path in order {
        if inputs.len() >= int8::CALIBRATION_INPUTS * item {
            break;
        }
        let _ = feeder.tensors(path, &mut inputs);
    }
    inputs.truncate(int8::CALIBRATION_INPUTS * item);
    inputs
}

/// Run the feature graph on the tensors in `batch` (emptied), keeping `keep` seeded rows of each
/// tile's `cells` patch rows (all when `keep == cells`).
#[allow(clippy::too_many_arguments)]
fn run_features(
    session: &mut Session,
    batch: &mut Vec<f32>,
    shape: InputShape,
    cells: usize,
    dim: usize,
    keep: usize,
    rng: &mut ChaCha8Rng,
    patches: &mut Vec<f32>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len() / shape.item_len();
    let tensor = TensorRef::from_array_view(([n, shape.channels, shape.height, shape.width], &batch[..]))?;
    let outputs = session.run(ort::inputs![onnx::INPUT => tensor])?;
    let (_, values) = outputs[onnx::PATCHES].try_extract_tensor::<f32>()?;
    if values.len() != n * cells * dim {
        bail!("feature graph returned {} values for {n} tiles of {cells} × {dim}", values.len());
    }
    for tile in values.chunks_exact(cells * dim) {
        if keep >= cells {
            patches.extend_from_slice(tile);
        } else {
            for r in sorted_sample(rng, cells, keep) {
                patches.extend_from_slice(&tile[r * dim..(r + 1) * dim]);
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Score one image's tiles (in `batch`, emptied) with the taught model: max over tiles; with
/// `grids`, also the tiles' patch scores ([`onnx::GRID_SCORES`]).
fn image_score(
    session: &mut Session,
    batch: &mut Vec<f32>,
    shape: InputShape,
    grids: bool,
) -> Result<(f64, Option<Vec<f32>>)> {
    let n = batch.len() / shape.item_len();
    let tensor = TensorRef::from_array_view(([n, shape.channels, shape.height, shape.width], &batch[..]))?;
    let outputs = session.run(ort::inputs![onnx::INPUT => tensor])?;
    let (_, values) = outputs[onnx::SCORE].try_extract_tensor::<f32>()?;
    let score = highest_finite_score(values, "the taught model", "a held-out image")?;
    let grid = if grids { Some(outputs[onnx::GRID_SCORES].try_extract_tensor::<f32>()?.1.to_vec()) } else { None };
    batch.clear();
    Ok((score as f64, grid))
}

/// An image's score from its tiles' (the highest, as the station takes it); a non-finite one is
/// an error naming what gave it on what, never a score teach calibrates with.
pub(super) fn highest_finite_score(tile_scores: &[f32], model: &str, image: &str) -> Result<f32> {
    let score = tile_scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if !score.is_finite() {
        bail!("{model} gave a non-finite score on {image}");
    }
    Ok(score)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB; 0 where unknown.
pub fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| round1(kb / 1024.0))
}

fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what:>12} {{bar:40}} {{pos}}/{{len}} images, {{per_sec}}, eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn progress_spinner(show: bool, message: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_places_gaussians_are_thinned_by_whole_images_within_max_patches() {
        let paths: Vec<PathBuf> = (0..100).map(|i| PathBuf::from(format!("{i:03}.png"))).collect();
        let opts = TeachOptions { max_patches: 2_560, ..TeachOptions::new("goods", "out", "backbone") };
        // 256 cells an image: room for 10 images.
        let first = placed_images(&paths, 256, 0, &opts);
        assert_eq!(first.len(), 10);
        assert!(first.windows(2).all(|w| w[0] < w[1]), "in name order");
        assert_eq!(first, placed_images(&paths, 256, 0, &opts), "seeded");
        assert_eq!(placed_images(&paths, 256, 7, &opts).len(), 3, "only the room left");
        assert!(placed_images(&paths, 256, 10, &opts).is_empty(), "full: nothing more");
        assert_eq!(placed_images(&paths[..5], 256, 0, &opts).len(), 5, "a small set whole");
        let tiny = TeachOptions { max_patches: 10, ..TeachOptions::new("goods", "out", "backbone") };
        assert_eq!(placed_images(&paths, 256, 0, &tiny).len(), 1, "never an empty teach set");
    }

    #[test]
    fn split_is_seeded_and_keeps_name_order() {
        let files: Vec<PathBuf> = (0..20).map(|i| PathBuf::from(format!("{i:02}.png"))).collect();
        let (a, b) = split(&files, 0.15, 0);
        assert_eq!((a.len(), b.len()), (17, 3));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split(&files, 0.15, 0), (a.clone(), b.clone()));
        assert_ne!(split(&files, 0.15, 1).1, b, "another seed holds out other images");
        let (_, few) = split(&files[..8], 0.01, 0);
        assert_eq!(few.len(), MIN_HOLDOUT);
    }

    #[test]
    fn local_scales_never_divide_by_zero() {
        assert_eq!(floor_scales(vec![0.0, 2.0, 4.0]), vec![0.002, 2.0, 4.0]);
        assert_eq!(floor_scales(vec![0.0, 0.0]), vec![1.0, 1.0]);
    }
}
