//! The stream service API as the client uses it: list videos, start a playback, control it.

use crate::error::CliError;
use crate::session::Bearer;
use std::path::Path;
use svs_common::proto::stream::stream_client::StreamClient as Raw;
use svs_common::proto::stream::*;
use tonic::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An authenticated connection to stream-service.
#[derive(Clone)]
pub struct StreamClient {
    api: Raw<InterceptedService<Channel, Bearer>>,
    /// Where and how it connected, to connect again after a lost connection.
    url: String,
    ca: Option<std::path::PathBuf>,
    token: String,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient").finish_non_exhaustive()
    }
}

/// A started playback: its header and the rest of the stream.
pub struct Playing {
    pub header: PlayHeader,
    pub stream: Streaming<PlayResponse>,
}

impl std::fmt::Debug for Playing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playing").finish_non_exhaustive()
    }
}

impl StreamClient {
    pub async fn connect(url: &str, ca: Option<&Path>, token: &str) -> Result<Self, CliError> {
        let channel = svs_common::client::connect(url, ca).await?;
        let api = Raw::with_interceptor(channel, Bearer::new(token)?)
            .max_decoding_message_size(svs_common::client::CLIENT_MAX_DECODE);
        Ok(Self {
            api,
            url: url.to_string(),
            ca: ca.map(Path::to_path_buf),
            token: token.to_string(),
        })
    }

    /// A fresh connection to the same service with the same token.
    pub async fn reconnect(&self) -> Result<Self, CliError> {
        Self::connect(&self.url, self.ca.as_deref(), &self.token).await
    }

    pub async fn list_videos(&mut self) -> Result<Vec<Video>, CliError> {
        Ok(self
            .api
            .list_videos(ListVideosRequest {})
            .await
            .map_err(CliError::stream)?
            .into_inner()
            .videos)
    }

    /// Starts a playback and reads its header.
    pub async fn play(&mut self, request: PlayRequest) -> Result<Playing, CliError> {
        let mut stream = self
            .api
            .play(request)
            .await
            .map_err(CliError::stream)?
            .into_inner();
        match stream.message().await.map_err(CliError::stream)? {
            Some(PlayResponse {
                kind: Some(play_response::Kind::Header(header)),
            }) => Ok(Playing { header, stream }),
            _ => Err(CliError::StreamRefused("it sent no playback header".into())),
        }
    }

    pub async fn control(
        &mut self,
        playback_id: &str,
        action: control_request::Action,
    ) -> Result<(), CliError> {
        self.api
            .control(ControlRequest {
                playback_id: playback_id.to_string(),
                action: Some(action),
            })
            .await
            .map_err(CliError::stream)?;
        Ok(())
    }
}

/// Parses `240p`, `720p`, `1440p` or `auto`.
pub fn parse_resolution(text: &str) -> Result<Resolution, String> {
    match text.to_ascii_lowercase().as_str() {
        "240p" | "240" => Ok(Resolution::Resolution240p),
        "720p" | "720" => Ok(Resolution::Resolution720p),
        "1440p" | "1440" => Ok(Resolution::Resolution1440p),
        "auto" => Ok(Resolution::Auto),
        other => Err(format!(
            "{other:?} is not a resolution; use 240p, 720p, 1440p or auto"
        )),
    }
}

pub fn parse_codec(text: &str) -> Result<Codec, String> {
    match text.to_ascii_lowercase().as_str() {
        "h264" | "h.264" => Ok(Codec::H264),
        "jpeg" | "jpg" => Ok(Codec::Jpeg),
        other => Err(format!("{other:?} is not a codec; use h264 or jpeg")),
    }
}

/// `h264` or `jpeg` (what the service serves a request that names none).
pub fn codec_label(value: i32) -> &'static str {
    match Codec::try_from(value) {
        Ok(Codec::H264) => "h264",
        _ => "jpeg",
    }
}

/// `240p`, `720p`, `1440p`, `auto`.
pub fn resolution_label(value: i32) -> &'static str {
    match Resolution::try_from(value) {
        Ok(Resolution::Resolution240p) => "240p",
        Ok(Resolution::Resolution720p) => "720p",
        Ok(Resolution::Resolution1440p) => "1440p",
        _ => "auto",
    }
}

/// Parses a position in a video: seconds (`90`, `12.5`), `mm:ss` or `hh:mm:ss` (seconds may have
/// a fraction; minutes and seconds after a colon are below 60).
pub fn parse_position(text: &str) -> Result<f64, String> {
    let bad = || {
        format!("{text:?} is not a position; use seconds (90), mm:ss (1:30) or hh:mm:ss (1:02:03)")
    };
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let (last, whole) = parts.split_last().ok_or_else(bad)?;
    let seconds: f64 = last.parse().map_err(|_| bad())?;
    if !seconds.is_finite() || seconds < 0.0 || (!whole.is_empty() && seconds >= 60.0) {
        return Err(bad());
    }
    let mut total = 0.0;
    for (n, part) in whole.iter().enumerate() {
        let value: u64 = part.parse().map_err(|_| bad())?;
        // Minutes after hours must be below 60; the leading field may be any size.
        if n > 0 && value >= 60 {
            return Err(bad());
        }
        total = total * 60.0 + value as f64;
    }
    Ok(total * 60.0 + seconds)
}

#[cfg(test)]
mod tests {
    use super::parse_position;

    #[test]
    fn positions_in_seconds_minutes_and_hours() {
        assert_eq!(parse_position("90"), Ok(90.0));
        assert_eq!(parse_position("12.5"), Ok(12.5));
        assert_eq!(parse_position("1:30"), Ok(90.0));
        assert_eq!(parse_position("01:02:03"), Ok(3723.0));
        assert_eq!(parse_position("1:02:03.5"), Ok(3723.5));
        assert_eq!(parse_position("75:00"), Ok(4500.0));
        for bad in [
            "", "-1", "1:60", "1:61:00", "a:10", "1::2", "1:2:3:4", "nan", "inf", "1:",
        ] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }
}
