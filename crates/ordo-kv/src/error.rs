//! Errors of the KV state machine and its API, with etcd's exact texts where clients match on them.

use tonic::Code;

/// An error answered to a KV request.
///
/// Errors produced while applying a command are part of the replicated result: every replica
/// computes the same error for the same log entry, so they carry only deterministic data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A read or compaction asked for a revision older than the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compaction revision.
        compact_revision: i64,
    },
    /// A read or compaction asked for a revision newer than the store's.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease does not exist (never granted, revoked or expired).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant asked for an id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asked for a time to live above [`crate::limits::LEASE_TTL_MAX_SECONDS`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A put with `ignore_value` or `ignore_lease` named a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put set both `ignore_value` and a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put set both `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// The request named no key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A txn has more compares or operations per branch than [`crate::limits::TXN_OPS_MAX`].
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes the same key twice, or puts a key that it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The encoded request exceeds [`crate::limits::REQUEST_BYTES_MAX`].
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Txns nest deeper than [`crate::limits::TXN_DEPTH_MAX`].
    #[error("ordo: txn nesting is deeper than {max} levels")]
    TxnTooDeep {
        /// The limit.
        max: usize,
    },
    /// Granting would exceed [`crate::limits::LEASES_MAX`] leases.
    #[error("ordo: too many leases (at most {max}); revoke unused leases")]
    TooManyLeases {
        /// The limit.
        max: usize,
    },
    /// A range would return more keys than [`crate::limits::RANGE_KEYS_MAX`].
    #[error("ordo: range matches more than {max} keys; set a limit")]
    RangeTooLarge {
        /// The limit.
        max: usize,
    },
    /// The cluster has no leader to order the request.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership changed while the request was in flight; its outcome is unknown.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request was not applied in time; its outcome is unknown.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The server is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A log entry could not be decoded as a KV command.
    #[error("ordo: malformed KV command: {reason}")]
    MalformedCommand {
        /// What was wrong with it.
        reason: String,
    },
    /// A log entry was written by a newer encoding than this build understands.
    #[error("ordo: KV command version {version} is newer than supported version {supported}")]
    UnsupportedCommandVersion {
        /// The entry's version.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Every revision up to `i64::MAX` is taken, so no write can be applied; reads still
    /// are. Only a store restored from a snapshot that claims such a revision gets here.
    #[error(
        "ordo: the store's revisions are exhausted (current revision {current_revision}); \
         no write can be applied"
    )]
    RevisionsExhausted {
        /// The store's current revision.
        current_revision: i64,
    },
    /// The sender may not do this (etcd's text).
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Authentication is enabled and the request names no user.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// `Authenticate` with an unknown user or a wrong password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The token is not one this cluster issued, or it expired.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Users, roles or permissions changed since the credential was issued:
    /// authenticate again.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// `UserAdd` of a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// The user does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// `RoleAdd` of a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// The role does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// A role without a name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// `AuthEnable` before a `root` user exists.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `AuthEnable` while the `root` user lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// `Authenticate` while authentication is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Removing the `root` user or its `root` role while authentication is enabled.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A user added without a password and without `no_password`.
    #[error("ordo: the password is empty (add a user without one with --no-password)")]
    PasswordEmpty,
    /// A permission grant without a permission, or of an unknown type.
    #[error("ordo: the permission is missing or of an unknown type")]
    PermissionEmpty,
    /// A user or role name longer than [`crate::auth::NAME_BYTES_MAX`].
    #[error("ordo: user and role names are at most {max} bytes")]
    AuthNameTooLong {
        /// The limit.
        max: usize,
    },
    /// This member cannot issue a token (no JWT private key, say).
    #[error("ordo: cannot issue a token: {reason}")]
    TokenIssue {
        /// Why.
        reason: String,
    },
    /// Hashing a password failed.
    #[error("ordo: cannot hash the password: {reason}")]
    PasswordHash {
        /// bcrypt's reason.
        reason: String,
    },
    /// A log entry at or below the applied index was handed to the state machine again.
    #[error("ordo: log index {index} is already applied (applied index {applied_index})")]
    AlreadyApplied {
        /// The entry's index.
        index: u64,
        /// The state machine's applied index.
        applied_index: u64,
    },
}

impl KvError {
    /// The gRPC status code etcd uses for this error.
    pub fn code(&self) -> Code {
        match self {
            KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            KvError::LeaseNotFound => Code::NotFound,
            KvError::LeaseExists => Code::FailedPrecondition,
            KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::EmptyKey
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::RequestTooLarge
            | KvError::TxnTooDeep { .. } => Code::InvalidArgument,
            KvError::RangeTooLarge { .. }
            | KvError::TooManyLeases { .. }
            | KvError::RevisionsExhausted { .. } => Code::ResourceExhausted,
            KvError::NoLeader | KvError::LeaderChanged | KvError::Timeout | KvError::Stopped => {
                Code::Unavailable
            }
            KvError::PermissionDenied => Code::PermissionDenied,
            KvError::InvalidAuthToken => Code::Unauthenticated,
            KvError::UserEmpty
            | KvError::AuthFailed
            | KvError::AuthOldRevision
            | KvError::RoleEmpty
            | KvError::InvalidAuthMgmt
            | KvError::PasswordEmpty
            | KvError::PermissionEmpty
            | KvError::AuthNameTooLong { .. } => Code::InvalidArgument,
            KvError::UserAlreadyExist
            | KvError::UserNotFound
            | KvError::RoleAlreadyExist
            | KvError::RoleNotFound
            | KvError::RootUserNotExist
            | KvError::RootRoleNotExist
            | KvError::AuthNotEnabled
            | KvError::RoleNotGranted
            | KvError::PermissionNotGranted => Code::FailedPrecondition,
            KvError::MalformedCommand { .. }
            | KvError::UnsupportedCommandVersion { .. }
            | KvError::AlreadyApplied { .. }
            | KvError::PasswordHash { .. } => Code::Internal,
            KvError::TokenIssue { .. } => Code::FailedPrecondition,
        }
    }
}

impl From<KvError> for tonic::Status {
    fn from(error: KvError) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}

/// A snapshot could not be restored; the state machine is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the frame header.
    #[error("KV snapshot is truncated: {len_bytes} bytes, the header alone needs {header_bytes}")]
    Truncated {
        /// Bytes given.
        len_bytes: usize,
        /// Bytes the header needs.
        header_bytes: usize,
    },
    /// The frame does not start with the snapshot magic.
    #[error("KV snapshot has a bad magic number; this is not an Ordo KV snapshot")]
    BadMagic,
    /// The snapshot was written by a newer format.
    #[error("KV snapshot format version {version} is not supported (newest known {supported})")]
    UnsupportedVersion {
        /// Version found.
        version: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The declared body length differs from the bytes present.
    #[error("KV snapshot body is {actual_bytes} bytes but the header declares {declared_bytes}")]
    LengthMismatch {
        /// From the header.
        declared_bytes: u64,
        /// Present.
        actual_bytes: u64,
    },
    /// The body's checksum does not match: the snapshot is corrupt.
    #[error("KV snapshot is corrupt: CRC32C {actual:#010x}, header says {expected:#010x}")]
    ChecksumMismatch {
        /// From the header.
        expected: u32,
        /// Computed over the body.
        actual: u32,
    },
    /// The body passed its checksum but is not a valid state (written by a buggy version).
    #[error("KV snapshot body is invalid: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}
