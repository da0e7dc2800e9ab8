//! The MVCC store: every key's history by revision, leases, compaction.
//!
//! A revision is `(main, sub)`: `main` advances by one for each write request that changes
//! something (a txn is one main revision), `sub` numbers the changes inside it. Every stored
//! change is kept, keyed by revision, until a compaction removes the ones no reader at or
//! after the compaction revision can see. That history is what past-revision reads and
//! watches read from.
//!
//! Everything here is deterministic: ordered maps only, no clock, no randomness, so every
//! replica that applies the same commands holds byte-identical state.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::auth::AuthStore;
use crate::error::KvError;
use crate::limits::{
    LEASES_MAX, LEASE_TTL_MAX_SECONDS, LEASE_TTL_MIN_SECONDS, RANGE_KEYS_MAX, TXN_DEPTH_MAX,
    TXN_OPS_MAX,
};
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// A point in the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The write request's revision.
    pub main: i64,
    /// The change's position inside that request.
    pub sub: i64,
}

/// One stored change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// For a tombstone only `key` and `mod_revision` are set.
    pub(crate) kv: KeyValue,
    pub(crate) tombstone: bool,
}

/// A lease as the replicated state knows it: its granted time to live and attached keys.
/// Remaining time is not replicated state; the leader's [`crate::lessor::Lessor`] tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    pub(crate) ttl_seconds: i64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// The keys a request addresses, from its `key` and `range_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan {
    /// `range_end` empty: exactly this key.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` (`range_end == "\0"`) means no upper bound.
    Range {
        /// Inclusive start.
        start: Vec<u8>,
        /// Exclusive end, or unbounded.
        end: Option<Vec<u8>>,
    },
}

impl KeySpan {
    /// Interprets etcd's `key` / `range_end` pair.
    pub fn new(key: &[u8], range_end: &[u8]) -> KeySpan {
        if range_end.is_empty() {
            KeySpan::Single(key.to_vec())
        } else if range_end == [0] {
            KeySpan::Range {
                start: key.to_vec(),
                end: None,
            }
        } else {
            KeySpan::Range {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    /// Whether `key` lies in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Single(k) => k.as_slice() == key,
            KeySpan::Range { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }

    /// Bounds for `BTreeMap::range`, or `None` when the span is empty (an end at or before
    /// its start); `BTreeMap::range` panics on such bounds, so they never reach it.
    fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeySpan::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeySpan::Range { start, end: None } => Some((Bound::Included(start), Bound::Unbounded)),
            KeySpan::Range {
                start,
                end: Some(end),
            } => {
                if end <= start {
                    None
                } else {
                    Some((Bound::Included(start), Bound::Excluded(end)))
                }
            }
        }
    }
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Which events a watcher wants, for [`KvStore::events_since`].
#[derive(Debug, Clone)]
pub struct EventFilter {
    /// Keys watched.
    pub span: KeySpan,
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
    /// Attach each key's previous record.
    pub prev_kv: bool,
}

/// A run of events read from history by [`KvStore::events_since`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// Matching events in revision order.
    pub events: Vec<Event>,
    /// Every revision up to and including this one has been scanned; the next read starts
    /// after it.
    pub scanned_through_revision: i64,
}

/// The replicated key-value state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) applied_index: u64,
    pub(crate) current_revision: i64,
    pub(crate) compact_revision: i64,
    pub(crate) next_lease_id: i64,
    pub(crate) records: BTreeMap<Revision, Record>,
    /// Each key's stored revisions, ascending; the last one is the key's current state.
    pub(crate) index: BTreeMap<Vec<u8>, Vec<Revision>>,
    pub(crate) leases: BTreeMap<i64, LeaseEntry>,
    /// Users, roles and permissions.
    pub(crate) auth: AuthStore,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

/// An in-progress write request: all its changes share one main revision.
struct WriteCursor {
    main: i64,
    sub: i64,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

impl KvStore {
    /// An empty store. Like etcd, it starts at revision 1, so the first write is revision 2.
    pub fn new() -> KvStore {
        KvStore {
            applied_index: 0,
            current_revision: 1,
            compact_revision: 0,
            next_lease_id: 1,
            records: BTreeMap::new(),
            index: BTreeMap::new(),
            leases: BTreeMap::new(),
            auth: AuthStore::default(),
        }
    }

