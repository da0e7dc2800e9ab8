//! Collection: the journal's oldest segment goes once what is live in it has been copied
//! to the journal's end.
//!
//! What pins a journal record is, per group, being the location of one of the group's live
//! entries or being the group's latest state record. One step takes the oldest segment
//! (journal indices below `boundary`, the first index of the next segment), and for every
//! group pinning it writes `Rewrite` records of its live entries located there and, if its
//! latest state record is there, a fresh state record; then it waits until they are durable
//! and only then truncates the journal's prefix through `boundary - 1`.
//!
//! Crash safety, step by step: before the copies are durable, the old records are intact and
//! a crash leaves the old journal (torn copies at the tail are cut by the journal's
//! recovery). Once they are durable, both copies exist until the prefix truncation, whose
//! commit point is the journal's atomic `start` marker: replaying a rewrite sets the entries
//! to the bytes they already have, so old-and-new replays exactly like new. After the
//! truncation, every live entry and every latest state is at or past `boundary`, so the
//! suffix replays to the same groups (see [`replay`](super::replay)).
//!
//! Work per step is bounded: one segment's records are planned, each group's copies are
//! read without its lock and written in chunks of at most [`REWRITE_CHUNK_BYTES`] under it,
//! rechecking that each entry is still where it was (a truncation meanwhile wins).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::group::{read_encoded, Group, Loc};
use super::op::{self, KIND_APPEND, KIND_REWRITE};
use super::order::Pin;
use super::{Inner, Written};
use crate::error::Result;
use crate::{lock, RECORD_HEADER_BYTES};

/// What one collection step copies for one group: its entries located in the collected
/// records (index and location), ascending by index.
struct GroupPlan {
    group: Arc<Group>,
    entries: Vec<(u64, Loc)>,
}

/// Most payload bytes of one rewrite record (or one entry, if larger): bounds how long the
/// journal-order lock is held for one copy.
pub(crate) const REWRITE_CHUNK_BYTES: u64 = 1 << 20;

impl Inner {
    /// Collects the journal's oldest segment, unless it is the only one. Returns the bytes
    /// of journal records it wrote, or `None` if there was nothing to collect.
    pub(super) fn collect_step(&self) -> Result<Option<u64>> {
        let spans = self.journal.segment_spans();
        if spans.len() < 2 {
            return Ok(None);
        }
        let boundary = spans[1].first_index;
        // Every record below `boundary` was appended before the next segment existed, so
        // before this point; whatever is appended from now on lands at or past `boundary`.
        let pins = lock(&self.core.order).pins_below(boundary);
        assert_eq!(
            pins.first().map(|(ji, _)| *ji),
            Some(spans[0].first_index),
            "the oldest segment's records are pinned"
        );
        let mut rewritten = 0;
        for plan in self.plan_collection(&pins) {
            self.crash_point()?;
            rewritten += self.rewrite_group(&plan.group, &plan.entries, boundary)?;
        }
        self.crash_point()?;
        self.make_durable(self.journal.last_index())?;
        self.crash_point()?;
        self.journal.truncate_prefix(boundary - 1)?;
        let journal_bytes = self.journal.segment_spans().iter().map(|s| s.bytes).sum();
        let mut order = lock(&self.core.order);
        order.forget_below(boundary);
        order.journal_bytes = journal_bytes;
        Ok(Some(rewritten))
    }

