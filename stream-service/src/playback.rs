//! One running playback: sends frames on the video's clock with at most two queued per viewer,
//! skips frames when the viewer cannot keep up, adapts the rendition in AUTO, and applies
//! control actions (switch, pause, resume, seek) between frames. In H.264 it bridges from a
//! switch, seek or start between keyframes to the next keyframe with JPEG frames of the same
//! rendition, and a viewer that falls behind skips to the next keyframe. Sound, when asked for,
//! goes out ahead of the frames (`AUDIO_LEAD`) and is never skipped.

use crate::audio;
use crate::cache::{FrameCache, Reader};
use crate::encoder::Codec;
use crate::library::Source;
use crate::library::Video;
use crate::resolution::Rendition;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::stream::{
    Frame, Notice, Pacing, PlayHeader, PlayResponse, Switched, frame, notice, play_response,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Frames queued per viewer beyond what HTTP/2 holds; a full queue means "skip".
pub(crate) const VIEWER_QUEUE: usize = 2;
/// Recent frame attempts AUTO looks at.
const WINDOW: usize = 30;
/// AUTO steps down when at least this share of recent attempts were skipped.
const STEP_DOWN_SKIP_SHARE: f64 = 0.10;
/// AUTO steps up only after this long without a skip.
const STEP_UP_AFTER: Duration = Duration::from_secs(5);
/// Least time between two AUTO switches.
const MIN_SWITCH_GAP: Duration = Duration::from_secs(1);
/// Seconds of sound sent ahead of the frame going out: what a player buffers against jitter.
pub(crate) const AUDIO_LEAD: f64 = 0.3;
/// More sound goes out once less than this is ahead (so one message carries about 100 ms).
const AUDIO_REFILL: f64 = 0.2;
/// With sound flowing, frames at most this late go out at once (the viewer shows them as soon
/// as they come and catches up with the sound); later ones are skipped.
const SOUND_CATCH_UP: Duration = Duration::from_millis(500);

/// What Control can ask of a running playback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    /// A fixed rendition, or `None` for AUTO.
    Switch(Option<Rendition>),
    Pause,
    Resume,
    Seek(f64),
}

/// Where a new playback starts.
#[derive(Debug)]
pub(crate) struct PlaybackStart {
    pub id: String,
    pub video_name: String,
    pub video: Video,
    pub rendition: Rendition,
    pub adaptive: bool,
    pub start_index: u64,
    pub pacing: Pacing,
    pub codec: Codec,
    /// The sound to send, if asked for and the video has some.
    pub sound: Option<audio::Cursor>,
}

type Sink = mpsc::Sender<Result<PlayResponse, Status>>;

#[derive(Debug)]
pub(crate) struct Playback {
    start: PlaybackStart,
    cache: Arc<FrameCache>,
    current: Rendition,
    /// The current rendition in the playback's codec, read ahead.
    frames: Reader,
    /// H.264 only: JPEG frames of the current rendition up to the next keyframe, while the
    /// viewer has no keyframe to decode from (made when needed, never read ahead).
    bridge: Option<Reader>,
    /// H.264 only: the frame sent last was the H.264 frame just before `next_index`, so the
    /// next one decodes without a keyframe.
    continuous: bool,
    next_index: u64,
    clock_start: Instant,
    clock_index: u64,
    paused: bool,
    skipped_total: u64,
    pending_skips: u32,
    window: VecDeque<bool>,
    last_switch: Instant,
    last_skip: Instant,
    sound: Option<audio::Cursor>,
    /// Sound of the current run (since the start or the last seek) has gone out: the viewer's
    /// clock is running.
    sound_running: bool,
}

fn response(kind: play_response::Kind) -> PlayResponse {
    PlayResponse { kind: Some(kind) }
}

