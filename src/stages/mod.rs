//! Pipeline stages: each turns one typed input into one typed output and knows nothing of HTTP,
//! SQLite or PLCs.

pub mod decide;
pub mod decode;
pub mod infer;
pub mod preprocess;
pub mod tiling;
