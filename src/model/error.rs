//! Errors of the model layer: candle failures wrapped with what was being done, bad configurations,
//! unusable inputs.

use std::path::PathBuf;

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, missing weight, device error).
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// The configuration asks for something this port does not build.
    #[error("unsupported model configuration: {0}")]
    Unsupported(String),
    /// An input does not fit the model (wrong shape, non-finite values, ...).
    #[error("{0}")]
    BadInput(String),
    /// The model directory is unusable.
    #[error("{path}: {message}")]
    ModelDir { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] super::config::ModelConfigError),
}

impl ModelError {
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
        let context = context.into();
        move |source| ModelError::Candle { context, source }
    }
}

/// Attach a context to a candle result.
pub trait Context<T> {
    fn ctx(self, context: &str) -> Result<T, ModelError>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T, ModelError> {
        self.map_err(ModelError::candle(context))
    }
}
