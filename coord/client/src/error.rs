//! The coordination service's errors are the one error model of every
//! hstack RPC (`hstack_proto::error`), with codes in the coordination
//! range (`NoNode`, `BadVersion`, …) and the general ones.

pub use hstack_proto::error::{Code, Error as CoordError};

pub type Result<T, E = CoordError> = std::result::Result<T, E>;

/// `path does not exist`.
pub fn no_node(path: &str) -> CoordError {
    CoordError::new(Code::NoNode, format!("{path} does not exist"))
}

/// A reply's code and message as a result (`Ok` for code 0; an unknown
/// number is an inconsistency, not silently success).
pub fn of_reply(code: i32, message: String) -> Result<()> {
    match Code::try_from(code) {
        Ok(Code::Ok) => Ok(()),
        Ok(code) => Err(CoordError::new(code, message)),
        Err(_) => Err(CoordError::new(
            Code::RuntimeInconsistency,
            format!("unknown error code {code}: {message}"),
        )),
    }
}
