//! One running playback: sends frames on the video's clock with at most two queued per viewer,
//! skips frames when the viewer cannot keep up, adapts the rendition in AUTO, and applies
//! control actions (switch, pause, resume, seek) between frames.

use crate::cache::{FrameCache, Reader};
use crate::library::Source;
use crate::library::Video;
use crate::resolution::Rendition;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::stream::{
    Frame, Notice, Pacing, PlayHeader, PlayResponse, Switched, notice, play_response,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Frames queued per viewer beyond what HTTP/2 holds; a full queue means "skip".
pub const VIEWER_QUEUE: usize = 2;
/// Recent frame attempts AUTO looks at.
const WINDOW: usize = 30;
/// AUTO steps down when at least this share of recent attempts were skipped.
const STEP_DOWN_SKIP_SHARE: f64 = 0.10;
/// AUTO steps up only after this long without a skip.
const STEP_UP_AFTER: Duration = Duration::from_secs(5);
/// Least time between two AUTO switches.
const MIN_SWITCH_GAP: Duration = Duration::from_secs(1);

/// What Control can ask of a running playback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// A fixed rendition, or `None` for AUTO.
    Switch(Option<Rendition>),
    Pause,
    Resume,
    Seek(f64),
}

/// Where a new playback starts.
pub struct PlaybackStart {
    pub id: String,
    pub video_name: String,
    pub video: Video,
    pub rendition: Rendition,
    pub adaptive: bool,
    pub start_index: u64,
    pub pacing: Pacing,
}

type Sink = mpsc::Sender<Result<PlayResponse, Status>>;

pub struct Playback {
    start: PlaybackStart,
    cache: Arc<FrameCache>,
    current: Rendition,
    frames: Reader,
    next_index: u64,
    clock_start: Instant,
    clock_index: u64,
    paused: bool,
    skipped_total: u64,
    pending_skips: u32,
    window: VecDeque<bool>,
    last_switch: Instant,
    last_skip: Instant,
}

fn response(kind: play_response::Kind) -> PlayResponse {
    PlayResponse { kind: Some(kind) }
}

impl Playback {
    pub fn new(start: PlaybackStart, cache: Arc<FrameCache>, source: &Source) -> Self {
        let frames = cache.reader(&start.video_name, start.rendition, source);
        let now = Instant::now();
        Self {
            current: start.rendition,
            next_index: start.start_index,
            clock_index: start.start_index,
            start,
            cache,
            frames,
            clock_start: now,
            paused: false,
            skipped_total: 0,
            pending_skips: 0,
            window: VecDeque::with_capacity(WINDOW),
            last_switch: now,
            last_skip: now,
        }
    }

