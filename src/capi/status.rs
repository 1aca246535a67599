//! Status codes and the failure type of the C boundary.
//!
//! The header's contract is the `LIP_*` constants (`#define`s in C); inside the crate a
//! failure is a [`Status`] with its message, turned into the code and the thread-local
//! message at the boundary (`handle::guard`).

use crate::error::Error;

/// Success.
pub const LIP_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const LIP_ERR_NULL_POINTER: i32 = -1;
/// An argument is out of range (a zero size, rtol ≤ 0, an unknown enum value, ...).
pub const LIP_ERR_INVALID_ARGUMENT: i32 = -2;
/// A weight is NaN or infinite.
pub const LIP_ERR_NON_FINITE: i32 = -3;
/// The problem would exceed the memory limit, or sizes overflow.
pub const LIP_ERR_TOO_LARGE: i32 = -4;
/// A numerical routine failed to converge.
pub const LIP_ERR_NUMERICAL: i32 = -5;
/// A model file could not be read or used (unreadable, malformed, unsupported operator, ...).
pub const LIP_ERR_MODEL: i32 = -6;
/// An internal error (a caught panic); please report it.
pub const LIP_ERR_INTERNAL: i32 = -99;

/// The status codes as a type (the header's `LIP_*` values).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    NullPointer = LIP_ERR_NULL_POINTER,
    InvalidArgument = LIP_ERR_INVALID_ARGUMENT,
    NonFinite = LIP_ERR_NON_FINITE,
    TooLarge = LIP_ERR_TOO_LARGE,
    Numerical = LIP_ERR_NUMERICAL,
    Model = LIP_ERR_MODEL,
    Internal = LIP_ERR_INTERNAL,
}

/// A failed call: what the caller gets back (the code) and reads (the message).
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Status,
    pub message: String,
}

/// The result of the work behind a C entry point.
pub(crate) type CResult<T> = Result<T, Failure>;

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(Status::InvalidArgument, message)
    }

    /// A NULL pointer where one is required.
    pub fn null(name: &str) -> Self {
        Failure::new(Status::NullPointer, format!("{name} is NULL"))
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::ZeroDimension { .. }
            | Error::LengthMismatch { .. }
            | Error::InvalidArgument { .. } => Status::InvalidArgument,
            Error::NonFinite { .. } => Status::NonFinite,
            Error::TooLarge { .. } => Status::TooLarge,
            Error::Numerical(_) => Status::Numerical,
            Error::Model { .. } => Status::Model,
        };
        Failure::new(status, e.to_string())
    }
}
