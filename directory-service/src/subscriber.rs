//! One subscriber's outbound queue: bounded in messages and bytes, with control events (presence,
//! receipts) allowed a separate bound, a stall clock, and a way to end the stream with a status.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use svs_common::proto::directory::Event;
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
}

/// What travels through the queue: the event and what it counts against the limits.
pub struct Queued {
    pub event: Event,
    bytes: usize,
    is_message: bool,
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
        (std::sync::Arc::new(sub), Outbox { rx })
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
        let queued = Queued {
            event,
            bytes: 0,
            is_message: false,
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
        tokio::select! {
            biased;
            _ = sub.closed.cancelled() => {
                let status = sub.final_status.lock().expect("status lock").take();
                match status {
                    Some(s) if s.code() != tonic::Code::Ok => Some(Err(s)),
                    _ => None,
                }
            }
            item = self.rx.recv() => {
                let item = item?;
                sub.dequeued(&item);
                Some(Ok(item.event))
            }
        }
    }
}
