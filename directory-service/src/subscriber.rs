//! One subscriber's outbound queue, built from bounded parts: every queued item carries the
//! semaphore permits it counts against (messages, bytes, or control events) and gives them back
//! when it leaves the queue, so the bounds cannot drift out of step.
//!
//! Mailbox items reach a subscriber two ways. While it is *live*, each commit is pushed straight
//! into its queue; when the queue is full (or a push would skip a sequence number) it stops being
//! live, and its `Outbox` reads the rest from the mailbox store in order until it has caught up,
//! then goes live again. So a slow reader costs the store's disk, not the relay's memory, and
//! nothing is lost or reordered. Presence events and receipts are small and never dropped: a
//! subscriber with more than `events` of them waiting is disconnected as too slow.
//!
//! Presence is coalesced: when joins and leaves come faster than one per `presence_window`, the
//! next one waits for the window to end and then everything queued leaves together (one HTTP/2
//! frame, one write, instead of one each), in the order it was queued.

use crate::mailbox::Mailboxes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svs_common::proto::directory::{Event, event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Mailbox items read from the store at a time while catching up.
pub(crate) const CATCH_UP_PAGE: usize = 64;

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    /// Presence events and receipts.
    pub events: usize,
    /// Presence events closer together than this leave in batches.
    pub presence_window: Duration,
}

/// What travels through the queue: the event and the permits it holds while queued. The event
/// is boxed so the channel's preallocated slots stay small (an idle subscriber's queue costs a
/// block of 32 of them).
#[derive(Debug)]
pub(crate) struct Queued {
    pub event: Box<Event>,
    is_presence: bool,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// Whether new mailbox items are pushed, and the highest sequence number handed over.
#[derive(Debug, Default)]
struct Delivery {
    live: bool,
    cursor: u64,
    /// False for a stream that asked for no mail: it is never offered any, nor reads the store.
    takes_mail: bool,
}

/// The sending half, held by the session.
#[derive(Debug)]
pub(crate) struct Subscriber {
    tx: mpsc::UnboundedSender<Queued>,
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    events: Arc<Semaphore>,
    delivery: Mutex<Delivery>,
    closed: CancellationToken,
    final_status: Mutex<Option<Status>>,
    /// Set when the queue itself cut the subscriber for not reading its events.
    too_slow: AtomicBool,
    limits: QueueLimits,
}

/// The receiving half, owned by the response stream.
pub(crate) struct Outbox {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// The name whose mailbox this subscription drains.
    owner: String,
    mail: Arc<dyn Mailboxes>,
    /// Items read from the store, not yet yielded.
    backlog: VecDeque<Event>,
    /// An item taken from the queue but held back for the presence window (kept here, not in a
    /// future, so a cancelled `next` loses nothing).
    held: Option<Queued>,
    presence_window: Duration,
    /// When the next presence event may leave without waiting.
    presence_ready_at: tokio::time::Instant,
    /// Set while releasing what was queued when a window ended.
    draining: bool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscriber {
    /// A subscriber for `owner`'s mailbox; it starts by catching up from the store (unless it
    /// takes no mail).
    pub(crate) fn new(
        limits: QueueLimits,
        owner: String,
        mail: Arc<dyn Mailboxes>,
        takes_mail: bool,
    ) -> (Arc<Self>, Outbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Self {
            tx,
            messages: Arc::new(Semaphore::new(limits.messages)),
            bytes: Arc::new(Semaphore::new(limits.bytes.min(Semaphore::MAX_PERMITS))),
            events: Arc::new(Semaphore::new(limits.events)),
            delivery: Mutex::new(Delivery {
                live: !takes_mail,
                cursor: 0,
                takes_mail,
            }),
            closed: CancellationToken::new(),
            final_status: Mutex::new(None),
            too_slow: AtomicBool::new(false),
            limits,
        };
        let outbox = Outbox {
            rx,
            owner,
            mail,
            backlog: VecDeque::new(),
            held: None,
            presence_window: limits.presence_window,
            presence_ready_at: tokio::time::Instant::now(),
            draining: false,
        };
        (Arc::new(sub), outbox)
    }

    /// Offers a mailbox item that was just committed. Queued if the subscriber is live, the item
    /// is the next in sequence (its `prev_seq` is what was handed over last) and the queue has room; otherwise the subscriber stops being live
    /// (its outbox then reads the store) unless it already has the item. Returns whether queued.
    pub(crate) fn offer(&self, seq: u64, prev_seq: u64, event: &Event, bytes: usize) -> bool {
        let mut delivery = lock(&self.delivery);
        if !delivery.takes_mail || !delivery.live || seq <= delivery.cursor {
            return false;
        }
        let permits = (prev_seq == delivery.cursor)
            .then(|| {
                let count = self.messages.clone().try_acquire_owned().ok()?;
                let size = u32::try_from(bytes).ok()?;
                let size = self.bytes.clone().try_acquire_many_owned(size).ok()?;
                Some((count, Some(size)))
            })
            .flatten();
        let Some(permits) = permits else {
            // Its memory queue is full: it catches up from the store instead.
            metrics::counter!("svs_directory_subscribers_behind_total").increment(1);
            delivery.live = false;
            return false;
        };
        let queued = Queued {
            event: Box::new(event.clone()),
            is_presence: false,
            _permits: permits,
        };
        if self.tx.send(queued).is_err() {
            delivery.live = false;
            return false;
        }
        delivery.cursor = seq;
        metrics::counter!("svs_directory_messages_queued_live_total").increment(1);
        true
    }

    /// Goes live if nothing was committed after `cursor` (what the outbox has read up to).
    fn go_live(&self, cursor: u64, last_committed: impl FnOnce() -> u64) -> bool {
        let mut delivery = lock(&self.delivery);
        delivery.cursor = delivery.cursor.max(cursor);
        if last_committed() <= delivery.cursor {
            delivery.live = true;
        }
        delivery.live
    }

    /// The highest sequence number handed to this subscriber, and whether it is live.
    fn position(&self) -> (u64, bool) {
        let delivery = lock(&self.delivery);
        (delivery.cursor, delivery.live)
    }

    /// Queues a presence event or live receipt. These are small and must not be lost: a
    /// subscriber with more than `events` of them waiting is disconnected as too slow instead.
    /// Returns false when the subscriber is (now) closed.
    pub(crate) fn push_control(&self, event: Event) -> bool {
        let Ok(permit) = self.events.clone().try_acquire_owned() else {
            self.too_slow.store(true, Ordering::Release);
            self.close(Status::resource_exhausted(
                "disconnected: this client read its event stream too slowly",
            ));
            return false;
        };
        let is_presence = matches!(
            event.kind,
            Some(event::Kind::Joined(_) | event::Kind::Left(_))
        );
        let queued = Queued {
            event: Box::new(event),
            is_presence,
            _permits: (permit, None),
        };
        self.tx.send(queued).is_ok()
    }

    /// Queues a hint (group activity) if there is room; a hint that does not fit is dropped,
    /// not held against the client: clients also poll, and the next hint says the same.
    pub(crate) fn push_hint(&self, event: Event) {
        let Ok(permit) = self.events.clone().try_acquire_owned() else {
            return;
        };
        let _ = self.tx.send(Queued {
            event: Box::new(event),
            is_presence: false,
            _permits: (permit, None),
        });
    }

    /// Ends the stream; `status` is the last thing the client sees (OK ends it cleanly).
    pub(crate) fn close(&self, status: Status) {
        let mut slot = lock(&self.final_status);
        if slot.is_none() {
            *slot = Some(status);
        }
        self.closed.cancel();
    }

    /// Mailbox items and events (presence, live receipts) waiting in the queue now.
    pub(crate) fn queued(&self) -> (usize, usize) {
        (
            self.limits.messages - self.messages.available_permits(),
            self.limits.events - self.events.available_permits(),
        )
    }

    /// Whether this stream carries the name's mail.
    pub(crate) fn takes_mail(&self) -> bool {
        lock(&self.delivery).takes_mail
    }

    /// Whether the queue cut this subscriber for letting its events pile up.
    pub(crate) fn cut_as_too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Acquire)
    }
}

