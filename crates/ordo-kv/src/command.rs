//! Log entries of the KV state machine: their encoding and their application.
//!
//! Each entry is a protobuf [`InternalRequest`]: a version number, the proposer's request id
//! and one write request. Protobuf keeps the format self-describing and extensible (new
//! request kinds get new field numbers; old entries keep decoding), and the version number
//! lets a future build refuse, by name, an entry it cannot interpret instead of misreading it.

use prost::Message;

use crate::error::KvError;
use crate::limits::REQUEST_BYTES_MAX;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};
use crate::proto::internal::{internal_request, InternalRequest, LeaseExpireRequest};
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
    let request = match command {
        Command::Put(r) => internal_request::Request::Put(r),
        Command::DeleteRange(r) => internal_request::Request::DeleteRange(r),
        Command::Txn(r) => internal_request::Request::Txn(r),
        Command::Compaction(r) => internal_request::Request::Compaction(r),
        Command::LeaseGrant(r) => internal_request::Request::LeaseGrant(r),
        Command::LeaseRevoke(r) => internal_request::Request::LeaseRevoke(r),
        Command::LeaseExpire(r) => internal_request::Request::LeaseExpire(r),
    };
    let envelope = InternalRequest {
        version: COMMAND_VERSION,
        request_id,
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
    (request_id, Ok(command))
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
        let result = command.and_then(|command| match command {
            // The hot path: the decoded put is this entry's own copy, so the store takes it.
            Command::Put(r) => self.put_owned(r).map(ApplyResponse::Put),
            other => self.apply_command(&other),
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
            Command::Put(r) => self.put(r).map(ApplyResponse::Put),
            Command::DeleteRange(r) => self.delete_range(r).map(ApplyResponse::DeleteRange),
            Command::Txn(r) => self.txn(r).map(ApplyResponse::Txn),
            Command::Compaction(r) => self.compact(r).map(ApplyResponse::Compaction),
            Command::LeaseGrant(r) => self.lease_grant(r).map(ApplyResponse::LeaseGrant),
            Command::LeaseRevoke(r) => self.lease_revoke(r.id).map(ApplyResponse::LeaseRevoke),
            Command::LeaseExpire(r) => self.lease_revoke(r.id).map(ApplyResponse::LeaseRevoke),
        }
    }
}
