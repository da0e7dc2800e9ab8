//! The Watch service.
//!
//! Each watcher is a task that reads events from the store's history, starting at its next
//! revision, and sends them on its stream. It never holds events the client has not
//! accepted beyond the stream's bounded buffer: while the client is slow the watcher simply
//! waits, and afterwards it continues reading history from where it stopped. Events therefore
//! arrive in revision order, each exactly once, and memory stays bounded; a watcher that falls
//! behind a compaction is cancelled with the compaction revision instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::AuthInfo;
use crate::backend::KvBackend;
use crate::error::KvError;
use crate::limits::{
    WATCHES_PER_STREAM_MAX, WATCH_EVENTS_PER_RESPONSE_MAX, WATCH_SCAN_RECORDS_MAX,
    WATCH_STREAM_BUFFER_RESPONSES,
};
use crate::proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request, watch_server, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use crate::service::EtcdApi;
use crate::store::{EventFilter, KeySpan};

/// The watch id etcd uses for responses addressed to the whole stream (progress replies).
const STREAM_WATCH_ID: i64 = -1;

type Outbox = mpsc::Sender<Result<WatchResponse, Status>>;

struct Watcher {
    task: JoinHandle<()>,
    /// Every event with a revision at or below this has been queued on the stream.
    sent_through_revision: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl<B: KvBackend> watch_server::Watch for EtcdApi<B> {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let by = self.sender(&request)?;
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER_RESPONSES);
        tokio::spawn(self.clone().run_stream(by, requests, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl<B: KvBackend> EtcdApi<B> {
    /// Serves one watch stream, whose watches `by` creates.
    async fn run_stream(self, by: AuthInfo, mut requests: Streaming<WatchRequest>, tx: Outbox) {
        let mut watchers: BTreeMap<i64, Watcher> = BTreeMap::new();
        let mut next_auto_id: i64 = 0;
        loop {
            let next = tokio::select! {
                next = requests.message() => next,
                () = tx.closed() => break,
            };
            let request = match next {
                Ok(Some(request)) => request,
                Ok(None) | Err(_) => break,
            };
            let sent = match request.request_union {
                Some(watch_request::RequestUnion::CreateRequest(create)) => {
                    self.create_watcher(&by, create, &mut watchers, &mut next_auto_id, &tx)
                        .await
                }
                Some(watch_request::RequestUnion::CancelRequest(cancel)) => {
                    match watchers.remove(&cancel.watch_id) {
                        // A watcher that already ended (compacted) has sent its last
                        // response; like etcd, a late cancel for it gets no answer.
                        Some(watcher) if watcher.task.is_finished() => true,
                        Some(watcher) => {
                            watcher.task.abort();
                            // Once the task has stopped nothing more is queued for this id, so
                            // the cancel confirmation is its last response.
                            let _ = watcher.task.await;
                            let resp = WatchResponse {
                                header: Some(self.header(self.current_revision())),
                                watch_id: cancel.watch_id,
                                canceled: true,
                                ..WatchResponse::default()
                            };
                            tx.send(Ok(resp)).await.is_ok()
                        }
                        None => true,
                    }
                }
                Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                    let revision = watchers
                        .values()
                        .filter(|w| !w.task.is_finished())
                        .map(|w| w.sent_through_revision.load(Ordering::Acquire))
                        .min()
                        .unwrap_or_else(|| self.current_revision());
                    let resp = WatchResponse {
                        header: Some(self.header(revision)),
                        watch_id: STREAM_WATCH_ID,
                        ..WatchResponse::default()
                    };
                    tx.send(Ok(resp)).await.is_ok()
                }
                None => true,
            };
            if !sent {
                break;
            }
        }
        for watcher in watchers.values() {
            watcher.task.abort();
        }
    }

    /// Registers a watcher; returns false when the stream is gone.
    async fn create_watcher(
        &self,
        by: &AuthInfo,
        mut create: WatchCreateRequest,
        watchers: &mut BTreeMap<i64, Watcher>,
        next_auto_id: &mut i64,
        tx: &Outbox,
    ) -> bool {
        watchers.retain(|_, w| !w.task.is_finished());
        let progress = self.backend.state().progress();
        // As etcd does, a refused watch is answered with id -1, never with an id that a live
        // watch of the stream may hold: a client would take the refusal for that watch's.
        let refuse = |reason: String| WatchResponse {
            header: Some(self.header(progress.revision)),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..WatchResponse::default()
        };
        if create.key.is_empty() {
            // As in etcd, an empty key means the smallest key, "\0".
            create.key = vec![0];
        }
        let refusal = if watchers.len() >= WATCHES_PER_STREAM_MAX {
            let reason =
                format!("ordo: a watch stream holds at most {WATCHES_PER_STREAM_MAX} watches");
            Some(refuse(reason))
        } else if create.watch_id < 0 {
            Some(refuse("ordo: watch ids must not be negative".to_string()))
        } else if create.start_revision < 0 {
            // Rather than start "now" in silence, as if no revision had been asked for.
            Some(refuse(format!(
                "ordo: start revision {} is negative; give 0 to start after the current revision",
                create.start_revision
            )))
        } else if create.watch_id != 0 && watchers.contains_key(&create.watch_id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_string();
            Some(refuse(reason))
        } else if let Err(status) = self.check_read(by, &create.key, &create.range_end) {
            Some(refuse(status.message().to_string()))
        } else {
            None
        };
        if let Some(resp) = refusal {
            return tx.send(Ok(resp)).await.is_ok();
        }
        let watch_id = if create.watch_id != 0 {
            create.watch_id
        } else {
            // Automatic ids only grow, so a cancelled watcher's id is never reused.
            while watchers.contains_key(next_auto_id) {
                *next_auto_id += 1;
            }
            *next_auto_id += 1;
            *next_auto_id - 1
        };
        let filter = EventFilter {
            span: KeySpan::new(&create.key, &create.range_end),
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
        };
        let start_revision = if create.start_revision > 0 {
            create.start_revision
        } else {
            progress.revision + 1
        };
        let created = WatchResponse {
            header: Some(self.header(progress.revision)),
            watch_id,
            created: true,
            ..WatchResponse::default()
        };
        // The confirmation is queued before the watcher exists, so it precedes every event.
        if tx.send(Ok(created)).await.is_err() {
            return false;
        }
        let sent_through_revision = Arc::new(AtomicI64::new(start_revision - 1));
        let task = tokio::spawn(self.clone().run_watcher(
            watch_id,
            filter,
            start_revision,
            create.progress_notify,
            Arc::clone(&sent_through_revision),
            tx.clone(),
        ));
        watchers.insert(
            watch_id,
            Watcher {
                task,
                sent_through_revision,
            },
        );
        true
    }

    async fn run_watcher(
        self,
        watch_id: i64,
        filter: EventFilter,
        mut next_revision: i64,
        progress_notify: bool,
        sent_through_revision: Arc<AtomicI64>,
        tx: Outbox,
    ) {
        let state = self.backend.state();
        let mut changes = state.subscribe();
        let period = self.config.watch_progress_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Marking the current version seen before reading guarantees that any apply after
            // the read wakes the wait below.
            changes.borrow_and_update();
            let (batch, current_revision) = state.read(|store| {
                let batch = store.events_since(
                    next_revision,
                    &filter,
                    WATCH_EVENTS_PER_RESPONSE_MAX,
                    WATCH_SCAN_RECORDS_MAX,
                );
                (batch, store.current_revision())
            });
            match batch {
                Ok(batch) => {
                    let through = batch.scanned_through_revision;
                    if !batch.events.is_empty() {
                        let resp = WatchResponse {
                            header: Some(self.header(through)),
                            watch_id,
                            events: batch.events,
                            ..WatchResponse::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    sent_through_revision.store(through, Ordering::Release);
                    next_revision = through + 1;
                    if through < current_revision {
                        // More history to read; let other tasks run between steps.
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
                Err(error) => {
                    let compact_revision = match &error {
                        KvError::Compacted { compact_revision } => *compact_revision,
                        _ => 0,
                    };
                    tracing::debug!(watch_id, next_revision, compact_revision, %error, "watcher cancelled");
                    let resp = WatchResponse {
                        header: Some(self.header(current_revision)),
                        watch_id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: error.to_string(),
                        ..WatchResponse::default()
                    };
                    let _ = tx.send(Ok(resp)).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = progress.tick(), if progress_notify => {
                    let resp = WatchResponse {
                        header: Some(self.header(sent_through_revision.load(Ordering::Acquire))),
                        watch_id,
                        ..WatchResponse::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
