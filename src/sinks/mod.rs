//! Outputs: where inspection records go. Each runs on its own thread behind a bounded queue, so
//! a slow output loses records (counted) and never slows the line. The line output ([`line`]) is
//! the latency-critical one: it acts on the production line at each part's deadline. [`outputs`]
//! is the one interface they share and the one place they are wired.

/// What records need to know about the recipe that judged a part (by recipe index).
#[derive(Clone, Debug)]
pub struct RecipeContext {
    pub name: String,
    pub model_name: String,
    pub model_sha256: String,
    /// The model's class labels (defects carry the index).
    pub classes: Vec<String>,
    /// The decision rules in force, as JSON text.
    pub rules_json: String,
}

pub mod archive;
pub mod line;
pub mod outputs;
pub mod results;
pub mod store;
