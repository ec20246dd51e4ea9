//! The file system's error kinds, shared by the namenode, the datanode and
//! the client. On the wire a kind travels as the gRPC status's
//! `hstack-error` metadata, so a client gets back the same kind the
//! namenode raised, not only a message.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    InvalidPath,
    InvalidArgument,
    FileNotFound,
    AlreadyExists,
    ParentNotDirectory,
    NotDirectory,
    IsDirectory,
    DirectoryNotEmpty,
    PermissionDenied,
    SafeMode,
    /// The caller does not hold the file's lease (or it was recovered).
    LeaseMismatch,
    /// The previous block lacks its minimum replicas yet; try again.
    NotReplicatedYet,
    Corrupt,
    Io,
    Unavailable,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::InvalidPath => "InvalidPath",
            Kind::InvalidArgument => "InvalidArgument",
            Kind::FileNotFound => "FileNotFound",
            Kind::AlreadyExists => "AlreadyExists",
            Kind::ParentNotDirectory => "ParentNotDirectory",
            Kind::NotDirectory => "NotDirectory",
            Kind::IsDirectory => "IsDirectory",
            Kind::DirectoryNotEmpty => "DirectoryNotEmpty",
            Kind::PermissionDenied => "PermissionDenied",
            Kind::SafeMode => "SafeMode",
            Kind::LeaseMismatch => "LeaseMismatch",
            Kind::NotReplicatedYet => "NotReplicatedYet",
            Kind::Corrupt => "Corrupt",
            Kind::Io => "Io",
            Kind::Unavailable => "Unavailable",
        }
    }

    const ALL: [Kind; 15] = [
        Kind::InvalidPath,
        Kind::InvalidArgument,
        Kind::FileNotFound,
        Kind::AlreadyExists,
        Kind::ParentNotDirectory,
        Kind::NotDirectory,
        Kind::IsDirectory,
        Kind::DirectoryNotEmpty,
        Kind::PermissionDenied,
        Kind::SafeMode,
        Kind::LeaseMismatch,
        Kind::NotReplicatedYet,
        Kind::Corrupt,
        Kind::Io,
        Kind::Unavailable,
    ];

    pub fn from_name(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    fn grpc_code(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Kind::InvalidPath | Kind::InvalidArgument => C::InvalidArgument,
            Kind::FileNotFound => C::NotFound,
            Kind::AlreadyExists => C::AlreadyExists,
            Kind::ParentNotDirectory
            | Kind::NotDirectory
            | Kind::IsDirectory
            | Kind::DirectoryNotEmpty
            | Kind::SafeMode
            | Kind::LeaseMismatch
            | Kind::NotReplicatedYet => C::FailedPrecondition,
            Kind::PermissionDenied => C::PermissionDenied,
            Kind::Corrupt => C::DataLoss,
            Kind::Io => C::Internal,
            Kind::Unavailable => C::Unavailable,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsError {
    pub kind: Kind,
    pub message: String,
    /// The namenode changed nothing and the same call will work later
    /// (it is starting): clients try again (HDFS's `RetriableException`).
    #[serde(default)]
    pub retriable: bool,
}

impl FsError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retriable: false,
        }
    }

    /// Marks the error as worth the same call again later.
    pub fn retriable(mut self) -> Self {
        self.retriable = true;
        self
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            Kind::FileNotFound,
            format!("{path}: no such file or directory"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }

    pub fn io(context: &str, e: impl fmt::Display) -> Self {
        Self::new(Kind::Io, format!("{context}: {e}"))
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

const KIND_HEADER: &str = "hstack-error";
const RETRIABLE_HEADER: &str = "hstack-retriable";

/// Whether the status is the namenode's (or a datanode's) considered
/// answer, not a transport failure.
pub fn from_namenode(s: &tonic::Status) -> bool {
    s.metadata().get(KIND_HEADER).is_some()
}

impl From<FsError> for tonic::Status {
    fn from(e: FsError) -> Self {
        let mut s = tonic::Status::new(e.kind.grpc_code(), e.message);
        s.metadata_mut().insert(
            KIND_HEADER,
            tonic::metadata::MetadataValue::from_static(e.kind.name()),
        );
        if e.retriable {
            s.metadata_mut().insert(
                RETRIABLE_HEADER,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        s
    }
}

impl From<tonic::Status> for FsError {
    fn from(s: tonic::Status) -> Self {
        let kind = s
            .metadata()
            .get(KIND_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Kind::from_name);
        match kind {
            Some(kind) => FsError {
                retriable: s.metadata().get(RETRIABLE_HEADER).is_some(),
                ..FsError::new(kind, s.message())
            },
            None => FsError::new(
                Kind::Unavailable,
                format!("{} ({:?})", s.message(), s.code()),
            ),
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_wire() {
        for k in Kind::ALL {
            let s: tonic::Status = FsError::new(k, "why").into();
            let back: FsError = s.into();
            assert_eq!(back.kind, k);
            assert_eq!(back.message, "why");
            assert!(!back.retriable);
            let s: tonic::Status = FsError::new(k, "later").retriable().into();
            assert!(FsError::from(s).retriable);
        }
        let plain: FsError = tonic::Status::unavailable("connection refused").into();
        assert_eq!(plain.kind, Kind::Unavailable);
    }
}