    /// For each live group with records among `pins`: its entries located in those records.
    fn plan_collection(&self, pins: &[(u64, Pin)]) -> Vec<GroupPlan> {
        let mut plans: BTreeMap<u64, GroupPlan> = BTreeMap::new();
        {
            // Looked up under the map's lock, locked without it (see `Core::groups`).
            let groups = self
                .core
                .groups
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, pin) in pins {
                if let Some(group) = groups.get(&pin.group) {
                    plans.entry(pin.group).or_insert_with(|| GroupPlan {
                        group: Arc::clone(group),
                        entries: Vec::new(),
                    });
                }
            }
        }
        for &(journal_index, pin) in pins {
            let Some(plan) = plans.get_mut(&pin.group) else {
                continue;
            };
            if !matches!(pin.kind, KIND_APPEND | KIND_REWRITE) {
                continue;
            }
            let g = plan.group.lock();
            if g.removed {
                continue;
            }
            for index in pin.lo..pin.lo + u64::from(pin.count) {
                if let Some(loc) = g.loc(index).filter(|l| l.journal_index == journal_index) {
                    plan.entries.push((index, *loc));
                }
            }
        }
        plans
            .into_values()
            .map(|mut plan| {
                plan.entries.sort_unstable_by_key(|&(index, _)| index);
                plan
            })
            .collect()
    }

    /// Copies `group`'s `candidates` that are still live where they were, and its state
    /// if that is below `boundary`. Returns the bytes of records written.
    fn rewrite_group(
        &self,
        group: &Group,
        candidates: &[(u64, Loc)],
        boundary: u64,
    ) -> Result<u64> {
        let chunk_bytes = REWRITE_CHUNK_BYTES.min(self.options.journal.record_bytes_max);
        let mut written = 0;
        let mut k = 0;
        while k < candidates.len() {
            let mut n = 1;
            let mut bytes = u64::from(candidates[k].1.len);
            while let Some((_, next)) = candidates.get(k + n) {
                if bytes + u64::from(next.len) > chunk_bytes {
                    break;
                }
                bytes += u64::from(next.len);
                n += 1;
            }
            let chunk = &candidates[k..k + n];
            // Read (and verify) without the group's lock: only this collection moves
            // entries, so the records stay; a truncation meanwhile is caught below.
            let encoded = read_encoded(&self.journal, chunk)?;
            written += self.rewrite_chunk(group, chunk, &encoded)?;
            k += n;
        }
        let mut g = group.lock();
        if !g.removed && g.state_journal_index < boundary {
            let (first, last, hs) = (g.first_index, g.last_index(), g.hard_state);
            let journal_index =
                self.write_state(group.id, first, last, &hs, Written::Collection, 0)?;
            g.state_journal_index = journal_index;
            written += (RECORD_HEADER_BYTES + op::STATE_BYTES) as u64;
        }
        Ok(written)
    }

    /// Writes rewrite records for the entries of `chunk` (with their encodings `encoded`)
    /// that are still where they were: one record per run of consecutive indices.
    fn rewrite_chunk(&self, group: &Group, chunk: &[(u64, Loc)], encoded: &[Bytes]) -> Result<u64> {
        let mut g = group.lock();
        if g.removed {
            return Ok(0);
        }
        let still: Vec<usize> = (0..chunk.len())
            .filter(|&i| g.loc(chunk[i].0) == Some(&chunk[i].1))
            .collect();
        let mut written = 0;
        let mut r = 0;
        while r < still.len() {
            let mut n = 1;
            while r + n < still.len() && chunk[still[r + n]].0 == chunk[still[r]].0 + n as u64 {
                n += 1;
            }
            let run = &still[r..r + n];
            let lo = chunk[run[0]].0;
            let mut payload = op::run_header(group.id, lo, n);
            for &i in run {
                payload.extend_from_slice(&encoded[i]);
            }
            let pin = Pin {
                group: group.id,
                lo,
                count: n as u32,
                kind: KIND_REWRITE,
            };
            let record_bytes = (RECORD_HEADER_BYTES + payload.len()) as u64;
            let (journal_index, offset) =
                self.write_record(KIND_REWRITE, payload, pin, Written::Collection, 0)?;
            let mut at = offset + (RECORD_HEADER_BYTES + op::RUN_HEADER_BYTES) as u64;
            for &i in run {
                let (index, old) = chunk[i];
                let k = (index - g.first_index) as usize;
                g.locs[k] = Loc {
                    journal_index,
                    offset: at,
                    ..old
                };
                at += u64::from(old.len);
            }
            written += record_bytes;
            r += n;
        }
        Ok(written)
    }
}
