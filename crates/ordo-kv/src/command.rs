//! Log entries of the KV state machine: their encoding and their application.
//!
//! Each entry is a protobuf [`InternalRequest`]: a version number, the proposer's request id
//! and one write request. Protobuf keeps the format self-describing and extensible (new
//! request kinds get new field numbers; old entries keep decoding), and the version number
//! lets a future build refuse, by name, an entry it cannot interpret instead of misreading it.

use prost::Message;

use crate::auth::{Access, AuthInfo};
use crate::error::KvError;
use crate::limits::REQUEST_BYTES_MAX;
use crate::proto::etcdserverpb::{
    request_op, AuthDisableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use crate::proto::internal::{
    internal_request, AuthEnableRequest, InternalRequest, LeaseExpireRequest,
};
use crate::store::KvStore;

/// The command encoding version this build writes, and the newest it reads.
pub const COMMAND_VERSION: u32 = 1;

/// A write request, as ordered by the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Put one key.
    Put(PutRequest),
    /// Delete a key or a range.
    DeleteRange(DeleteRangeRequest),
    /// A transaction with at least one write.
    Txn(TxnRequest),
    /// Discard history up to a revision.
    Compaction(CompactionRequest),
    /// Create a lease.
    LeaseGrant(LeaseGrantRequest),
    /// Revoke a lease at a client's request, deleting its keys.
    LeaseRevoke(LeaseRevokeRequest),
    /// Revoke a lease whose time ran out, as decided by the leader's lessor.
    LeaseExpire(LeaseExpireRequest),
    /// Enable authentication, with the key that signs tokens.
    AuthEnable(AuthEnableRequest),
    /// Disable authentication.
    AuthDisable(AuthDisableRequest),
    /// Add a user; the password arrives hashed.
    UserAdd(AuthUserAddRequest),
    /// Delete a user.
    UserDelete(AuthUserDeleteRequest),
    /// Change a user's password; the new one arrives hashed.
    UserChangePassword(AuthUserChangePasswordRequest),
    /// Grant a role to a user.
    UserGrantRole(AuthUserGrantRoleRequest),
    /// Revoke a role from a user.
    UserRevokeRole(AuthUserRevokeRoleRequest),
    /// Add a role.
    RoleAdd(AuthRoleAddRequest),
    /// Delete a role.
    RoleDelete(AuthRoleDeleteRequest),
    /// Grant a role a permission on keys.
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    /// Revoke a permission from a role.
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
    /// A command with its sender, as the node that received it established: checked
    /// against the sender's permissions when applied. A command without one is checked as
    /// sent by nobody (refused while authentication is enabled, except lease expiry, which
    /// the leader's lessor proposes).
    Sent {
        /// Who sent it.
        by: AuthInfo,
        /// What was sent (never itself `Sent`).
        command: Box<Command>,
    },
}

impl Command {
    /// `command` as sent by `by`; the command alone when `by` names nobody.
    pub fn sent_by(by: AuthInfo, command: Command) -> Command {
        if by == AuthInfo::default() {
            command
        } else {
            Command::Sent {
                by,
                command: Box::new(command),
            }
        }
    }

    /// The sender and what was sent: the inverse of [`Command::sent_by`].
    pub fn into_sender(self) -> (AuthInfo, Command) {
        match self {
            Command::Sent { by, command } => (by, *command),
            command => (AuthInfo::default(), command),
        }
    }
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyResponse {
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Compaction`].
    Compaction(CompactionResponse),
    /// Answer to [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Command::LeaseRevoke`] and [`Command::LeaseExpire`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to every authentication command: it took effect.
    Auth,
}

/// What applying one log entry produced; identical on every replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The log index applied.
    pub index: u64,
    /// The request id from the entry, when the entry could be decoded that far.
    pub request_id: Option<u64>,
    /// The response, or the error every replica computed.
    pub result: Result<ApplyResponse, KvError>,
}