impl Outbox {
    /// The next event, or the final status once the subscriber is closed. `None` ends the stream.
    pub(crate) async fn next(&mut self, sub: &Subscriber) -> Option<Result<Event, Status>> {
        loop {
            if sub.closed.is_cancelled() {
                return final_status(sub);
            }
            let item = match self.held.take() {
                Some(item) => item,
                None => match self.rx.try_recv() {
                    Ok(item) => item,
                    Err(_) if self.draining => {
                        self.draining = false;
                        continue;
                    }
                    Err(_) => {
                        if let Some(event) = self.backlog.pop_front() {
                            return Some(Ok(event));
                        }
                        let (cursor, live) = sub.position();
                        if !live {
                            if let Err(status) = self.catch_up(sub, cursor).await {
                                return Some(Err(status));
                            }
                            continue;
                        }
                        tokio::select! {
                            biased;
                            _ = sub.closed.cancelled() => return final_status(sub),
                            item = self.rx.recv() => item?,
                        }
                    }
                },
            };
            if item.is_presence && !self.draining {
                let now = tokio::time::Instant::now();
                if now < self.presence_ready_at {
                    // Too soon after the last presence: wait out the window, then release this
                    // and everything queued behind it together.
                    let until = self.presence_ready_at;
                    self.held = Some(item);
                    tokio::select! {
                        biased;
                        _ = sub.closed.cancelled() => return final_status(sub),
                        _ = tokio::time::sleep_until(until) => {}
                    }
                    self.draining = true;
                    continue;
                }
            }
            if item.is_presence {
                self.presence_ready_at = tokio::time::Instant::now() + self.presence_window;
            }
            return Some(Ok(*item.event));
        }
    }

