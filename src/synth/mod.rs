//! Synthetic parts.