impl Playback {
    pub(crate) fn new(mut start: PlaybackStart, cache: Arc<FrameCache>, source: &Source) -> Self {
        let sound = start.sound.take();
        let frames = cache.reader(
            &start.video_name,
            start.rendition,
            start.codec,
            source,
            true,
        );
        let now = Instant::now();
        Self {
            current: start.rendition,
            bridge: None,
            continuous: false,
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
            sound,
            sound_running: false,
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

    /// Where the clock is now, in seconds of video.
    fn clock_pts(&self) -> f64 {
        self.clock_index as f64 / self.fps() + self.clock_start.elapsed().as_secs_f64()
    }

    /// When more sound is due on the clock (its lead down to `AUDIO_REFILL`), once sound of this
    /// run is flowing; `None` without sound or when all of it is out.
    fn sound_refill_at(&self) -> Option<Instant> {
        let sound = self.sound.as_ref().filter(|_| self.sound_running)?;
        if sound.finished() {
            return None;
        }
        let at_pts = sound.sent_until() - AUDIO_REFILL - self.clock_index as f64 / self.fps();
        Some(self.clock_start + Duration::from_secs_f64(at_pts.max(0.0)))
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

    /// Counts a frame that went out (`bridged`: a JPEG frame of an H.264 playback).
    fn sent(&self, bridged: bool) {
        metrics::counter!("svs_stream_frames_sent_total", "rendition" => self.current.label())
            .increment(1);
        if bridged {
            metrics::counter!("svs_stream_bridge_frames_total").increment(1);
        }
    }

    /// Skips `frames` (in H.264 on to the next keyframe: what follows a lost frame cannot be
    /// decoded without it).
    fn skip(&mut self, frames: u64) {
        let mut to = self.next_index + frames;
        if self.start.codec == Codec::H264 {
            to = self.frames.next_keyframe(to.min(self.frames.frame_count()));
            self.continuous = false;
        }
        let frames = to.saturating_sub(self.next_index);
        metrics::counter!("svs_stream_frames_skipped_total").increment(frames);
        self.next_index = to;
        self.skipped_total += frames;
        self.pending_skips = self.pending_skips.saturating_add(frames as u32);
        self.record(true);
    }

    /// Where frame `index` comes from: the playback's own reader, or in H.264 between a jump
    /// and the next keyframe the JPEG bridge. Returns the frame, whether it is JPEG, and
    /// whether it is a keyframe.
    async fn picture(
        &mut self,
        index: u64,
    ) -> Result<Option<(bytes::Bytes, bool, bool)>, crate::Error> {
        let bridged =
            self.start.codec == Codec::H264 && !self.continuous && !self.frames.is_keyframe(index);
        if !bridged {
            let keyframe = self.frames.is_keyframe(index);
            let jpeg = self.start.codec == Codec::Jpeg;
            return Ok(self.frames.frame(index).await?.map(|f| (f, jpeg, keyframe)));
        }
        let bridge = match &mut self.bridge {
            Some(bridge) => bridge,
            empty => {
                let Some(source) = self.start.video.renditions.get(&self.current) else {
                    return Ok(None);
                };
                let reader = self.cache.reader(
                    &self.start.video_name,
                    self.current,
                    Codec::Jpeg,
                    source,
                    false,
                );
                empty.insert(reader)
            }
        };
        Ok(bridge.frame(index).await?.map(|f| (f, true, true)))
    }

    /// Runs until the video ends, the viewer leaves, or `stop` fires.
    pub(crate) async fn run(
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
            codec: match self.start.codec {
                Codec::Jpeg => svs_common::proto::stream::Codec::Jpeg,
                Codec::H264 => svs_common::proto::stream::Codec::H264,
            } as i32,
            keyframe_interval: self.frames.encoding().keyframe_interval() as u32,
            audio: self.sound.as_ref().map(audio::Cursor::header),
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
                // The sound to the video's end.
                let end = self.frames.frame_count() as f64 / self.fps();
                if self.sound.is_some() && !self.send_sound(end, &sink, &stop).await {
                    return;
                }
                break;
            }
            let due = self.due(self.next_index);
            // Sound runs on the clock, not only when a frame leaves: a frame that waits (or is
            // skipped) never holds it back.
            let refill = self.sound_refill_at().filter(|_| realtime && !self.paused);
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
                _ = tokio::time::sleep_until(refill.unwrap_or(due)), if refill.is_some_and(|at| at < due) => {
                    let now = self.clock_pts();
                    if !self.send_sound(now, &sink, &stop).await {
                        return;
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
                // With sound, frames late because our own encoder was slow go out at once to
                // catch up with it, rather than be skipped.
                let catching_up = self.sound_running && late <= SOUND_CATCH_UP;
                if behind >= 1 && !catching_up {
                    self.skip(behind);
                    // Sound is never skipped with the frames.
                    let pts = self.next_index as f64 / self.fps();
                    if !self.send_sound(pts, &sink, &stop).await {
                        return;
                    }
                    continue;
                }
            }
            let index = self.next_index;
            let asked = Instant::now();
            let (picture, is_jpeg, keyframe) = match self.picture(index).await {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => {
                    let _ = sink
                        .send(Err(Status::internal(format!("cannot read frames: {e}"))))
                        .await;
                    return;
                }
            };
            // Waiting for our own encoder (a cold rendition) is not the viewer falling behind:
            // restart the clock here rather than skip what was late because of it. Once sound
            // of this run is out, its clock is the viewer's: the clock stays (or picture and
            // sound would part) and the late frames go out at once to catch up with it, or are
            // skipped past `SOUND_CATCH_UP`.
            if realtime && asked.elapsed() > self.interval() && !self.sound_running {
                self.restart_clock();
            }
            let probe = self.frames.probe;
            // The sound up to a little past this frame, sent only now that its picture is ready.
            if !self
                .send_sound(index as f64 / probe.fps, &sink, &stop)
                .await
            {
                return;
            }
            let frame = Frame {
                index,
                pts_seconds: index as f64 / probe.fps,
                resolution: self.current.wire() as i32,
                width: probe.width,
                height: probe.height,
                picture: Some(if is_jpeg {
                    frame::Picture::Jpeg(picture)
                } else {
                    frame::Picture::H264(picture)
                }),
                keyframe,
                skipped_before: self.pending_skips,
                skipped_total: self.skipped_total,
            };
            // What the viewer can decode from next, once this frame is on its way.
            let continues = !is_jpeg && self.start.codec == Codec::H264;
            let message = Ok(response(play_response::Kind::Frame(frame)));
            if realtime {
                match sink.try_send(message) {
                    Ok(()) => {
                        self.sent(is_jpeg && self.start.codec == Codec::H264);
                        self.pending_skips = 0;
                        self.next_index += 1;
                        self.record(false);
                        self.now_continuous(continues);
                    }
                    // The viewer (or its connection) is not keeping up: drop this frame.
                    Err(mpsc::error::TrySendError::Full(_)) => self.skip(1),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            } else {
                if sink.send(message).await.is_err() {
                    return;
                }
                self.sent(is_jpeg && self.start.codec == Codec::H264);
                self.next_index += 1;
                self.now_continuous(continues);
            }
            if self.start.adaptive && !self.adapt(&sink).await {
                return;
            }
        }
    }

    /// Sends the sound up to `AUDIO_LEAD` past `pts` once less than `AUDIO_REFILL` is ahead,
    /// waiting for room (sound is never dropped). A sound track that fails stops with a notice
    /// and the pictures go on. Returns false if the viewer is gone.
    async fn send_sound(&mut self, pts: f64, sink: &Sink, stop: &CancellationToken) -> bool {
        let Some(sound) = &mut self.sound else {
            return true;
        };
        if sound.sent_until() >= pts + AUDIO_REFILL {
            return true;
        }
        match sound.until(pts + AUDIO_LEAD).await {
            Ok(Some(packets)) => {
                self.sound_running = true;
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => false,
                    sent = sink.send(Ok(response(play_response::Kind::Audio(packets)))) => sent.is_ok(),
                }
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(video = %self.start.video_name, error = %svs_common::error::with_causes(&e), "the sound track failed; pictures go on without it");
                self.sound = None;
                self.state_notice(format!("sound stopped: {e}"), sink).await
            }
        }
    }

    /// After an H.264 frame went out the viewer decodes on without the bridge, which is let go
    /// (with the JPEG segment it holds).
    fn now_continuous(&mut self, continuous: bool) {
        self.continuous = continuous;
        if continuous {
            self.bridge = None;
        }
    }

    /// The viewer jumped (switch or seek): it needs a keyframe or the bridge to decode again.
    fn discontinue(&mut self) {
        self.continuous = false;
        self.bridge = None;
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
        self.frames = self
            .cache
            .reader(&self.start.video_name, to, self.start.codec, source, true);
        self.current = to;
        self.discontinue();
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
                if let Some(sound) = &mut self.sound {
                    sound.seek(self.next_index as f64 / self.frames.probe.fps);
                    self.sound_running = false;
                }
                self.discontinue();
                self.restart_clock();
                let index = self.next_index;
                self.state_notice(format!("seeked to frame {index}"), sink)
                    .await
            }
        }
    }
}
