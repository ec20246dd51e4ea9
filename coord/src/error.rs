//! One numeric error-code space for the coordination service, shared by the
//! wire protocol, the server and the client.

use hstack_proto::coord as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Code {
    NoNode,
    NodeExists,
    BadVersion,
    NotEmpty,
    NoChildrenForEphemerals,
    BadArguments,
    SessionExpired,
    NotLeader,
    Unavailable,
    RuntimeInconsistency,
    ConnectionLoss,
    Unimplemented,
}

impl Code {
    /// Whether the same request may succeed if sent again (possibly to
    /// another member). Writes that failed this way may or may not have been
    /// applied, as with ZooKeeper's connection loss.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Code::NotLeader | Code::Unavailable | Code::ConnectionLoss
        )
    }

    pub fn to_pb(self) -> pb::ErrorCode {
        use pb::ErrorCode as E;
        match self {
            Code::NoNode => E::NoNode,
            Code::NodeExists => E::NodeExists,
            Code::BadVersion => E::BadVersion,
            Code::NotEmpty => E::NotEmpty,
            Code::NoChildrenForEphemerals => E::NoChildrenForEphemerals,
            Code::BadArguments => E::BadArguments,
            Code::SessionExpired => E::SessionExpired,
            Code::NotLeader => E::NotLeader,
            Code::Unavailable => E::Unavailable,
            Code::RuntimeInconsistency => E::RuntimeInconsistency,
            Code::ConnectionLoss => E::ConnectionLoss,
            Code::Unimplemented => E::Unimplemented,
        }
    }

    /// `None` for OK.
    pub fn from_pb(code: pb::ErrorCode) -> Option<Self> {
        use pb::ErrorCode as E;
        Some(match code {
            E::Ok => return None,
            E::NoNode => Code::NoNode,
            E::NodeExists => Code::NodeExists,
            E::BadVersion => Code::BadVersion,
            E::NotEmpty => Code::NotEmpty,
            E::NoChildrenForEphemerals => Code::NoChildrenForEphemerals,
            E::BadArguments | E::InvalidAcl => Code::BadArguments,
            E::SessionExpired => Code::SessionExpired,
            E::NotLeader => Code::NotLeader,
            E::Unavailable => Code::Unavailable,
            E::RuntimeInconsistency => Code::RuntimeInconsistency,
            E::ConnectionLoss => Code::ConnectionLoss,
            E::Unimplemented => Code::Unimplemented,
        })
    }
}

/// An error with a code a caller can act on and a message a person can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{code:?}: {message}")]
pub struct CoordError {
    pub code: Code,
    pub message: String,
}

impl CoordError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn no_node(path: &str) -> Self {
        Self::new(Code::NoNode, format!("{path} does not exist"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }
}

impl From<CoordError> for tonic::Status {
    fn from(e: CoordError) -> Self {
        let code = match e.code {
            Code::NoNode => tonic::Code::NotFound,
            Code::NodeExists => tonic::Code::AlreadyExists,
            Code::BadVersion | Code::NotEmpty | Code::NoChildrenForEphemerals => {
                tonic::Code::FailedPrecondition
            }
            Code::BadArguments => tonic::Code::InvalidArgument,
            Code::SessionExpired => tonic::Code::Unauthenticated,
            Code::NotLeader | Code::Unavailable | Code::ConnectionLoss => tonic::Code::Unavailable,
            Code::RuntimeInconsistency => tonic::Code::Aborted,
            Code::Unimplemented => tonic::Code::Unimplemented,
        };
        tonic::Status::new(code, e.to_string())
    }
}

pub type Result<T, E = CoordError> = std::result::Result<T, E>;
