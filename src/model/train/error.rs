//! The training module's error type: every variant names the file or setting it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training configuration file that cannot be read or is invalid.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// Training data that cannot be used.
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    /// A model directory, weights or checkpoint file that cannot be read or written.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A combination of settings this build cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// A tensor computation failed.
    #[error("{what}: {source}")]
    Candle { what: String, source: candle_core::Error },
}

impl TrainError {
    /// A `map_err` adapter naming the computation.
    pub fn candle(what: &str) -> impl Fn(candle_core::Error) -> TrainError + '_ {
        move |source| TrainError::Candle { what: what.to_string(), source }
    }
}

/// `.ctx("what")` on candle results.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, TrainError>;
}

impl<T> Ctx<T> for candle_core::Result<T> {
    fn ctx(self, what: &str) -> Result<T, TrainError> {
        self.map_err(|source| TrainError::Candle { what: what.to_string(), source })
    }
}