    /// Users, roles, permissions, and whether authentication is enabled.
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// The index of the last log entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The newest revision.
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// The revision of the last compaction (zero if none): reads below it fail.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Ids of all leases, ascending.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// A lease's granted time to live and attached keys (ascending), if it exists.
    pub fn lease(&self, id: i64) -> Option<(i64, Vec<Vec<u8>>)> {
        self.leases
            .get(&id)
            .map(|l| (l.ttl_seconds, l.keys.iter().cloned().collect()))
    }

    /// Number of stored records (live values, superseded values and tombstones).
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Approximate bytes held by stored records.
    pub fn size_bytes(&self) -> u64 {
        self.records
            .values()
            .map(|r| (r.kv.key.len() + r.kv.value.len() + 48) as u64)
            .sum()
    }

    pub(crate) fn set_applied_index(&mut self, index: u64) {
        assert!(index > self.applied_index, "applied index must only grow");
        self.applied_index = index;
    }

    /// The record that is `key`'s state at `revision` (`None` = newest), if the key is live.
    fn live_at(&self, revs: &[Revision], revision: Option<i64>) -> Option<&Record> {
        let rev = match revision {
            None => revs.last()?,
            Some(at) => {
                let n = revs.partition_point(|r| r.main <= at);
                revs.get(n.checked_sub(1)?)?
            }
        };
        let record = self.records.get(rev);
        assert!(
            record.is_some(),
            "index names revision {rev:?} that has no record"
        );
        record.filter(|r| !r.tombstone)
    }

    fn latest_live(&self, key: &[u8]) -> Option<&Record> {
        self.live_at(self.index.get(key)?, None)
    }

    /// Live key-values in `span` at `revision` (`None` = newest), in key order.
    fn live_in_span<'a>(
        &'a self,
        span: &KeySpan,
        revision: Option<i64>,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let range = span
            .bounds()
            .map(|bounds| self.index.range::<[u8], _>(bounds));
        range
            .into_iter()
            .flatten()
            .filter_map(move |(_, revs)| self.live_at(revs, revision).map(|r| &r.kv))
    }

    fn check_read_revision(&self, revision: i64) -> Result<Option<i64>, KvError> {
        if revision <= 0 {
            return Ok(None);
        }
        if revision > self.current_revision {
            return Err(KvError::FutureRevision);
        }
        if revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(Some(revision))
    }

    /// Serves a range request against the local state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let at = self.check_read_revision(req.revision)?;
        let mut resp = self.range_unchecked(req, at)?;
        resp.header = header(self.current_revision);
        Ok(resp)
    }

