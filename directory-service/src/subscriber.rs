//! One subscriber's outbound queue: bounded in messages and bytes, with control events (presence,
//! receipts) allowed a separate bound, a stall clock, and a way to end the stream with a status.
//! Presence is coalesced: when joins and leaves come faster than one per `presence_window`, the
//! next one waits for the window to end and then everything queued leaves together (one HTTP/2
//! frame, one write, instead of one each), in the order it was queued.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use svs_common::proto::directory::{Event, event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    /// Presence events and receipts.
    pub events: usize,
    /// Presence events closer together than this leave in batches.
    pub presence_window: Duration,
}

/// What travels through the queue: the event and what it counts against the limits.
pub struct Queued {
    pub event: Event,
    bytes: usize,
    is_message: bool,
    is_presence: bool,
}

/// Whether a message found room.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    Full,
}

/// The sending half, held by the directory.
pub struct Subscriber {
    tx: mpsc::UnboundedSender<Queued>,
    limits: QueueLimits,
    messages: AtomicUsize,
    bytes: AtomicUsize,
    control: AtomicUsize,
    full_since: Mutex<Option<Instant>>,
    closed: CancellationToken,
    final_status: Mutex<Option<Status>>,
    /// Set when the queue itself cut the subscriber for not reading its events.
    too_slow: std::sync::atomic::AtomicBool,
}

/// The receiving half, owned by the response stream.
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// An item taken from the queue but held back for the presence window (kept here, not in a
    /// future, so a cancelled `next` loses nothing).
    held: Option<Queued>,
    presence_window: Duration,
    /// When the next presence event may leave without waiting.
    presence_ready_at: tokio::time::Instant,
    /// Set while releasing what was queued when a window ended.
    draining: bool,
}

impl Subscriber {
    pub fn new(limits: QueueLimits) -> (std::sync::Arc<Self>, Outbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Self {
            tx,
            limits,
            messages: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            control: AtomicUsize::new(0),
            full_since: Mutex::new(None),
            closed: CancellationToken::new(),
            final_status: Mutex::new(None),
            too_slow: std::sync::atomic::AtomicBool::new(false),
        };
        let outbox = Outbox {
            rx,
            held: None,
            presence_window: limits.presence_window,
            presence_ready_at: tokio::time::Instant::now(),
            draining: false,
        };
        (std::sync::Arc::new(sub), outbox)
    }

    /// Queues an envelope if the queue has room in messages and bytes; otherwise starts (or keeps)
    /// the stall clock and reports Full.
    pub fn push_message(&self, event: Event, bytes: usize) -> Push {
        let has_room = self.messages.load(Ordering::Acquire) < self.limits.messages
            && self.bytes.load(Ordering::Acquire) + bytes <= self.limits.bytes;
        if !has_room {
            self.note_full();
            return Push::Full;
        }
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let queued = Queued {
            event,
            bytes,
            is_message: true,
            is_presence: false,
        };
        if self.tx.send(queued).is_err() {
            return Push::Full;
        }
        Push::Queued
    }

    /// Queues a presence event or receipt. These are small and must not be lost: a subscriber
    /// with more than `events` of them waiting is disconnected as too slow instead.
    /// Returns false when the subscriber is (now) closed.
    pub fn push_control(&self, event: Event) -> bool {
        if self.control.fetch_add(1, Ordering::AcqRel) >= self.limits.events {
            self.too_slow.store(true, Ordering::Release);
            self.close(Status::resource_exhausted(
                "disconnected: this client read its event stream too slowly",
            ));
            return false;
        }
        let is_presence = matches!(
            event.kind,
            Some(event::Kind::Joined(_) | event::Kind::Left(_))
        );
        let queued = Queued {
            event,
            bytes: 0,
            is_message: false,
            is_presence,
        };
        self.tx.send(queued).is_ok()
    }

    /// Starts the stall clock unless it runs already: the subscriber refused a message.
    pub fn note_full(&self) {
        self.full_since
            .lock()
            .expect("queue lock")
            .get_or_insert_with(Instant::now);
    }

    /// Whether the queue has been full for longer than `deadline`.
    pub fn stalled_longer_than(&self, deadline: Duration) -> bool {
        self.full_since
            .lock()
            .expect("queue lock")
            .is_some_and(|since| since.elapsed() > deadline)
    }

    /// Ends the stream; `status` is the last thing the client sees (OK ends it cleanly).
    pub fn close(&self, status: Status) {
        let mut slot = self.final_status.lock().expect("status lock");
        if slot.is_none() {
            *slot = Some(status);
        }
        self.closed.cancel();
    }

    /// Whether the queue cut this subscriber for letting its events pile up.
    pub fn cut_as_too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Acquire)
    }

    fn dequeued(&self, item: &Queued) {
        if item.is_message {
            self.messages.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(item.bytes, Ordering::AcqRel);
            *self.full_since.lock().expect("queue lock") = None;
        } else {
            self.control.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Outbox {
    /// The next event, or the final status once the subscriber is closed. `None` ends the stream.
    pub async fn next(&mut self, sub: &Subscriber) -> Option<Result<Event, Status>> {
        loop {
            let item = match self.held.take() {
                Some(item) => item,
                None if self.draining => match self.rx.try_recv() {
                    Ok(item) => item,
                    Err(_) => {
                        self.draining = false;
                        continue;
                    }
                },
                None => tokio::select! {
                    biased;
                    _ = sub.closed.cancelled() => return final_status(sub),
                    item = self.rx.recv() => item?,
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
            sub.dequeued(&item);
            return Some(Ok(item.event));
        }
    }
}

/// What a closed subscriber's stream ends with: an error status, or nothing for a clean end.
fn final_status(sub: &Subscriber) -> Option<Result<Event, Status>> {
    let status = sub
        .final_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
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

    fn version(event: &Event) -> u64 {
        match &event.kind {
            Some(event::Kind::Left(l)) => l.version,
            _ => 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn presence_in_bursts_leaves_in_batches_and_in_order() {
        let (sub, mut outbox) = Subscriber::new(LIMITS);
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
        let (sub, mut outbox) = Subscriber::new(LIMITS);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            sub.push_control(receipt());
            assert!(outbox.next(&sub).await.unwrap().is_ok());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