/// Encodes a command as a log entry.
///
/// Fails with [`KvError::RequestTooLarge`] when the entry would exceed
/// [`REQUEST_BYTES_MAX`].
pub fn encode(request_id: u64, command: Command) -> Result<Vec<u8>, KvError> {
    let (by, command) = command.into_sender();
    let request = match command {
        Command::Put(r) => internal_request::Request::Put(r),
        Command::DeleteRange(r) => internal_request::Request::DeleteRange(r),
        Command::Txn(r) => internal_request::Request::Txn(r),
        Command::Compaction(r) => internal_request::Request::Compaction(r),
        Command::LeaseGrant(r) => internal_request::Request::LeaseGrant(r),
        Command::LeaseRevoke(r) => internal_request::Request::LeaseRevoke(r),
        Command::LeaseExpire(r) => internal_request::Request::LeaseExpire(r),
        Command::AuthEnable(r) => internal_request::Request::AuthEnable(r),
        Command::AuthDisable(r) => internal_request::Request::AuthDisable(r),
        Command::UserAdd(r) => internal_request::Request::UserAdd(r),
        Command::UserDelete(r) => internal_request::Request::UserDelete(r),
        Command::UserChangePassword(r) => internal_request::Request::UserChangePassword(r),
        Command::UserGrantRole(r) => internal_request::Request::UserGrantRole(r),
        Command::UserRevokeRole(r) => internal_request::Request::UserRevokeRole(r),
        Command::RoleAdd(r) => internal_request::Request::RoleAdd(r),
        Command::RoleDelete(r) => internal_request::Request::RoleDelete(r),
        Command::RoleGrantPermission(r) => internal_request::Request::RoleGrantPermission(r),
        Command::RoleRevokePermission(r) => internal_request::Request::RoleRevokePermission(r),
        Command::Sent { .. } => {
            return Err(KvError::MalformedCommand {
                reason: "a command sent by someone inside another".into(),
            })
        }
    };
    let envelope = InternalRequest {
        version: COMMAND_VERSION,
        request_id,
        user: by.user,
        auth_revision: by.revision,
        request: Some(request),
    };
    if envelope.encoded_len() > REQUEST_BYTES_MAX {
        return Err(KvError::RequestTooLarge);
    }
    Ok(envelope.encode_to_vec())
}

/// Decodes a log entry: the request id (when readable) and the command.
pub fn decode(bytes: &[u8]) -> (Option<u64>, Result<Command, KvError>) {
    let envelope = match InternalRequest::decode(bytes) {
        Ok(envelope) => envelope,
        Err(error) => {
            return (
                None,
                Err(KvError::MalformedCommand {
                    reason: error.to_string(),
                }),
            );
        }
    };
    let request_id = Some(envelope.request_id);
    if envelope.version == 0 || envelope.version > COMMAND_VERSION {
        let error = KvError::UnsupportedCommandVersion {
            version: envelope.version,
            supported: COMMAND_VERSION,
        };
        return (request_id, Err(error));
    }
    let command = match envelope.request {
        Some(internal_request::Request::Put(r)) => Command::Put(r),
        Some(internal_request::Request::DeleteRange(r)) => Command::DeleteRange(r),
        Some(internal_request::Request::Txn(r)) => Command::Txn(r),
        Some(internal_request::Request::Compaction(r)) => Command::Compaction(r),
        Some(internal_request::Request::LeaseGrant(r)) => Command::LeaseGrant(r),
        Some(internal_request::Request::LeaseRevoke(r)) => Command::LeaseRevoke(r),
        Some(internal_request::Request::LeaseExpire(r)) => Command::LeaseExpire(r),
        Some(internal_request::Request::AuthEnable(r)) => Command::AuthEnable(r),
        Some(internal_request::Request::AuthDisable(r)) => Command::AuthDisable(r),
        Some(internal_request::Request::UserAdd(r)) => Command::UserAdd(r),
        Some(internal_request::Request::UserDelete(r)) => Command::UserDelete(r),
        Some(internal_request::Request::UserChangePassword(r)) => Command::UserChangePassword(r),
        Some(internal_request::Request::UserGrantRole(r)) => Command::UserGrantRole(r),
        Some(internal_request::Request::UserRevokeRole(r)) => Command::UserRevokeRole(r),
        Some(internal_request::Request::RoleAdd(r)) => Command::RoleAdd(r),
        Some(internal_request::Request::RoleDelete(r)) => Command::RoleDelete(r),
        Some(internal_request::Request::RoleGrantPermission(r)) => Command::RoleGrantPermission(r),
        Some(internal_request::Request::RoleRevokePermission(r)) => {
            Command::RoleRevokePermission(r)
        }
        None => {
            let reason = "the entry carries no request (or one of a kind this build does not know)";
            return (
                request_id,
                Err(KvError::MalformedCommand {
                    reason: reason.to_string(),
                }),
            );
        }
    };
    let by = AuthInfo {
        user: envelope.user,
        revision: envelope.auth_revision,
    };
    (request_id, Ok(Command::sent_by(by, command)))
}

