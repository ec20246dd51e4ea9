//! The one error model of every hstack RPC: a numeric [`Code`] from
//! `error.proto` (numbered in ranges per subsystem), and an [`Error`] that
//! carries it with a message a person reads and, for `NotLeader` and
//! `Standby`, a hint where to go instead.
//!
//! On the wire an error is a `tonic::Status` whose details hold an
//! `ErrorDetail`; [`Error::from_status`] reads it back, and a status
//! without one (a transport failure, a proxy) becomes `Unavailable` or
//! `ConnectionLoss` with [`Error::is_answer`] false.

use std::fmt;

use prost::Message;

pub use self::wire::Code;
use self::wire::ErrorDetail;

/// The generated `hstack.error.v1` types (other protos refer to them).
#[allow(clippy::all, clippy::pedantic)]
pub mod wire {
    tonic::include_proto!("hstack.error.v1");
}

/// Every code, in number order (for tables, tests and docs).
pub const ALL_CODES: &[Code] = &[
    Code::InvalidArgument,
    Code::Unavailable,
    Code::Internal,
    Code::Unimplemented,
    Code::PermissionDenied,
    Code::TimedOut,
    Code::ShuttingDown,
    Code::ConnectionLoss,
    Code::NotLeader,
    Code::Standby,
    Code::FencedEpoch,
    Code::QuorumFailed,
    Code::NoNode,
    Code::NodeExists,
    Code::BadVersion,
    Code::NotEmpty,
    Code::NoChildrenForEphemerals,
    Code::SessionExpired,
    Code::RuntimeInconsistency,
    Code::InvalidAcl,
    Code::NotAMember,
    Code::AuthFailed,
    Code::NoAuth,
    Code::NoWatcher,
    Code::InvalidPath,
    Code::FileNotFound,
    Code::AlreadyExists,
    Code::ParentNotDirectory,
    Code::NotDirectory,
    Code::IsDirectory,
    Code::DirectoryNotEmpty,
    Code::SafeMode,
    Code::LeaseMismatch,
    Code::NotReplicatedYet,
    Code::Corrupt,
    Code::Io,
    Code::DatanodeNotRegistered,
    Code::UnknownDatanode,
    Code::ClusterMismatch,
    Code::NotEnoughDatanodes,
    Code::UnknownQueue,
    Code::InvalidResourceRequest,
    Code::ApplicationNotFound,
    Code::ApplicationAttemptNotCurrent,
    Code::NodeNotRegistered,
    Code::ContainerNotFound,
    Code::InvalidContainerToken,
    Code::ApplicationFinished,
];

