//! Researcher look-ups over stored embeddings: exact cosine nearest neighbours (`similar.rs`). Pure code: rows
//! come from `store` (the only SQL); the CLI orchestrates.

pub mod similar;