impl KvStore {
    /// Applies the log entry at `index`. Never panics on bad bytes: an undecodable entry
    /// yields an error result (the same on every replica) and only advances the applied
    /// index. An entry at or below the applied index (replayed after a snapshot restore) is
    /// skipped with [`KvError::AlreadyApplied`].
    pub fn apply(&mut self, index: u64, bytes: &[u8]) -> Applied {
        if index <= self.applied_index {
            let error = KvError::AlreadyApplied {
                index,
                applied_index: self.applied_index,
            };
            return Applied {
                index,
                request_id: None,
                result: Err(error),
            };
        }
        self.set_applied_index(index);
        let (request_id, command) = decode(bytes);
        let result = command.and_then(|command| {
            let (by, command) = command.into_sender();
            match command {
                // The hot path: the decoded put is this entry's own copy, so the store
                // takes it.
                Command::Put(r) => {
                    self.authorize_put(&by, &r)?;
                    self.put_owned(r).map(ApplyResponse::Put)
                }
                other => self.apply_by(&by, &other),
            }
        });
        Applied {
            index,
            request_id,
            result,
        }
    }

    /// Applies one decoded command.
    pub fn apply_command(&mut self, command: &Command) -> Result<ApplyResponse, KvError> {
        match command {
            Command::Sent { by, command } => self.apply_by(by, command),
            other => self.apply_by(&AuthInfo::default(), other),
        }
    }

    /// Checks that `by` may put `r`: write access to its key, and read access too when it
    /// asks for the previous value.
    fn authorize_put(&self, by: &AuthInfo, r: &PutRequest) -> Result<(), KvError> {
        self.auth.check_keys(by, Access::Write, &r.key, &[])?;
        if r.prev_kv {
            self.auth.check_keys(by, Access::Read, &r.key, &[])?;
        }
        Ok(())
    }

    /// Checks that `by` may send `command`, while authentication is enabled.
    fn authorize(&self, by: &AuthInfo, command: &Command) -> Result<(), KvError> {
        let auth = &self.auth;
        if !auth.is_enabled() {
            return Ok(());
        }
        match command {
            Command::Put(r) => self.authorize_put(by, r),
            Command::DeleteRange(r) => {
                auth.check_keys(by, Access::Write, &r.key, &r.range_end)?;
                if r.prev_kv {
                    auth.check_keys(by, Access::Read, &r.key, &r.range_end)?;
                }
                Ok(())
            }
            Command::Txn(r) => self.check_txn(by, r),
            Command::Compaction(_) => auth.check_authenticated(by),
            Command::LeaseRevoke(r) => {
                // Revoking deletes the lease's keys: the sender must be allowed to write
                // every one of them.
                if let Some(lease) = self.leases.get(&r.id) {
                    for key in &lease.keys {
                        auth.check_keys(by, Access::Write, key, &[])?;
                    }
                }
                Ok(())
            }
            // Granting a lease touches no key (as in etcd); expiry is the lessor's own.
            Command::LeaseGrant(_) | Command::LeaseExpire(_) => Ok(()),
            // Checked by the auth store as it applies them.
            Command::AuthEnable(_)
            | Command::AuthDisable(_)
            | Command::UserAdd(_)
            | Command::UserDelete(_)
            | Command::UserChangePassword(_)
            | Command::UserGrantRole(_)
            | Command::UserRevokeRole(_)
            | Command::RoleAdd(_)
            | Command::RoleDelete(_)
            | Command::RoleGrantPermission(_)
            | Command::RoleRevokePermission(_)
            | Command::Sent { .. } => Ok(()),
        }
    }