    fn fps(&self) -> f64 {
        self.frames.probe.fps
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps())
    }

    fn due(&self, index: u64) -> Instant {
        self.clock_start
            + Duration::from_secs_f64(index.saturating_sub(self.clock_index) as f64 / self.fps())
    }

    fn restart_clock(&mut self) {
        self.clock_start = Instant::now();
        self.clock_index = self.next_index;
        self.window.clear();
    }

    fn record(&mut self, skipped: bool) {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(skipped);
        if skipped {
            self.last_skip = Instant::now();
        }
    }

    fn sent(&self) {
        metrics::counter!("svs_stream_frames_sent_total", "rendition" => self.current.label())
            .increment(1);
    }

    fn skip(&mut self, frames: u64) {
        metrics::counter!("svs_stream_frames_skipped_total").increment(frames);
        self.next_index += frames;
        self.skipped_total += frames;
        self.pending_skips = self.pending_skips.saturating_add(frames as u32);
        self.record(true);
    }

    /// Runs until the video ends, the viewer leaves, or `stop` fires.
    pub async fn run(
        mut self,
        sink: Sink,
        mut control: mpsc::Receiver<Action>,
        stop: CancellationToken,
    ) {
        let probe = self.frames.probe;
        let header = PlayHeader {
            playback_id: self.start.id.clone(),
            resolution: self.current.wire() as i32,
            width: probe.width,
            height: probe.height,
            fps: probe.fps,
            frame_count: self.frames.frame_count(),
            adaptive: self.start.adaptive,
        };
        if sink
            .send(Ok(response(play_response::Kind::Header(header))))
            .await
            .is_err()
        {
            return;
        }
        let realtime = self.start.pacing == Pacing::Realtime;
        self.restart_clock();
        loop {
            if !self.paused && self.next_index >= self.frames.frame_count() {
                break;
            }
            let due = self.due(self.next_index);
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    let _ = sink.send(Err(Status::unavailable("the stream service is shutting down"))).await;
                    return;
                }
                _ = sink.closed() => return,
                action = control.recv() => {
                    match action {
                        Some(action) => if !self.apply(action, &sink).await { return },
                        None => return,
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(due), if realtime && !self.paused => {}
                _ = std::future::ready(()), if !realtime && !self.paused => {}
            }
            if realtime {
                // Behind the clock by more than a frame (e.g. the viewer was slow): jump to the
                // frame that is due now instead of drifting.
                let late = Instant::now().saturating_duration_since(due);
                let behind = (late.as_secs_f64() / self.interval().as_secs_f64()) as u64;
                if behind >= 1 {
                    self.skip(behind);
                    continue;
                }
            }
            let index = self.next_index;
            let asked = Instant::now();
            let jpeg = match self.frames.frame(index).await {
                Ok(Some(jpeg)) => jpeg,
                Ok(None) => break,
                Err(e) => {
                    let _ = sink
                        .send(Err(Status::internal(format!("cannot read frames: {e}"))))
                        .await;
                    return;
                }
            };
            // Waiting for our own encoder (a cold rendition) is not the viewer falling behind:
            // restart the clock here rather than skip what was late because of it.
            if realtime && asked.elapsed() > self.interval() {
                self.restart_clock();
            }
            let probe = self.frames.probe;
            let frame = Frame {
                index,
                pts_seconds: index as f64 / probe.fps,
                resolution: self.current.wire() as i32,
                width: probe.width,
                height: probe.height,
                jpeg,
                skipped_before: self.pending_skips,
                skipped_total: self.skipped_total,
            };
            let message = Ok(response(play_response::Kind::Frame(frame)));
            if realtime {
                match sink.try_send(message) {
                    Ok(()) => {
                        self.sent();
                        self.pending_skips = 0;
                        self.next_index += 1;
                        self.record(false);
                    }
                    // The viewer (or its connection) is not keeping up: drop this frame.
                    Err(mpsc::error::TrySendError::Full(_)) => self.skip(1),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            } else {
                if sink.send(message).await.is_err() {
                    return;
                }
                self.sent();
                self.next_index += 1;
            }
            if self.start.adaptive && !self.adapt(&sink).await {
                return;
            }
        }
    }

    /// AUTO: down a step when too many recent frames were skipped, up a step after sustained
    /// headroom. Returns false if the viewer is gone.
    async fn adapt(&mut self, sink: &Sink) -> bool {
        if self.last_switch.elapsed() < MIN_SWITCH_GAP {
            return true;
        }
        let skips = self.window.iter().filter(|s| **s).count();
        let available =
            |r: Option<Rendition>| r.filter(|r| self.start.video.renditions.contains_key(r));
        let target = if self.window.len() >= 10
            && skips as f64 >= STEP_DOWN_SKIP_SHARE * self.window.len() as f64
        {
            available(self.current.lower()).map(|r| (r, "the viewer is falling behind"))
        } else if self.last_skip.elapsed() >= STEP_UP_AFTER
            && self.last_switch.elapsed() >= STEP_UP_AFTER
        {
            available(self.current.higher()).map(|r| (r, "sustained headroom"))
        } else {
            None
        };
        match target {
            Some((to, reason)) => self.switch(to, reason, sink).await,
            None => true,
        }
    }

    async fn switch(&mut self, to: Rendition, reason: &str, sink: &Sink) -> bool {
        if to == self.current {
            return true;
        }
        let from = self.current;
        let old_fps = self.fps();
        let Some(source) = self.start.video.renditions.get(&to) else {
            return true;
        };
        self.frames = self.cache.reader(&self.start.video_name, to, source);
        self.current = to;
        // Same instant in the new rendition (renditions normally share the frame rate).
        let pts = self.next_index as f64 / old_fps;
        self.next_index = (pts * self.fps()).round() as u64;
        self.restart_clock();
        self.last_switch = Instant::now();
        self.last_skip = Instant::now();
        let notice = Notice {
            kind: Some(notice::Kind::Switched(Switched {
                from: from.wire() as i32,
                to: to.wire() as i32,
                reason: reason.to_string(),
            })),
        };
        sink.send(Ok(response(play_response::Kind::Notice(notice))))
            .await
            .is_ok()
    }

    async fn state_notice(&self, state: String, sink: &Sink) -> bool {
        let notice = Notice {
            kind: Some(notice::Kind::State(state)),
        };
        sink.send(Ok(response(play_response::Kind::Notice(notice))))
            .await
            .is_ok()
    }

    /// Applies a control action. Returns false if the viewer is gone.
    async fn apply(&mut self, action: Action, sink: &Sink) -> bool {
        match action {
            Action::Switch(Some(to)) => {
                self.start.adaptive = false;
                self.switch(to, "requested", sink).await
            }
            Action::Switch(None) => {
                self.start.adaptive = true;
                self.state_notice("adaptive".into(), sink).await
            }
            Action::Pause => {
                self.paused = true;
                self.state_notice("paused".into(), sink).await
            }
            Action::Resume => {
                self.paused = false;
                self.restart_clock();
                self.state_notice("resumed".into(), sink).await
            }
            Action::Seek(seconds) => {
                let last = self.frames.frame_count().saturating_sub(1);
                self.next_index = ((seconds.max(0.0) * self.fps()) as u64).min(last);
                self.restart_clock();
                let index = self.next_index;
                self.state_notice(format!("seeked to frame {index}"), sink)
                    .await
            }
        }
    }
}