    fn range_unchecked(
        &self,
        req: &RangeRequest,
        at: Option<i64>,
    ) -> Result<RangeResponse, KvError> {
        let span = KeySpan::new(&req.key, &req.range_end);
        let mut sort_order = req.sort_order();
        let sort_target = req.sort_target();
        // etcd sorts ascending when a non-key target is named without an order.
        if sort_order == range_request::SortOrder::None
            && sort_target != range_request::SortTarget::Key
        {
            sort_order = range_request::SortOrder::Ascend;
        }
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let limit = usize::try_from(req.limit).ok().filter(|l| *l > 0);
        // Without sorting or filtering, keys arrive in their final order and collection can
        // stop after one more than the limit; counting continues over the whole range.
        let collect_max = match (sort_order, filtered, limit) {
            (range_request::SortOrder::None | range_request::SortOrder::Ascend, false, Some(l))
                if sort_target == range_request::SortTarget::Key =>
            {
                l.saturating_add(1)
            }
            _ => usize::MAX,
        };
        let mut count: i64 = 0;
        let mut kvs: Vec<&KeyValue> = Vec::new();
        for kv in self.live_in_span(&span, at) {
            count += 1;
            if req.count_only || kvs.len() >= collect_max {
                continue;
            }
            if (req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision)
                || (req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision)
                || (req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
                || (req.max_create_revision != 0 && kv.create_revision > req.max_create_revision)
            {
                continue;
            }
            kvs.push(kv);
            if limit.is_none_or(|l| l > RANGE_KEYS_MAX) && kvs.len() > RANGE_KEYS_MAX {
                return Err(KvError::RangeTooLarge {
                    max: RANGE_KEYS_MAX,
                });
            }
        }
        if sort_order != range_request::SortOrder::None {
            // Stable sorts over key order keep ties in key order on every replica.
            use range_request::SortTarget as T;
            match sort_target {
                T::Key => {}
                T::Version => kvs.sort_by_key(|kv| kv.version),
                T::Create => kvs.sort_by_key(|kv| kv.create_revision),
                T::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                T::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if sort_order == range_request::SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if let Some(l) = limit {
            if kvs.len() > l {
                kvs.truncate(l);
                more = true;
            }
        }
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                let mut kv = kv.clone();
                if req.keys_only {
                    kv.value.clear();
                }
                kv
            })
            .collect();
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    // ---- writes -------------------------------------------------------------------------

    /// The cursor of the next write, at revision current + 1; refused once the last
    /// revision is taken (only a store restored from a snapshot near `i64::MAX` gets there).
    fn begin_write(&self) -> Result<WriteCursor, KvError> {
        let main = self
            .current_revision
            .checked_add(1)
            .ok_or(KvError::RevisionsExhausted {
                current_revision: self.current_revision,
            })?;
        Ok(WriteCursor { main, sub: 0 })
    }

    fn end_write(&mut self, cursor: WriteCursor) -> i64 {
        if cursor.sub > 0 {
            self.current_revision = cursor.main;
        }
        self.current_revision
    }

    fn push_record(&mut self, cursor: &mut WriteCursor, record: Record) {
        let rev = Revision {
            main: cursor.main,
            sub: cursor.sub,
        };
        cursor.sub += 1;
        // Most writes update a key that exists: look it up by reference before paying
        // for a copy of the key.
        let revs = match self.index.get_mut(record.kv.key.as_slice()) {
            Some(revs) => revs,
            None => self.index.entry(record.kv.key.clone()).or_default(),
        };
        assert!(
            revs.last().is_none_or(|last| *last < rev),
            "revisions of a key must ascend"
        );
        revs.push(rev);
        let previous = self.records.insert(rev, record);
        assert!(previous.is_none(), "revision {rev:?} written twice");
    }

    fn detach_lease(&mut self, lease: i64, key: &[u8]) {
        if lease != 0 {
            if let Some(entry) = self.leases.get_mut(&lease) {
                entry.keys.remove(key);
            }
        }
    }

    /// Checks a put against the current state (the checks that need state).
    fn check_put(&self, req: &PutRequest) -> Result<(), KvError> {
        if (req.ignore_value || req.ignore_lease) && self.latest_live(&req.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    fn put_unchecked(&mut self, cursor: &mut WriteCursor, req: &PutRequest) -> PutResponse {
        self.put_owned_unchecked(cursor, req.clone())
    }

    /// A put that takes the request's key and value into the store instead of copying
    /// them (the request was decoded from a log entry for this purpose alone).
    fn put_owned_unchecked(&mut self, cursor: &mut WriteCursor, req: PutRequest) -> PutResponse {
        // Only the few fields a put needs are read from the previous record; the whole
        // record (value included) is copied only when the client asked for it back.
        let prev = self.latest_live(&req.key).map(|r| &r.kv);
        let value = match (req.ignore_value, prev) {
            (true, Some(p)) => p.value.clone(),
            (true, None) => Vec::new(),
            (false, _) => req.value,
        };
        let lease = if req.ignore_lease {
            prev.map_or(0, |p| p.lease)
        } else {
            req.lease
        };
        let (create_revision, version) = match prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (cursor.main, 1),
        };
        let prev_lease = prev.map(|p| p.lease);
        let prev = if req.prev_kv { prev.cloned() } else { None };
        if let Some(prev_lease) = prev_lease {
            if prev_lease != lease {
                self.detach_lease(prev_lease, &req.key);
            }
        }
        if lease != 0 {
            let entry = self.leases.get_mut(&lease);
            assert!(
                entry.is_some(),
                "put attaches lease {lease} that check_put did not find"
            );
            if let Some(entry) = entry {
                entry.keys.insert(req.key.clone());
            }
        }
        let kv = KeyValue {
            key: req.key,
            create_revision,
            mod_revision: cursor.main,
            version,
            value,
            lease,
        };
        self.push_record(
            cursor,
            Record {
                kv,
                tombstone: false,
            },
        );
        PutResponse {
            header: None,
            prev_kv: prev,
        }
    }

    fn delete_unchecked(
        &mut self,
        cursor: &mut WriteCursor,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let span = KeySpan::new(&req.key, &req.range_end);
        let doomed: Vec<KeyValue> = self.live_in_span(&span, None).cloned().collect();
        for kv in &doomed {
            self.delete_key(cursor, kv);
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        }
    }

    fn delete_key(&mut self, cursor: &mut WriteCursor, live: &KeyValue) {
        self.detach_lease(live.lease, &live.key);
        let kv = KeyValue {
            key: live.key.clone(),
            mod_revision: cursor.main,
            ..KeyValue::default()
        };
        self.push_record(
            cursor,
            Record {
                kv,
                tombstone: true,
            },
        );
    }

    /// Applies a put.
    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        self.put_owned(req.clone())
    }

    /// Applies a put, taking its key and value.
    pub(crate) fn put_owned(&mut self, req: PutRequest) -> Result<PutResponse, KvError> {
        check_put_static(&req)?;
        self.check_put(&req)?;
        let mut cursor = self.begin_write()?;
        let mut resp = self.put_owned_unchecked(&mut cursor, req);
        resp.header = header(self.end_write(cursor));
        Ok(resp)
    }

    /// Applies a delete-range.
    pub(crate) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let mut cursor = self.begin_write()?;
        let mut resp = self.delete_unchecked(&mut cursor, req);
        resp.header = header(self.end_write(cursor));
        Ok(resp)
    }

    // ---- txn ----------------------------------------------------------------------------

    fn compare_holds(&self, cmp: &Compare) -> bool {
        let span = KeySpan::new(&cmp.key, &cmp.range_end);
        let mut any = false;
        for kv in self.live_in_span(&span, None) {
            any = true;
            if !compare_kv(cmp, kv) {
                return false;
            }
        }
        if any {
            return true;
        }
        // A missing key compares as a zero record, except that no value equals a missing one.
        cmp.target() != compare::CompareTarget::Value && compare_kv(cmp, &KeyValue::default())
    }

    /// Decides every branch of the txn tree against the state before any of its writes, as
    /// etcd does: the outcome of nested compares does not depend on sibling operations.
    fn txn_path(&self, txn: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = txn.compare.iter().all(|c| self.compare_holds(c));
        path.push(succeeded);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, path);
            }
        }
    }

    fn check_txn_branch(
        &self,
        txn: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<(), KvError> {
        let succeeded = path[*at];
        *at += 1;
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.check_read_revision(r.revision)?;
                }
                Some(request_op::Request::RequestPut(p)) => self.check_put(p)?,
                Some(request_op::Request::RequestDeleteRange(_)) | None => {}
                Some(request_op::Request::RequestTxn(nested)) => {
                    self.check_txn_branch(nested, path, at)?
                }
            }
        }
        Ok(())
    }

    /// Applies a txn: compares, then one branch's operations, all at one revision.
    pub(crate) fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, KvError> {
        check_txn_static(txn)?;
        let mut path = Vec::new();
        self.txn_path(txn, &mut path);
        // Every state check runs before the first write so that a failing txn changes nothing.
        self.check_txn_branch(txn, &path, &mut 0)?;
        let mut cursor = self.begin_write()?;
        let mut at = 0;
        let result = walk_txn(
            &mut (&mut *self, &mut cursor),
            txn,
            &path,
            &mut at,
            &mut |(store, cursor): &mut (&mut KvStore, &mut WriteCursor), request| {
                use request_op::Request;
                use response_op::Response;
                Ok(match request {
                    Request::RequestRange(r) => {
                        let at_rev = store.check_read_revision(r.revision)?;
                        Response::ResponseRange(store.range_unchecked(r, at_rev)?)
                    }
                    Request::RequestPut(p) => Response::ResponsePut(store.put_unchecked(cursor, p)),
                    Request::RequestDeleteRange(d) => {
                        Response::ResponseDeleteRange(store.delete_unchecked(cursor, d))
                    }
                    Request::RequestTxn(_) => unreachable!("walk_txn descends into nested txns"),
                })
            },
        );
        let mut resp = match result {
            Ok(resp) => resp,
            Err(error) => {
                // Only ranges can fail here, and check_txn_branch already validated their
                // revisions against the same state, except a range over too many keys.
                assert!(
                    matches!(error, KvError::RangeTooLarge { .. }),
                    "txn failed after its checks passed: {error}"
                );
                self.rollback(&cursor);
                return Err(error);
            }
        };
        assert_eq!(at, path.len(), "txn path not fully consumed");
        let revision = self.end_write(cursor);
        set_txn_headers(&mut resp, revision);
        Ok(resp)
    }

    /// Undoes the changes a failed write made at `cursor.main`.
    fn rollback(&mut self, cursor: &WriteCursor) {
        if cursor.sub == 0 {
            return;
        }
        let pending: Vec<Revision> = self
            .records
            .range(
                Revision {
                    main: cursor.main,
                    sub: 0,
                }..,
            )
            .map(|(rev, _)| *rev)
            .collect();
        for rev in pending.into_iter().rev() {
            let Some(record) = self.records.remove(&rev) else {
                continue;
            };
            let key = record.kv.key;
            if let Some(revs) = self.index.get_mut(&key) {
                revs.retain(|r| *r != rev);
                if revs.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        self.rebuild_lease_keys();
    }

    pub(crate) fn rebuild_lease_keys(&mut self) {
        for entry in self.leases.values_mut() {
            entry.keys.clear();
        }
        let live: Vec<(i64, Vec<u8>)> = self
            .index
            .values()
            .filter_map(|revs| self.live_at(revs, None))
            .filter(|r| r.kv.lease != 0)
            .map(|r| (r.kv.lease, r.kv.key.clone()))
            .collect();
        for (lease, key) in live {
            if let Some(entry) = self.leases.get_mut(&lease) {
                entry.keys.insert(key);
            }
        }
    }

    /// Serves a txn that has no writes against the local state (after the caller's read
    /// barrier, when linearizable).
    pub fn read_only_txn(&self, txn: &TxnRequest) -> Result<TxnResponse, KvError> {
        check_txn_static(txn)?;
        assert!(
            !txn_has_writes(txn),
            "read_only_txn given a txn with writes"
        );
        let mut path = Vec::new();
        self.txn_path(txn, &mut path);
        self.check_txn_branch(txn, &path, &mut 0)?;
        let mut resp = walk_txn(
            &mut &*self,
            txn,
            &path,
            &mut 0,
            &mut |store: &mut &KvStore, request| match request {
                request_op::Request::RequestRange(r) => {
                    let at_rev = store.check_read_revision(r.revision)?;
                    Ok(response_op::Response::ResponseRange(
                        store.range_unchecked(r, at_rev)?,
                    ))
                }
                _ => unreachable!("read_only_txn is only given txns without writes"),
            },
        )?;
        set_txn_headers(&mut resp, self.current_revision);
        Ok(resp)
    }

    // ---- compaction -----------------------------------------------------------------------

    /// Removes every record that no read at or after `req.revision` can see. The newest
    /// record of each live key is kept even when it is older than the compaction revision.
    pub(crate) fn compact(
        &mut self,
        req: &CompactionRequest,
    ) -> Result<CompactionResponse, KvError> {
        let rev = req.revision;
        if rev > self.current_revision {
            return Err(KvError::FutureRevision);
        }
        if rev <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut emptied = Vec::new();
        for (key, revs) in self.index.iter_mut() {
            let visible = revs.partition_point(|r| r.main <= rev);
            let Some(newest_old) = visible.checked_sub(1) else {
                continue;
            };
            let mut drop_through = newest_old; // exclusive: revs[..drop_through] go
            let newest_is_dead_tombstone = self
                .records
                .get(&revs[newest_old])
                .is_some_and(|r| r.tombstone && revs[newest_old].main < rev);
            if newest_is_dead_tombstone {
                drop_through = newest_old + 1;
            }
            for dead in revs.drain(..drop_through) {
                let removed = self.records.remove(&dead);
                assert!(
                    removed.is_some(),
                    "index names revision {dead:?} that has no record"
                );
            }
            if revs.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.index.remove(&key);
        }
        self.compact_revision = rev;
        Ok(CompactionResponse {
            header: header(self.current_revision),
        })
    }

    // ---- leases ---------------------------------------------------------------------------

    /// Grants a lease; an id of zero takes the next free id from a replicated counter.
    pub(crate) fn lease_grant(
        &mut self,
        req: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, KvError> {
        if req.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.len() >= LEASES_MAX {
            return Err(KvError::TooManyLeases { max: LEASES_MAX });
        }
        let id = if req.id == 0 {
            let mut id = self.next_lease_id.max(1);
            while self.leases.contains_key(&id) {
                id = id.checked_add(1).unwrap_or(1);
            }
            self.next_lease_id = id.checked_add(1).unwrap_or(1);
            id
        } else {
            if self.leases.contains_key(&req.id) {
                return Err(KvError::LeaseExists);
            }
            req.id
        };
        let ttl_seconds = req.ttl.max(LEASE_TTL_MIN_SECONDS);
        self.leases.insert(
            id,
            LeaseEntry {
                ttl_seconds,
                keys: BTreeSet::new(),
            },
        );
        Ok(LeaseGrantResponse {
            header: header(self.current_revision),
            id,
            ttl: ttl_seconds,
            error: String::new(),
        })
    }

    /// Revokes a lease and deletes its keys, in key order, at one revision.
    pub(crate) fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, KvError> {
        if !self.leases.contains_key(&id) {
            return Err(KvError::LeaseNotFound);
        }
        let mut cursor = self.begin_write()?;
        let entry = self.leases.remove(&id).expect("the lease was found above");
        for key in &entry.keys {
            let live = self.latest_live(key).map(|r| r.kv.clone());
            assert!(
                live.as_ref().is_some_and(|kv| kv.lease == id),
                "lease {id} lists a key that is not live under it"
            );
            if let Some(kv) = live {
                self.delete_key(&mut cursor, &kv);
            }
        }
        Ok(LeaseRevokeResponse {
            header: header(self.end_write(cursor)),
        })
    }

    // ---- history for watchers -------------------------------------------------------------

    /// Events matching `filter` with main revision `>= from_revision`, whole revisions at a
    /// time, stopping after `events_max` events or `scan_max` records, whichever first.
    pub fn events_since(
        &self,
        from_revision: i64,
        filter: &EventFilter,
        events_max: usize,
        scan_max: usize,
    ) -> Result<EventBatch, KvError> {
        assert!(from_revision > 0, "watch revisions start at 1");
        if from_revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut events = Vec::new();
        let mut scanned_through_revision = from_revision - 1;
        let mut current_main = None;
        let history = self.records.range(
            Revision {
                main: from_revision,
                sub: 0,
            }..,
        );
        for (scanned, (rev, record)) in history.enumerate() {
            if current_main != Some(rev.main) {
                // A revision boundary: everything before it is complete.
                if let Some(done) = current_main {
                    scanned_through_revision = done;
                    if events.len() >= events_max || scanned >= scan_max {
                        return Ok(EventBatch {
                            events,
                            scanned_through_revision,
                        });
                    }
                }
                current_main = Some(rev.main);
            }
            if !filter.span.contains(&record.kv.key) {
                continue;
            }
            let kind = if record.tombstone {
                EventType::Delete
            } else {
                EventType::Put
            };
            if (kind == EventType::Put && filter.no_put)
                || (kind == EventType::Delete && filter.no_delete)
            {
                continue;
            }
            let prev_kv = if filter.prev_kv {
                self.previous_live(&record.kv.key, *rev)
            } else {
                None
            };
            events.push(Event {
                r#type: kind as i32,
                kv: Some(record.kv.clone()),
                prev_kv,
            });
        }
        Ok(EventBatch {
            events,
            scanned_through_revision: self.current_revision.max(scanned_through_revision),
        })
    }

    fn previous_live(&self, key: &[u8], rev: Revision) -> Option<KeyValue> {
        let revs = self.index.get(key)?;
        let n = revs.partition_point(|r| *r < rev);
        let prev = revs.get(n.checked_sub(1)?)?;
        self.records
            .get(prev)
            .filter(|r| !r.tombstone)
            .map(|r| r.kv.clone())
    }

    /// A CRC32C over every stored record up to `revision` (`0` = newest), for comparing
    /// replicas.
    pub fn hash_kv(&self, revision: i64) -> Result<u32, KvError> {
        let upto = if revision <= 0 {
            self.current_revision
        } else {
            revision
        };
        if upto > self.current_revision {
            return Err(KvError::FutureRevision);
        }
        if upto < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut crc = 0u32;
        for (rev, record) in self.records.range(
            ..=Revision {
                main: upto,
                sub: i64::MAX,
            },
        ) {
            crc = crc32c::crc32c_append(crc, &rev.main.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &rev.sub.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &[u8::from(record.tombstone)]);
            crc = crc32c::crc32c_append(crc, &(record.kv.key.len() as u64).to_be_bytes());
            crc = crc32c::crc32c_append(crc, &record.kv.key);
            crc = crc32c::crc32c_append(crc, &record.kv.value);
        }
        Ok(crc)
    }
}

fn set_txn_headers(resp: &mut TxnResponse, revision: i64) {
    resp.header = header(revision);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header = header(revision),
            Some(response_op::Response::ResponsePut(r)) => r.header = header(revision),
            Some(response_op::Response::ResponseDeleteRange(r)) => r.header = header(revision),
            Some(response_op::Response::ResponseTxn(t)) => set_txn_headers(t, revision),
            None => {}
        }
    }
}

