//! The encoder pool: a fixed number of threads, each keeping its own source decoder, building
//! segments highest priority first (a viewer waiting > read-ahead > warming), and within one
//! priority those without a head start first. Work yields between two frames to more urgent
//! work: anything to a waiting viewer, and a segment with its head start (a quarter of it) to
//! one without, so viewers starting at once each see a first frame soon. A queued segment every viewer has left is
//! dropped, and one left half-encoded is finished only as warming (at most `MAX_DEMOTED` wait
//! so), so one viewer's seeks cannot keep every core busy, and the work already done for a
//! viewer who watched a second and left is not thrown away.

use super::segment::{Phase, Priority, Segment};
use crate::media::SourceReader;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

/// What the pool asks of whoever owns the cache.
pub(super) trait Encode: Send + Sync + 'static {
    /// Encodes the rest of `segment` with `reader` (reopened as needed). Stops early, leaving
    /// the segment `Waiting`, when `should_stop` says so; returns whether it stopped early.
    fn encode(
        &self,
        segment: &Arc<Segment>,
        reader: &mut Option<SourceReader>,
        should_stop: &dyn Fn() -> bool,
    ) -> bool;
}

/// A queued segment. Warming holds it (nobody else does); viewers' work holds it weakly, so a
/// segment every viewer has left is not built.
enum Held {
    Strong(Arc<Segment>),
    Weak(Weak<Segment>),
}

struct Job {
    priority: Priority,
    /// The segment lacked its head start when queued.
    starving: bool,
    /// Earlier first among equals.
    seq: u64,
    segment: Held,
}

impl Job {
    fn rank(&self) -> (Priority, bool) {
        (self.priority, self.starving)
    }

    fn segment(&self) -> Option<Arc<Segment>> {
        match &self.segment {
            Held::Strong(s) => Some(s.clone()),
            Held::Weak(w) => w.upgrade(),
        }
    }

