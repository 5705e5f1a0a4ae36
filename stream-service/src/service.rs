//! The gRPC face of the stream service: validates requests against the library, enforces stream
//! limits with permits held for the life of each playback, and routes Control to its playback.

use crate::Error;
use crate::audio::{self, SoundCache};
use crate::cache::FrameCache;
use crate::config::Limits;
use crate::error::Refusal;
use crate::library::{Library, Video};
use crate::playback::{Action, Playback, PlaybackStart, VIEWER_QUEUE};
use crate::resolution::Rendition;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use svs_common::proto::stream::stream_server::Stream as StreamApi;
use svs_common::proto::stream::*;
use svs_common::token::Claims;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

struct Running {
    owner: String,
    control: mpsc::Sender<Action>,
    video: Video,
}

/// State shared by all calls.
pub struct Shared {
    pub library: Arc<Library>,
    pub cache: Arc<FrameCache>,
    /// Encoded sound, in memory.
    pub(crate) sound: Arc<SoundCache>,
    limits: Limits,
    running: Mutex<HashMap<String, Running>>,
    total: Arc<Semaphore>,
    per_session: Mutex<HashMap<String, Arc<Semaphore>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        library: Arc<Library>,
        cache: Arc<FrameCache>,
        limits: Limits,
        stop: CancellationToken,
    ) -> Self {
        Self {
            library,
            cache,
            sound: SoundCache::new(
                limits.audio_bitrate,
                limits.sound_cache_max_bytes,
                limits.encoders(),
            ),
            total: Arc::new(Semaphore::new(limits.max_streams)),
            limits,
            running: Mutex::new(HashMap::new()),
            per_session: Mutex::new(HashMap::new()),
            stop,
        }
    }
}

impl Shared {
    /// Sessions with a playback-limit entry now (only sessions that are playing keep one).
    pub fn sessions_tracked(&self) -> usize {
        self.per_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Implements `svs.stream.v1.Stream`.
#[derive(Debug)]
pub(crate) struct StreamService {
    shared: Arc<Shared>,
}

impl StreamService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn caller<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Claims>()
        .map(|c| svs_common::names::canonical(&c.name))
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))
}

/// Removes a playback from the registry when its task ends.
/// Removes a playback from the registry when its task ends, and its session's limit entry once
/// that session has no playback left (so the map holds only sessions that are playing).
struct Unregister {
    shared: Arc<Shared>,
    id: String,
    owner: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        metrics::gauge!("svs_stream_playbacks").decrement(1.0);
        self.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let max = self.shared.limits.max_streams_per_session;
        let mut per_session = self
            .shared
            .per_session
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if per_session
            .get(&self.owner)
            .is_some_and(|s| s.available_permits() >= max)
        {
            per_session.remove(&self.owner);
        }
    }
}

fn missing_rendition(name: &str, wanted: Rendition, video: &Video) -> Error {
    Refusal::NotFound(format!(
        "{name} has no {} rendition; available: {}",
        wanted.label(),
        video.available()
    ))
    .into()
}

/// Names suggested when a requested video does not exist.
const SUGGESTIONS: usize = 10;

/// NOT_FOUND for an unknown video: the closest names and how many there are, never the whole
/// library (a trailer has to stay small), and the request's name cut short.
fn unknown_video(library: &Library, wanted: &str) -> Error {
    let shown: String = wanted.chars().take(64).collect();
    let (closest, total) = library.closest(wanted, SUGGESTIONS);
    let available = match total {
        0 => "the library is empty (run `stream-service make-demo`)".to_string(),
        n if n <= closest.len() => format!("available: {}", closest.join(", ")),
        n => format!("closest of {n}: {}", closest.join(", ")),
    };
    Refusal::NotFound(format!("no video named {shown:?}; {available}")).into()
}

/// AUTO starts at 720p when present, else the nearest lower, else the lowest there is.
fn auto_start(video: &Video) -> Rendition {
    [Rendition::P720, Rendition::P240, Rendition::P1440]
        .into_iter()
        .find(|r| video.renditions.contains_key(r))
        .expect("a listed video has at least one rendition")
}