/// Walks the branches `path` chose through `txn` and its nested txns (`at` counts the txns
/// passed), answering every operation but a nested txn with `op`, and returns the responses
/// in the shape of the request.
fn walk_txn<C>(
    ctx: &mut C,
    txn: &TxnRequest,
    path: &[bool],
    at: &mut usize,
    op: &mut impl FnMut(&mut C, &request_op::Request) -> Result<response_op::Response, KvError>,
) -> Result<TxnResponse, KvError> {
    let succeeded = path[*at];
    *at += 1;
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut responses = Vec::with_capacity(ops.len());
    for request in ops.iter().filter_map(|o| o.request.as_ref()) {
        let response = match request {
            request_op::Request::RequestTxn(nested) => {
                response_op::Response::ResponseTxn(walk_txn(ctx, nested, path, at, op)?)
            }
            other => op(ctx, other)?,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let ordering = match cmp.target() {
        T::Value => {
            let want: &[u8] = match &cmp.target_union {
                Some(U::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        target => {
            let (have, want) = match (target, &cmp.target_union) {
                (T::Version, Some(U::Version(v))) => (kv.version, *v),
                (T::Version, _) => (kv.version, 0),
                (T::Create, Some(U::CreateRevision(v))) => (kv.create_revision, *v),
                (T::Create, _) => (kv.create_revision, 0),
                (T::Mod, Some(U::ModRevision(v))) => (kv.mod_revision, *v),
                (T::Mod, _) => (kv.mod_revision, 0),
                (T::Lease, Some(U::Lease(v))) => (kv.lease, *v),
                (T::Lease, _) => (kv.lease, 0),
                (T::Value, _) => unreachable!("value compares are handled above"),
            };
            have.cmp(&want)
        }
    };
    match cmp.result() {
        R::Equal => ordering.is_eq(),
        R::Greater => ordering.is_gt(),
        R::Less => ordering.is_lt(),
        R::NotEqual => ordering.is_ne(),
    }
}

/// Checks of a put that need no state.
pub fn check_put_static(req: &PutRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// Whether a txn (in any branch, at any depth) contains a put or a delete.
pub fn txn_has_writes(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(
                request_op::Request::RequestPut(_) | request_op::Request::RequestDeleteRange(_),
            ) => true,
            Some(request_op::Request::RequestTxn(nested)) => txn_has_writes(nested),
            Some(request_op::Request::RequestRange(_)) | None => false,
        })
}

/// Checks of a txn that need no state: op counts, depth, keys present, no key written twice.
pub fn check_txn_static(txn: &TxnRequest) -> Result<(), KvError> {
    check_txn_shape(txn, 1)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

fn check_txn_shape(txn: &TxnRequest, depth: usize) -> Result<(), KvError> {
    if depth > TXN_DEPTH_MAX {
        return Err(KvError::TxnTooDeep { max: TXN_DEPTH_MAX });
    }
    if txn.compare.len() > TXN_OPS_MAX
        || txn.success.len() > TXN_OPS_MAX
        || txn.failure.len() > TXN_OPS_MAX
    {
        return Err(KvError::TooManyOps);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(KvError::EmptyKey)
            }
            Some(request_op::Request::RequestPut(p)) => check_put_static(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(KvError::EmptyKey)
            }
            Some(request_op::Request::RequestTxn(nested)) => check_txn_shape(nested, depth + 1)?,
            _ => {}
        }
    }
    Ok(())
}

/// Keys written by one branch: deleted spans and put keys.
#[derive(Default)]
struct Writes {
    deletes: Vec<KeySpan>,
    puts: BTreeSet<Vec<u8>>,
}

/// etcd's rule: within one executed path a key may be put at most once and may not be both
/// put and deleted. The branches of a nested txn are exclusive, so the same key may be put
/// in both; their writes then join the enclosing branch's.
fn check_intervals(ops: &[RequestOp]) -> Result<Writes, KvError> {
    let mut writes = Writes::default();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            writes.deletes.push(KeySpan::new(&d.key, &d.range_end));
        }
    }
    for op in ops {
        let Some(request_op::Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let success = check_intervals(&nested.success)?;
        let failure = check_intervals(&nested.failure)?;
        for key in &success.puts {
            if writes.puts.contains(key) || writes.deletes.iter().any(|d| d.contains(key)) {
                return Err(KvError::DuplicateKey);
            }
        }
        for key in &failure.puts {
            let clash = writes.puts.contains(key) && !success.puts.contains(key);
            if clash || writes.deletes.iter().any(|d| d.contains(key)) {
                return Err(KvError::DuplicateKey);
            }
        }
        writes.puts.extend(success.puts);
        writes.puts.extend(failure.puts);
        writes.deletes.extend(success.deletes);
        writes.deletes.extend(failure.deletes);
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            if writes.deletes.iter().any(|d| d.contains(&p.key))
                || !writes.puts.insert(p.key.clone())
            {
                return Err(KvError::DuplicateKey);
            }
        }
    }
    Ok(writes)
}
