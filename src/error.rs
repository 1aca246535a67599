//! One error type for the whole crate.
//!
//! Every variant names what was wrong (the argument, field or buffer, and the value found),
//! because a user staring at "invalid input" cannot fix anything. Library code returns these
//! as values; nothing in the crate panics on user input.

use thiserror::Error;

/// The crate's error type.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A size that must be positive was zero (e.g. a matrix with no rows).
    #[error("{what} must be positive, got 0")]
    ZeroDimension {
        /// The dimension's name, e.g. "rows".
        what: String,
    },

    /// A weight (or other input number) is NaN or infinite.
    #[error("{what} has a non-finite value {value} at index {index}")]
    NonFinite {
        /// Which array, e.g. "dense weight".
        what: String,
        /// Flat index of the first offending entry.
        index: usize,
        /// The value found.
        value: f64,
    },

    /// A buffer does not have the length the operation needs.
    #[error("{what}: expected length {expected}, got {actual}")]
    LengthMismatch {
        /// Which buffer, e.g. "input vector x".
        what: String,
        /// The required length.
        expected: usize,
        /// The length passed.
        actual: usize,
    },

    /// An option or argument is outside its valid range.
    #[error("invalid {what} = {value}: {reason}")]
    InvalidArgument {
        /// The option's name, e.g. "rtol".
        what: String,
        /// The value given, as text.
        value: String,
        /// What the valid range is.
        reason: String,
    },

    /// Sizes whose product does not fit in memory addressing, or exceeds a user cap.
    #[error("{what} needs {needed} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What would have been allocated.
        what: String,
        /// Bytes needed (saturating).
        needed: u128,
        /// The cap in force.
        limit: u128,
    },

    /// A model file (ONNX) or network description that cannot be used as given. The message
    /// names the file, node, tensor or attribute and the value found.
    #[error("{source_name}: {detail}")]
    Model {
        /// The file (or "network" for networks built in code).
        source_name: String,
        /// What is wrong, naming node / tensor / attribute and value.
        detail: String,
    },

    /// A dense factorisation in the numerical back end failed to converge.
    #[error("numerical failure: {0}")]
    Numerical(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(what: &str, value: impl ToString, reason: &str) -> Self {
        Error::InvalidArgument {
            what: what.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn model(source_name: &str, detail: impl Into<String>) -> Self {
        Error::Model {
            source_name: source_name.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn length(what: &str, expected: usize, actual: usize) -> Self {
        Error::LengthMismatch {
            what: what.to_string(),
            expected,
            actual,
        }
    }
}

/// Returns an error naming the first non-finite entry of `values`, if any.
pub(crate) fn check_finite<T: Copy + Into<f64>>(what: &str, values: &[T]) -> Result<()> {
    match values.iter().position(|v| !(*v).into().is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            what: what.to_string(),
            index,
            value: values[index].into(),
        }),
    }
}

/// Returns an error when `value` is zero.
pub(crate) fn check_positive(what: &str, value: usize) -> Result<()> {
    if value == 0 {
        Err(Error::ZeroDimension {
            what: what.to_string(),
        })
    } else {
        Ok(())
    }
}