impl Code {
    /// Whether the same request may succeed if sent again later or to
    /// another server. A write that failed with `ConnectionLoss` may or
    /// may not have been applied: only idempotent ones should be repeated.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Code::Unavailable
                | Code::ShuttingDown
                | Code::ConnectionLoss
                | Code::NotLeader
                | Code::Standby
                | Code::QuorumFailed
                | Code::NotReplicatedYet
        )
    }

    /// The code's name as operators see it (`NotLeader`, `FileNotFound`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "Ok",
            Code::InvalidArgument => "InvalidArgument",
            Code::Unavailable => "Unavailable",
            Code::Internal => "Internal",
            Code::Unimplemented => "Unimplemented",
            Code::PermissionDenied => "PermissionDenied",
            Code::TimedOut => "TimedOut",
            Code::ShuttingDown => "ShuttingDown",
            Code::ConnectionLoss => "ConnectionLoss",
            Code::NotLeader => "NotLeader",
            Code::Standby => "Standby",
            Code::FencedEpoch => "FencedEpoch",
            Code::QuorumFailed => "QuorumFailed",
            Code::NoNode => "NoNode",
            Code::NodeExists => "NodeExists",
            Code::BadVersion => "BadVersion",
            Code::NotEmpty => "NotEmpty",
            Code::NoChildrenForEphemerals => "NoChildrenForEphemerals",
            Code::SessionExpired => "SessionExpired",
            Code::RuntimeInconsistency => "RuntimeInconsistency",
            Code::InvalidAcl => "InvalidAcl",
            Code::NotAMember => "NotAMember",
            Code::AuthFailed => "AuthFailed",
            Code::NoAuth => "NoAuth",
            Code::NoWatcher => "NoWatcher",
            Code::InvalidPath => "InvalidPath",
            Code::FileNotFound => "FileNotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::ParentNotDirectory => "ParentNotDirectory",
            Code::NotDirectory => "NotDirectory",
            Code::IsDirectory => "IsDirectory",
            Code::DirectoryNotEmpty => "DirectoryNotEmpty",
            Code::SafeMode => "SafeMode",
            Code::LeaseMismatch => "LeaseMismatch",
            Code::NotReplicatedYet => "NotReplicatedYet",
            Code::Corrupt => "Corrupt",
            Code::Io => "Io",
            Code::DatanodeNotRegistered => "DatanodeNotRegistered",
            Code::UnknownDatanode => "UnknownDatanode",
            Code::ClusterMismatch => "ClusterMismatch",
            Code::NotEnoughDatanodes => "NotEnoughDatanodes",
            Code::UnknownQueue => "UnknownQueue",
            Code::InvalidResourceRequest => "InvalidResourceRequest",
            Code::ApplicationNotFound => "ApplicationNotFound",
            Code::ApplicationAttemptNotCurrent => "ApplicationAttemptNotCurrent",
            Code::NodeNotRegistered => "NodeNotRegistered",
            Code::ContainerNotFound => "ContainerNotFound",
            Code::InvalidContainerToken => "InvalidContainerToken",
            Code::ApplicationFinished => "ApplicationFinished",
        }
    }

    pub fn from_name(name: &str) -> Option<Code> {
        ALL_CODES.iter().copied().find(|c| c.name() == name)
    }

    /// The subsystem whose range the code is in.
    pub fn subsystem(self) -> &'static str {
        match self as i32 {
            0..=99 => "any",
            100..=199 => "coordination",
            200..=299 => "file system",
            300..=399 => "journal",
            400..=499 => "scheduler",
            _ => "mapreduce",
        }
    }

    /// The exit status of an `hstack` command that failed with this code:
    /// distinct per code, so scripts can tell them apart. 1 is a failure
    /// without a code and 2 a usage error (clap's); each range of codes
    /// has its own block of 20 statuses (`docs/architecture/daemon.md`).
    pub fn exit_status(self) -> u8 {
        let n = self as i32;
        let (base, first) = match n {
            0 => return 0,
            1..=99 => (10, 0),
            100..=199 => (30, 100),
            200..=299 => (50, 200),
            300..=399 => (70, 300),
            400..=499 => (90, 400),
            _ => (110, 500),
        };
        (base + (n - first).min(19)) as u8
    }

    /// The gRPC status code a tool that knows nothing of hstack sees.
    pub fn grpc(self) -> tonic::Code {
        use tonic::Code as G;
        match self {
            Code::Ok => G::Ok,
            Code::InvalidArgument
            | Code::InvalidPath
            | Code::InvalidAcl
            | Code::InvalidResourceRequest => G::InvalidArgument,
            Code::Unavailable
            | Code::ShuttingDown
            | Code::ConnectionLoss
            | Code::NotLeader
            | Code::Standby
            | Code::QuorumFailed => G::Unavailable,
            Code::Internal | Code::RuntimeInconsistency | Code::Io => G::Internal,
            Code::Unimplemented => G::Unimplemented,
            Code::PermissionDenied | Code::NotAMember | Code::ClusterMismatch | Code::NoAuth => {
                G::PermissionDenied
            }
            Code::AuthFailed => G::Unauthenticated,
            Code::NoWatcher => G::NotFound,
            Code::TimedOut => G::DeadlineExceeded,
            Code::FencedEpoch => G::Aborted,
            Code::NoNode
            | Code::FileNotFound
            | Code::UnknownDatanode
            | Code::UnknownQueue
            | Code::ApplicationNotFound
            | Code::ContainerNotFound => G::NotFound,
            Code::NodeExists | Code::AlreadyExists => G::AlreadyExists,
            Code::SessionExpired | Code::DatanodeNotRegistered | Code::NodeNotRegistered => {
                G::Unauthenticated
            }
            Code::InvalidContainerToken => G::PermissionDenied,
            Code::ApplicationAttemptNotCurrent | Code::ApplicationFinished => G::FailedPrecondition,
            Code::BadVersion
            | Code::NotEmpty
            | Code::NoChildrenForEphemerals
            | Code::ParentNotDirectory
            | Code::NotDirectory
            | Code::IsDirectory
            | Code::DirectoryNotEmpty
            | Code::SafeMode
            | Code::LeaseMismatch
            | Code::NotReplicatedYet
            | Code::NotEnoughDatanodes => G::FailedPrecondition,
            Code::Corrupt => G::DataLoss,
        }
    }

    /// What a client sees for a gRPC status that carries no hstack error
    /// (the call failed in transport, or something other than an hstack
    /// server answered).
    fn of_bare_status(code: tonic::Code) -> Code {
        use tonic::Code as G;
        match code {
            G::InvalidArgument | G::OutOfRange => Code::InvalidArgument,
            // Not FileNotFound: no hstack server said a file is missing (a
            // proxy's 404, a server without this service). Naming a file
            // missing would make a client act on a lie.
            G::PermissionDenied | G::Unauthenticated => Code::PermissionDenied,
            G::Unimplemented => Code::Unimplemented,
            G::DeadlineExceeded => Code::TimedOut,
            G::Internal | G::DataLoss => Code::Internal,
            G::Cancelled | G::Unknown => Code::ConnectionLoss,
            _ => Code::Unavailable,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*self as i32)
    }
}

