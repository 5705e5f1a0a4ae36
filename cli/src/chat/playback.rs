//! Playbacks started from the chat (`/play`, `/stop`): each runs on its own task beside the
//! conversation and reports progress, notes and its end on one channel the chat reads.

use crate::commands::Global;
use crate::player::{PlayOptions, PlayerReport, ReportTo, Summary};
use std::collections::BTreeMap;
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a playback tells the chat.
#[derive(Debug)]
pub enum PlaybackNews {
    Report(PlayerReport),
    /// It ended: its summary line, or why it could not play.
    Ended(Result<String, String>),
}

/// The playbacks started here.
#[derive(Debug)]
pub struct Playbacks {
    next: u64,
    running: BTreeMap<u64, (String, JoinHandle<()>)>,
    tx: mpsc::UnboundedSender<(u64, PlayerReport)>,
    rx: mpsc::UnboundedReceiver<(u64, PlayerReport)>,
    ended_tx: mpsc::UnboundedSender<(u64, Result<String, String>)>,
    ended_rx: mpsc::UnboundedReceiver<(u64, Result<String, String>)>,
}

impl Default for Playbacks {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            next: 0,
            running: BTreeMap::new(),
            tx,
            rx,
            ended_tx,
            ended_rx,
        }
    }
}

/// How a finished playback reads in the chat.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "played {}: {} frames ({} decoded), {} skipped, last {} {}x{}, {:.0} kbit/s, stopped at {} / {}",
        s.video,
        s.frames_received,
        s.frames_decoded,
        s.frames_skipped,
        s.rendition,
        s.width,
        s.height,
        s.kbits_per_second,
        crate::player::clock(s.position_seconds),
        crate::player::clock(s.duration_seconds)
    )
}

impl Playbacks {
    /// Starts playing `video` (H.264, resolution picked by the service, real time), in a window
    /// when there is a display. Returns its number.
    pub fn start(&mut self, global: &Global, token: &str, video: &str) -> u64 {
        self.next += 1;
        let id = self.next;
        let (url, ca, token) = (global.stream.clone(), global.ca(), token.to_string());
        let request = PlayRequest {
            video: video.to_string(),
            resolution: Resolution::Auto as i32,
            start_seconds: 0.0,
            pacing: Pacing::Realtime as i32,
            codec: Codec::H264 as i32,
            ..Default::default()
        };
        let options = PlayOptions {
            reports: Some(ReportTo {
                playback: id,
                tx: self.tx.clone(),
            }),
            ..PlayOptions::default()
        };
        let ended = self.ended_tx.clone();
        let task = tokio::spawn(async move {
            let result = async {
                let mut client =
                    crate::stream_client::StreamClient::connect(&url, ca.as_deref(), &token)
                        .await?;
                crate::player::play(&mut client, request, &options).await
            }
            .await;
            let _ = ended.send((
                id,
                result.map(|s| summary_line(&s)).map_err(|e| e.to_string()),
            ));
        });
        self.running.insert(id, (video.to_string(), task));
        id
    }

    /// The next thing a running playback says: (its number, its video, the news). Cancel-safe.
    pub async fn next(&mut self) -> (u64, String, PlaybackNews) {
        loop {
            let (id, news) = tokio::select! {
                Some((id, report)) = self.rx.recv() => (id, PlaybackNews::Report(report)),
                Some((id, result)) = self.ended_rx.recv() => (id, PlaybackNews::Ended(result)),
            };
            let video = match &news {
                PlaybackNews::Ended(_) => self.running.remove(&id).map(|(v, _)| v),
                PlaybackNews::Report(_) => self.running.get(&id).map(|(v, _)| v.clone()),
            };
            // A report queued by a playback stopped since is dropped.
            if let Some(video) = video {
                return (id, video, news);
            }
        }
    }

    /// Stops every playback; returns the videos stopped.
    pub fn stop_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.running)
            .into_values()
            .map(|(video, task)| {
                task.abort();
                video
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        self.running.len()
    }
}