    /// Checks that `by` may send `txn`: read access to every key it compares and reads,
    /// and write access to every key it may write, in both branches (while authentication
    /// is enabled).
    pub fn check_txn(&self, by: &AuthInfo, txn: &TxnRequest) -> Result<(), KvError> {
        let auth = &self.auth;
        for compare in &txn.compare {
            auth.check_keys(by, Access::Read, &compare.key, &compare.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    auth.check_keys(by, Access::Read, &r.key, &r.range_end)?
                }
                Some(request_op::Request::RequestPut(r)) => self.authorize_put(by, r)?,
                Some(request_op::Request::RequestDeleteRange(r)) => {
                    auth.check_keys(by, Access::Write, &r.key, &r.range_end)?;
                    if r.prev_kv {
                        auth.check_keys(by, Access::Read, &r.key, &r.range_end)?;
                    }
                }
                Some(request_op::Request::RequestTxn(nested)) => self.check_txn(by, nested)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Applies one command sent by `by`, once `by` may send it.
    fn apply_by(&mut self, by: &AuthInfo, command: &Command) -> Result<ApplyResponse, KvError> {
        self.authorize(by, command)?;
        let auth = |result: Result<(), KvError>| result.map(|()| ApplyResponse::Auth);
        match command {
            Command::Put(r) => self.put(r).map(ApplyResponse::Put),
            Command::DeleteRange(r) => self.delete_range(r).map(ApplyResponse::DeleteRange),
            Command::Txn(r) => self.txn(r).map(ApplyResponse::Txn),
            Command::Compaction(r) => self.compact(r).map(ApplyResponse::Compaction),
            Command::LeaseGrant(r) => self.lease_grant(r).map(ApplyResponse::LeaseGrant),
            Command::LeaseRevoke(r) => self.lease_revoke(r.id).map(ApplyResponse::LeaseRevoke),
            Command::LeaseExpire(r) => self.lease_revoke(r.id).map(ApplyResponse::LeaseRevoke),
            Command::AuthEnable(r) => auth(self.auth.enable(by, r)),
            Command::AuthDisable(_) => auth(self.auth.disable(by)),
            Command::UserAdd(r) => auth(self.auth.user_add(by, r)),
            Command::UserDelete(r) => auth(self.auth.user_delete(by, r)),
            Command::UserChangePassword(r) => auth(self.auth.user_change_password(by, r)),
            Command::UserGrantRole(r) => auth(self.auth.user_grant_role(by, r)),
            Command::UserRevokeRole(r) => auth(self.auth.user_revoke_role(by, r)),
            Command::RoleAdd(r) => auth(self.auth.role_add(by, r)),
            Command::RoleDelete(r) => auth(self.auth.role_delete(by, r)),
            Command::RoleGrantPermission(r) => auth(self.auth.role_grant_permission(by, r)),
            Command::RoleRevokePermission(r) => auth(self.auth.role_revoke_permission(by, r)),
            Command::Sent { .. } => Err(KvError::MalformedCommand {
                reason: "a command sent by someone inside another".into(),
            }),
        }
    }
}