impl<'de> serde::Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i32::deserialize(d)?;
        Code::try_from(n).map_err(|_| serde::de::Error::custom(format!("unknown error code {n}")))
    }
}

/// An error with a code a caller can act on and a message a person reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// `NotLeader`, `Standby`: where the leader or active is, if known.
    pub hint: Option<String>,
    /// The server changed nothing and the same call will work later, even
    /// where the code alone would not say so (HDFS's RetriableException:
    /// a namenode in its start-up safe mode).
    pub retry_later: bool,
    /// Whether an hstack server gave this answer (false: the call failed
    /// in transport, or the error was made on this side).
    #[serde(skip)]
    answer: bool,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
            retry_later: false,
            answer: false,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    /// Not the leader; `leader` is where it is, when known.
    pub fn not_leader(message: impl Into<String>, leader: Option<String>) -> Self {
        Self {
            hint: leader,
            ..Self::new(Code::NotLeader, message)
        }
    }

    /// A standby; `active` is where the active is, when known.
    pub fn standby(message: impl Into<String>, active: Option<String>) -> Self {
        Self {
            hint: active,
            ..Self::new(Code::Standby, message)
        }
    }

    /// Marks the error as worth the same call again later.
    pub fn retry_later(mut self) -> Self {
        self.retry_later = true;
        self
    }

    /// Whether the same call may succeed later (the code says so, or the
    /// server said so of this answer).
    pub fn retryable(&self) -> bool {
        self.retry_later || self.code.retryable()
    }

    /// Whether an hstack server gave this answer: it considered the
    /// request (and, unless `retryable`, will answer the same again).
    pub fn is_answer(&self) -> bool {
        self.answer
    }

    /// The same error with `context: ` before its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Reads the error a status carries; a status without one becomes an
    /// `Unavailable`, `ConnectionLoss`, … of this side's making.
    pub fn from_status(s: &tonic::Status) -> Self {
        if let Ok(d) = ErrorDetail::decode(s.details()) {
            if let Ok(code) = Code::try_from(d.code) {
                if code != Code::Ok {
                    return Self {
                        code,
                        message: s.message().to_string(),
                        hint: (!d.hint.is_empty()).then_some(d.hint),
                        retry_later: d.retry_later,
                        answer: true,
                    };
                }
            }
        }
        let code = Code::of_bare_status(s.code());
        let message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        Self::new(code, message)
    }

    pub fn to_status(&self) -> tonic::Status {
        let detail = ErrorDetail {
            code: self.code as i32,
            hint: self.hint.clone().unwrap_or_default(),
            retry_later: self.retry_later,
        };
        tonic::Status::with_details(
            self.code.grpc(),
            self.message.clone(),
            detail.encode_to_vec().into(),
        )
    }
}