    /// Still worth an encoder: alive, waiting, and not since raised above this entry (a raise
    /// pushes a new entry).
    fn is_current(&self) -> bool {
        self.segment()
            .is_some_and(|s| s.phase() == Phase::Waiting && s.priority() == self.priority)
    }
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.rank(), self.seq) == (other.rank(), other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank()
            .cmp(&other.rank())
            .then(other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Queue {
    jobs: BinaryHeap<Job>,
    seq: u64,
}

impl Queue {
    /// Drops entries at the top that no longer matter.
    fn prune_top(&mut self) {
        while self.jobs.peek().is_some_and(|j| !j.is_current()) {
            self.jobs.pop();
        }
    }
}

/// Half-encoded segments nobody waits for that wait, as warming, to be finished.
const MAX_DEMOTED: usize = 8;

pub(super) struct Pool {
    queue: Mutex<Queue>,
    wake: Condvar,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    /// Starts `encoders` threads working for `owner` (held weakly: the pool stops with it).
    pub(super) fn start<E: Encode>(encoders: usize, owner: Weak<E>) -> Arc<Self> {
        let pool = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        for n in 0..encoders.max(1) {
            let pool = pool.clone();
            let owner = owner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("encoder-{n}"))
                .spawn({
                    let pool = pool.clone();
                    move || pool.work(&owner)
                });
            match spawned {
                Ok(thread) => pool
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(thread),
                Err(e) => tracing::error!(error = %e, "cannot start an encoder thread"),
            }
        }
        pool
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wants `segment` built at `priority` at least. Queues it if it is waiting and this raises
    /// its priority (or it was never queued); an encoder already on it just learns the new
    /// priority.
    pub(super) fn request(&self, segment: &Arc<Segment>, priority: Priority, first: bool) {
        let raised = segment.raise(priority);
        if !(raised || first) || segment.phase() != Phase::Waiting {
            return;
        }
        self.push(segment, false);
    }

    /// Puts back a segment an encoder yielded, ahead of later work of its priority.
    fn requeue(&self, segment: &Arc<Segment>) {
        self.push(segment, true);
    }

    /// Queues `segment` at its priority: after the work queued so far, or (`ahead`) before all
    /// other work of its rank.
    fn push(&self, segment: &Arc<Segment>, ahead: bool) {
        let priority = segment.priority();
        let held = if priority == Priority::Warm {
            Held::Strong(segment.clone())
        } else {
            Held::Weak(Arc::downgrade(segment))
        };
        let mut queue = self.queue();
        queue.seq += 1;
        let seq = if ahead { 0 } else { queue.seq };
        queue.jobs.push(Job {
            priority,
            starving: segment.is_starving(),
            seq,
            segment: held,
        });
        metrics::gauge!("svs_stream_encode_queue").set(queue.jobs.len() as f64);
        drop(queue);
        self.wake.notify_one();
    }

    /// Half-encoded segments waiting as warming.
    fn demoted_waiting(&self) -> usize {
        self.queue()
            .jobs
            .iter()
            .filter(|j| {
                matches!(&j.segment, Held::Strong(s) if s.filled() > 0 && s.priority() == Priority::Warm)
            })
            .count()
    }

    /// Whether work ranked above `than` (priority, then lacking a head start) is waiting.
    fn more_urgent_waiting(&self, than: (Priority, bool)) -> bool {
        let mut queue = self.queue();
        queue.prune_top();
        queue.jobs.peek().is_some_and(|j| j.rank() > than)
    }

    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    /// Stops the encoders and waits up to `limit` for each to finish the run it is on (a frame,
    /// or a group of pictures), so none is inside OpenCV or openh264 when the process exits.
    /// Returns how many were still running at the limit (blocking).
    pub(super) fn stop_and_wait(&self, limit: std::time::Duration) -> usize {
        self.stop();
        let deadline = std::time::Instant::now() + limit;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut running = 0;
        for thread in threads {
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                running += 1;
            }
        }
        running
    }

    fn next(&self) -> Option<Arc<Segment>> {
        let mut queue = self.queue();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            queue.prune_top();
            if let Some(job) = queue.jobs.pop() {
                metrics::gauge!("svs_stream_encode_queue").set(queue.jobs.len() as f64);
                let segment = job.segment();
                if let Some(segment) = segment
                    && segment.claim(Phase::Waiting, Phase::Encoding)
                {
                    return Some(segment);
                }
                continue;
            }
            queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn work<E: Encode>(&self, owner: &Weak<E>) {
        let mut reader: Option<SourceReader> = None;
        while let Some(segment) = self.next() {
            let Some(owner) = owner.upgrade() else { break };
            let should_stop = || {
                let priority = segment.priority();
                // Only this thread and the queue hold it: every viewer left.
                let abandoned = priority > Priority::Warm && Arc::strong_count(&segment) <= 1;
                abandoned
                    || self.stopping.load(Ordering::Acquire)
                    || self.more_urgent_waiting((priority, segment.is_starving()))
            };
            if !owner.encode(&segment, &mut reader, &should_stop) {
                continue;
            }
            // Warming is held by the queue alone; other work while a viewer holds it, or, once
            // every viewer left it half-encoded, as warming (within a bound).
            let abandoned = segment.priority() > Priority::Warm && Arc::strong_count(&segment) <= 1;
            if abandoned {
                if segment.filled() == 0 {
                    continue;
                }
                segment.demote();
            }
            // Half-done work nobody waits for (left by every viewer, or the start of a segment
            // its viewer entered later) waits as warming, within a bound; past it, it is
            // dropped from the queue (a viewer who needs it asks again, which requeues it).
            let deferred = segment.priority() == Priority::Warm && segment.filled() > 0;
            if deferred && self.demoted_waiting() >= MAX_DEMOTED {
                continue;
            }
            self.requeue(&segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::layout::CacheKey;
    use crate::cache::segment::Track;
    use crate::resolution::Rendition;
    use bytes::Bytes;
    use std::time::Duration;

    /// Encodes by sleeping a millisecond per frame, and records what it started and finished.
    #[derive(Default)]
    struct Recorder {
        started: Mutex<Vec<u64>>,
        finished: Mutex<Vec<u64>>,
    }

    impl Encode for Recorder {
        fn encode(
            &self,
            segment: &Arc<Segment>,
            _reader: &mut Option<SourceReader>,
            should_stop: &dyn Fn() -> bool,
        ) -> bool {
            self.started.lock().unwrap().push(segment.number);
            while let Some(slot) = segment.next_missing() {
                if should_stop() {
                    segment.set_phase(Phase::Waiting);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
                segment.put(slot, Bytes::from_static(b"frame"));
            }
            segment.complete();
            self.finished.lock().unwrap().push(segment.number);
            false
        }
    }

    fn track() -> Arc<Track> {
        Arc::new(Track {
            key: CacheKey {
                video: "v".into(),
                rendition: Rendition::P240,
                source_tag: "t".into(),
                encoding: crate::encoder::Encoding::Jpeg { quality: 80 },
                frames_per_segment: 40,
            },
            source: "/nonexistent".into(),
            frame_count: 4000,
            fps: 30.0,
        })
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_waiting_viewer_goes_before_warming_which_yields_between_frames() {
        let recorder = Arc::new(Recorder::default());
        let pool = Pool::start(1, Arc::downgrade(&recorder));
        let track = track();
        for n in 0..3 {
            let warm = Segment::new(track.clone(), n, Phase::Waiting);
            pool.request(&warm, Priority::Warm, true);
        }
        wait_until("warming started", || {
            !recorder.started.lock().unwrap().is_empty()
        });
        let now = Segment::new(track.clone(), 50, Phase::Waiting);
        pool.request(&now, Priority::Now, true);
        wait_until("all done", || recorder.finished.lock().unwrap().len() == 4);
        let finished = recorder.finished.lock().unwrap().clone();
        assert_eq!(finished[0], 50, "the viewer's segment first: {finished:?}");
        let started = recorder.started.lock().unwrap().clone();
        assert_eq!(
            started.iter().filter(|n| **n == 0).count(),
            2,
            "segment 0 yielded once and resumed: {started:?}"
        );
        pool.stop();
    }

    #[test]
    fn a_viewer_without_a_head_start_goes_before_one_with_it() {
        let recorder = Arc::new(Recorder::default());
        let pool = Pool::start(1, Arc::downgrade(&recorder));
        let track = track();
        let first = Segment::new(track.clone(), 1, Phase::Waiting);
        pool.request(&first, Priority::Now, true);
        // A quarter of its 40 frames is its head start.
        wait_until("head start", || first.filled() >= 12);
        let second = Segment::new(track, 2, Phase::Waiting);
        pool.request(&second, Priority::Now, true);
        wait_until("both done", || recorder.finished.lock().unwrap().len() == 2);
        assert_eq!(*recorder.started.lock().unwrap(), [1, 2, 1]);
        assert_eq!(*recorder.finished.lock().unwrap(), [2, 1]);
        pool.stop();
    }

    #[test]
    fn a_queued_segment_every_viewer_left_is_dropped_and_a_half_encoded_one_finished_last() {
        let recorder = Arc::new(Recorder::default());
        let pool = Pool::start(1, Arc::downgrade(&recorder));
        let track = track();
        let busy = Segment::new(track.clone(), 1, Phase::Waiting);
        pool.request(&busy, Priority::Now, true);
        wait_until("busy started", || {
            !recorder.started.lock().unwrap().is_empty()
        });
        let left = Segment::new(track.clone(), 2, Phase::Waiting);
        pool.request(&left, Priority::ReadAhead, true);
        drop(left);
        let kept = Segment::new(track.clone(), 3, Phase::Waiting);
        pool.request(&kept, Priority::ReadAhead, true);
        wait_until("kept done", || {
            recorder.finished.lock().unwrap().contains(&3)
        });
        assert_eq!(*recorder.started.lock().unwrap(), [1, 3]);
        // A segment left while being encoded stops between two frames and lets the waiting
        // viewer's go first.
        let leaving = Segment::new(track.clone(), 4, Phase::Waiting);
        pool.request(&leaving, Priority::ReadAhead, true);
        wait_until("leaving started", || {
            recorder.started.lock().unwrap().contains(&4)
        });
        drop(leaving);
        let after = Segment::new(track, 5, Phase::Waiting);
        pool.request(&after, Priority::Now, true);
        // Left half-encoded, it is finished as warming once nothing else waits.
        wait_until("both done", || recorder.finished.lock().unwrap().len() == 4);
        assert_eq!(*recorder.finished.lock().unwrap(), [1, 3, 5, 4]);
        pool.stop();
    }
}