    /// Reads the next page of the mailbox after `cursor` into the backlog, or goes live when
    /// there is nothing more.
    async fn catch_up(&mut self, sub: &Subscriber, cursor: u64) -> Result<(), Status> {
        let page = tokio::select! {
            biased;
            _ = sub.closed.cancelled() => return Ok(()),
            page = self.mail.read(&self.owner, cursor, CATCH_UP_PAGE) => page.map_err(Status::from)?,
        };
        if page.scanned_to == cursor {
            let mail = self.mail.clone();
            let owner = self.owner.clone();
            sub.go_live(cursor, move || mail.last_seq(&owner));
            return Ok(());
        }
        self.backlog
            .extend(page.items.into_iter().map(|(_, event)| event));
        lock(&sub.delivery).cursor = page.scanned_to;
        Ok(())
    }
}

/// What a closed subscriber's stream ends with: an error status, or nothing for a clean end.
fn final_status(sub: &Subscriber) -> Option<Result<Event, Status>> {
    let status = lock(&sub.final_status).take();
    match status {
        Some(s) if s.code() != tonic::Code::Ok => Some(Err(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svs_common::proto::directory::{DeliveryReceipt, PeerLeft};

    const LIMITS: QueueLimits = QueueLimits {
        messages: 8,
        bytes: 1 << 20,
        events: 1024,
        presence_window: Duration::from_millis(25),
    };

    fn left(version: u64) -> Event {
        Event {
            kind: Some(event::Kind::Left(PeerLeft {
                version,
                name: format!("p{version}"),
                reason: "quit".into(),
            })),
        }
    }

    fn receipt() -> Event {
        Event {
            kind: Some(event::Kind::Delivered(DeliveryReceipt::default())),
        }
    }

    /// A live subscriber over an empty mailbox: these tests are about the queue alone.
    fn live_subscriber(dir: &tempfile::TempDir) -> (Arc<Subscriber>, Outbox) {
        let db = crate::directory::open_db(&dir.path().join("names.redb")).unwrap();
        let quotas = crate::mailbox::Quotas {
            ttl_ms: 1000,
            max_messages: 10,
            max_bytes: 1 << 20,
            max_messages_per_sender: 10,
            max_bytes_per_sender: 1 << 20,
            max_total_bytes: 1 << 30,
            min_free_disk_bytes: 0,
            remember_ids_ms: 1000,
        };
        let mail = Arc::new(crate::mailbox::RedbMailboxes::open(db, quotas).unwrap());
        let (sub, outbox) = Subscriber::new(LIMITS, "me".into(), mail, true);
        assert!(sub.go_live(0, || 0));
        (sub, outbox)
    }

    fn version(event: &Event) -> u64 {
        match &event.kind {
            Some(event::Kind::Left(l)) => l.version,
            _ => 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn presence_in_bursts_leaves_in_batches_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (sub, mut outbox) = live_subscriber(&dir);
        let start = tokio::time::Instant::now();
        // A quiet subscriber gets the first presence event at once.
        sub.push_control(left(1));
        let first = outbox.next(&sub).await.unwrap().unwrap();
        assert_eq!(version(&first), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Nine more right behind it, and a receipt among them: held until the window ends...
        for v in 2..=6 {
            sub.push_control(left(v));
        }
        sub.push_control(receipt());
        for v in 7..=10 {
            sub.push_control(left(v));
        }
        let second = outbox.next(&sub).await.unwrap().unwrap();
        assert_eq!(version(&second), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(25));
        // ...then everything queued leaves together, in order, with no further wait.
        let mut rest = Vec::new();
        for _ in 0..9 {
            rest.push(outbox.next(&sub).await.unwrap().unwrap());
        }
        assert_eq!(start.elapsed(), Duration::from_millis(25));
        let versions: Vec<u64> = rest.iter().map(version).collect();
        assert_eq!(versions, [3, 4, 5, 6, 0, 7, 8, 9, 10]);
        // Presence after a quiet spell goes at once again.
        tokio::time::advance(Duration::from_millis(100)).await;
        let at = tokio::time::Instant::now();
        sub.push_control(left(11));
        assert_eq!(version(&outbox.next(&sub).await.unwrap().unwrap()), 11);
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn receipts_and_messages_alone_never_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (sub, mut outbox) = live_subscriber(&dir);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            sub.push_control(receipt());
            assert!(outbox.next(&sub).await.unwrap().is_ok());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
