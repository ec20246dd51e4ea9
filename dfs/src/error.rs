//! The file system's errors are the one error model of every hstack RPC
//! (`hstack_proto::error`): a [`Code`] in the file system's range (or a
//! general one), a message, and on the wire an `ErrorDetail` in the gRPC
//! status, so a client gets back the same code the namenode or datanode
//! raised, not only a message.

pub use hstack_proto::error::{is_answer, Code, Error as FsError};

pub type FsResult<T> = Result<T, FsError>;

/// `path: no such file or directory`.
pub fn not_found(path: &str) -> FsError {
    FsError::new(
        Code::FileNotFound,
        format!("{path}: no such file or directory"),
    )
}

/// A local disk or file operation that failed, with what was being done.
pub fn io(context: &str, e: impl std::fmt::Display) -> FsError {
    FsError::new(Code::Io, format!("{context}: {e}"))
}