/// Whether a status carries an hstack error (an hstack server's answer).
pub fn is_answer(s: &tonic::Status) -> bool {
    Error::from_status(s).is_answer()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::from_status(&s)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Markdown table of every code for `docs/architecture/daemon.md`
/// (a test checks the page holds exactly this).
pub fn code_table() -> String {
    let mut out = String::from(
        "| code | name | subsystem | retryable | gRPC status | exit status |\n\
         | ---: | --- | --- | --- | --- | ---: |\n",
    );
    for c in ALL_CODES {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {:?} | {} |\n",
            *c as i32,
            c.name(),
            c.subsystem(),
            if c.retryable() { "yes" } else { "no" },
            c.grpc(),
            c.exit_status()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_tonic_both_ways() {
        for c in ALL_CODES {
            let e = Error::new(*c, "why");
            let s: tonic::Status = e.clone().into();
            assert_eq!(s.code(), c.grpc());
            assert_eq!(s.message(), "why");
            let back = Error::from_status(&s);
            assert_eq!(back.code, *c);
            assert_eq!(back.message, "why");
            assert!(back.is_answer());
            assert!(!back.retry_later);
            assert_eq!(back.retryable(), c.retryable());
        }
    }

    #[test]
    fn hints_and_retry_later_travel() {
        let s = Error::not_leader("not me", Some("10.0.0.2:2281".into())).to_status();
        let e = Error::from_status(&s);
        assert_eq!(
            (e.code, e.hint.as_deref()),
            (Code::NotLeader, Some("10.0.0.2:2281"))
        );
        let s = Error::standby("standby", None).to_status();
        assert_eq!(Error::from_status(&s).hint, None);
        let s = Error::new(Code::SafeMode, "starting")
            .retry_later()
            .to_status();
        let e = Error::from_status(&s);
        assert!(e.retry_later && e.retryable() && !Code::SafeMode.retryable());
    }

    #[test]
    fn a_bare_status_is_not_an_answer() {
        let e = Error::from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(e.code, Code::Unavailable);
        assert!(!e.is_answer());
        let e = Error::from_status(&tonic::Status::unknown("h2 protocol error"));
        assert_eq!(e.code, Code::ConnectionLoss);
        // Details that are not an ErrorDetail do not make an answer.
        let s = tonic::Status::with_details(tonic::Code::Internal, "x", vec![0xff, 0xff].into());
        assert!(!Error::from_status(&s).is_answer());
    }

    #[test]
    fn codes_are_in_their_ranges_with_distinct_exit_statuses() {
        let mut seen = std::collections::HashMap::new();
        for c in ALL_CODES {
            let n = *c as i32;
            assert_eq!(Code::try_from(n), Ok(*c));
            assert_eq!(Code::from_name(c.name()), Some(*c));
            let st = c.exit_status();
            assert!((10..126).contains(&st), "{c}: {st}");
            if let Some(other) = seen.insert(st, *c) {
                panic!("{c} and {other} share exit status {st}");
            }
        }
        // every code of the enum is listed
        let listed = ALL_CODES.len();
        let all = (1..1000).filter(|n| Code::try_from(*n).is_ok()).count();
        assert_eq!(listed, all, "ALL_CODES misses a code");
    }

    #[test]
    fn the_docs_hold_the_code_table() {
        let page = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/architecture/daemon.md"
        );
        let text = std::fs::read_to_string(page).expect("docs/architecture/daemon.md");
        let (begin, end) = ("<!-- codes:begin -->\n", "<!-- codes:end -->");
        let table = code_table();
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            panic!("{page} lacks the {begin:?} … {end:?} markers");
        };
        let current = &text[a + begin.len()..b];
        if current != table {
            if std::env::var_os("HSTACK_BLESS").is_some() {
                let new = format!("{}{table}{}", &text[..a + begin.len()], &text[b..]);
                std::fs::write(page, new).expect("write the docs");
                return;
            }
            panic!(
                "the error-code table in {page} is out of date; \
                 run `HSTACK_BLESS=1 cargo test -p hstack-proto` to regenerate it"
            );
        }
    }
}