impl StreamService {
    fn start(
        &self,
        owner: String,
        request: PlayRequest,
    ) -> Result<ReceiverStream<Result<PlayResponse, Status>>, Error> {
        let shared = &self.shared;
        let video = shared
            .library
            .get(&request.video)
            .ok_or_else(|| unknown_video(&shared.library, &request.video))?;
        let requested = Resolution::try_from(request.resolution).map_err(|_| {
            Refusal::InvalidArgument(format!("unknown resolution value {}", request.resolution))
        })?;
        let (rendition, adaptive) = match Rendition::from_wire(requested) {
            Some(r) if video.renditions.contains_key(&r) => (r, false),
            Some(r) => return Err(missing_rendition(&request.video, r, &video)),
            None => (auto_start(&video), true),
        };
        let probe = video.renditions[&rendition].probe;
        let duration = probe.frame_count as f64 / probe.fps;
        if !request.start_seconds.is_finite() || request.start_seconds < 0.0 {
            return Err(
                Refusal::InvalidArgument("start_seconds must be a number >= 0".into()).into(),
            );
        }
        if request.start_seconds >= duration {
            return Err(Refusal::OutOfRange(format!(
                "start at {:.2} s is past the end of {} ({duration:.2} s)",
                request.start_seconds, request.video
            ))
            .into());
        }
        let pacing = Pacing::try_from(request.pacing).unwrap_or(Pacing::Realtime);
        let sound = match AudioCodec::try_from(request.audio) {
            Ok(AudioCodec::Unspecified) => None,
            Ok(AudioCodec::Opus) => video.audio.clone().map(|track| {
                audio::Cursor::new(track, shared.sound.clone(), request.start_seconds, duration)
            }),
            Err(_) => {
                return Err(Refusal::InvalidArgument(format!(
                    "unknown audio value {}; 0 is none, 1 is Opus",
                    request.audio
                ))
                .into());
            }
        };
        let codec = match Codec::try_from(request.codec) {
            Ok(Codec::Unspecified | Codec::Jpeg) => crate::encoder::Codec::Jpeg,
            Ok(Codec::H264) => crate::encoder::Codec::H264,
            Err(_) => {
                return Err(Refusal::InvalidArgument(format!(
                    "unknown codec value {}; 1 is JPEG, 2 is H.264",
                    request.codec
                ))
                .into());
            }
        };

        let total = shared
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::RetryLater {
                message: format!(
                    "the stream service is at its limit of {} playbacks; try again later",
                    shared.limits.max_streams
                ),
                after: std::time::Duration::from_secs(5),
            })?;
        // Acquired under the map's lock, so pruning an entry (`Unregister`) never races this.
        let per_session = shared
            .per_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(owner.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(shared.limits.max_streams_per_session)))
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Refusal::ResourceExhausted(format!(
                    "you already have {} playbacks open (the per-session limit)",
                    shared.limits.max_streams_per_session
                ))
            })?;

        let id = hex::encode(svs_common::identity::random::<16>()?);
        let owner_name = owner.clone();
        // Sound gets a slot of its own, so a sound message never takes a frame's.
        let (sink, frames) = mpsc::channel(VIEWER_QUEUE + usize::from(sound.is_some()));
        let (control, actions) = mpsc::channel(16);
        shared.running.lock().expect("running lock").insert(
            id.clone(),
            Running {
                owner,
                control,
                video: video.clone(),
            },
        );
        let start = PlaybackStart {
            id: id.clone(),
            video_name: request.video,
            start_index: (request.start_seconds * probe.fps) as u64,
            video,
            rendition,
            adaptive,
            pacing,
            codec,
            sound,
        };
        let source = start.video.renditions[&rendition].clone();
        let cache = shared.cache.clone();
        metrics::gauge!("svs_stream_playbacks").increment(1.0);
        metrics::counter!("svs_stream_playbacks_total").increment(1);
        let guard = Unregister {
            shared: shared.clone(),
            id,
            owner: owner_name,
        };
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            // The permits live exactly as long as the playback (dropped in this order, so the
            // session's permit is back before `Unregister` looks at it).
            let _permits = (total, per_session, guard);
            let playback = Playback::new(start, cache, &source);
            playback.run(sink, actions, stop).await;
        });
        Ok(ReceiverStream::new(frames))
    }

    fn control(&self, owner: &str, request: ControlRequest) -> Result<(), Error> {
        let running = self.shared.running.lock().expect("running lock");
        let playback = running.get(&request.playback_id).ok_or_else(|| {
            Refusal::NotFound(format!(
                "no running playback with id {:?}",
                request.playback_id
            ))
        })?;
        if playback.owner != owner {
            return Err(Refusal::PermissionDenied(
                "this playback belongs to another session".into(),
            )
            .into());
        }
        let action = match request.action {
            Some(control_request::Action::SwitchTo(value)) => {
                let wanted = Resolution::try_from(value).map_err(|_| {
                    Refusal::InvalidArgument(format!("unknown resolution value {value}"))
                })?;
                match Rendition::from_wire(wanted) {
                    Some(r) if playback.video.renditions.contains_key(&r) => {
                        Action::Switch(Some(r))
                    }
                    Some(r) => {
                        return Err(Refusal::NotFound(format!(
                            "this video has no {} rendition; available: {}",
                            r.label(),
                            playback.video.available()
                        ))
                        .into());
                    }
                    None => Action::Switch(None),
                }
            }
            Some(control_request::Action::Pause(_)) => Action::Pause,
            Some(control_request::Action::Resume(_)) => Action::Resume,
            Some(control_request::Action::SeekSeconds(s)) if s.is_finite() && s >= 0.0 => {
                Action::Seek(s)
            }
            Some(control_request::Action::SeekSeconds(_)) => {
                return Err(
                    Refusal::InvalidArgument("seek_seconds must be a number >= 0".into()).into(),
                );
            }
            None => {
                return Err(Refusal::InvalidArgument("the request names no action".into()).into());
            }
        };
        playback.control.try_send(action).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refusal::RetryLater {
                message: "too many control requests are waiting for this playback".into(),
                after: std::time::Duration::from_millis(100),
            },
            mpsc::error::TrySendError::Closed(_) => {
                Refusal::NotFound("the playback has ended".into())
            }
        })?;
        Ok(())
    }
}

type FrameStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<PlayResponse, Status>> + Send>>;

#[tonic::async_trait]
impl StreamApi for StreamService {
    async fn list_videos(
        &self,
        request: Request<ListVideosRequest>,
    ) -> Result<Response<ListVideosResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(ListVideosResponse {
            videos: self.shared.library.list(),
        }))
    }

    type PlayStream = FrameStream;

    async fn play(
        &self,
        request: Request<PlayRequest>,
    ) -> Result<Response<Self::PlayStream>, Status> {
        let owner = caller(&request)?;
        let stream = self.start(owner, request.into_inner())?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn control(
        &self,
        request: Request<ControlRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        let owner = caller(&request)?;
        StreamService::control(self, &owner, request.into_inner())?;
        Ok(Response::new(ControlResponse {}))
    }
}
