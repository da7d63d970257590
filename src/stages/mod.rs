//! Pipeline stages: each turns one typed input into one typed output and knows nothing of HTTP,
//! SQLite or PLCs.

pub mod decode;
