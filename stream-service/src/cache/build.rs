//! Encoding a segment on an encoder thread, one run at a time (a frame for JPEG, a group of
//! pictures from a keyframe for H.264): frames published to viewers one by one as they are
//! encoded, then the complete segment written under a temporary name and renamed, so a killed
//! build never leaves a half segment with a segment's name.

use super::pool::Encode;
use super::segment::{Phase, Priority, Segment};
use super::{FrameCache, segment_file};
use crate::Error;
use crate::encoder::RunEncoder;
use crate::media::SourceReader;
use bytes::Bytes;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers temporary files so concurrent writers never share one.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// What became of an encoding run.
enum Run {
    /// Every frame there (or the source ended).
    Complete,
    /// Stopped between two frames for more urgent work.
    Yielded,
}

impl FrameCache {
    fn encode_frames(
        &self,
        segment: &Segment,
        reader: &mut Option<SourceReader>,
        should_stop: &dyn Fn() -> bool,
    ) -> Result<Run, Error> {
        let track = &segment.track;
        let started = std::time::Instant::now();
        let reader = match reader {
            Some(r) if r.reads(&track.source, &track.key.source_tag) => r,
            _ => reader.insert(SourceReader::open(&track.source, &track.key.source_tag)?),
        };
        let run_length = track.run_length();
        let mut encoder = RunEncoder::start(track.key.encoding, track.fps)?;
        let from = segment.filled();
        let mut first_frame_ms = None;
        let mut run = Run::Complete;
        'runs: while let Some(missing) = segment.next_missing() {
            if should_stop() {
                run = Run::Yielded;
                break;
            }
            // Runs are coded whole from their keyframe (the encoder never stops inside one).
            let start = missing - missing % run_length;
            // The viewer's frames are done; the start of the segment it skipped can wait until
            // nothing else does (a viewer who needs it asks again).
            if segment.is_backfill(start) && segment.priority() > Priority::Warm {
                segment.demote();
                run = Run::Yielded;
                break;
            }
            // A no-op when the reader is already there (the next run).
            reader.seek(segment.first_frame() + start as u64)?;
            encoder.restart();
            for slot in start..start + run_length {
                if slot >= segment.expected_frames() as usize {
                    break;
                }
                match reader.next_frame()? {
                    Some(frame) => segment.put(slot, Bytes::from(encoder.encode(frame)?)),
                    None => {
                        segment.end_at(slot);
                        continue 'runs;
                    }
                }
                first_frame_ms.get_or_insert(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        tracing::debug!(video = %track.key.video, rendition = track.key.rendition.label(),
            segment = segment.number, priority = ?segment.priority(), from, to = segment.filled(),
            since_asked_ms = segment.asked.elapsed().as_secs_f64() * 1e3, first_frame_ms,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            yielded = matches!(run, Run::Yielded), "encoded");
        Ok(run)
    }

    /// Writes a complete segment to disk (blocking); returns the bytes written.
    fn write(&self, segment: &Segment, frames: &[Bytes]) -> Result<u64, Error> {
        let key = &segment.track.key;
        let dir = key.dir(&self.root);
        let path = key.segment_path(&self.root, segment.number);
        let tmp = dir.join(format!(
            ".{}.seg.{}.{}.tmp",
            segment.number,
            std::process::id(),
            TEMPORARY.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: &str, p: &Path| {
            let text = format!("{what} {}", p.display());
            move |e: std::io::Error| Error::Cache(format!("{text}: {e}"))
        };
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let header = segment_file::header(segment.first_frame(), frames, |n| {
            key.encoding.is_keyframe(n)
        });
        let written = (|| {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            file.write_all(&header)?;
            for frame in frames {
                file.write_all(frame)?;
            }
            file.into_inner().map_err(|e| e.into_error())?;
            // No fsync: every load verifies the whole file, so one torn by a power cut is
            // rebuilt, not served.
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("writing", &path)(e));
        }
        Ok(header.len() as u64 + frames.iter().map(|f| f.len() as u64).sum::<u64>())
    }

    /// Keeps a complete segment: on disk, counted, older versions and the excess evicted.
    fn keep(&self, segment: &Segment) {
        let Some(frames) = segment.frames() else {
            return; // not every slot is there: nothing to keep
        };
        if frames.is_empty() {
            return; // past the end of a source shorter than probed
        }
        match self.write(segment, &frames) {
            Ok(bytes) => {
                let key = &segment.track.key;
                lock(&self.disk).add(key.segment_path(&self.root, segment.number), bytes);
                self.remove_stale_versions(key);
                self.evict();
            }
            // Still served from memory to whoever holds it; encoded again later if needed.
            Err(e) => tracing::warn!(error = %e, "cannot keep a segment on disk"),
        }
    }
}

use super::lock;

impl Encode for FrameCache {
    fn encode(
        &self,
        segment: &Arc<Segment>,
        reader: &mut Option<SourceReader>,
        should_stop: &dyn Fn() -> bool,
    ) -> bool {
        match self.encode_frames(segment, reader, should_stop) {
            Ok(Run::Yielded) => {
                segment.set_phase(Phase::Waiting);
                true
            }
            Ok(Run::Complete) => {
                segment.complete();
                self.encoded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("svs_stream_segments_encoded_total").increment(1);
                self.keep(segment);
                if segment.priority() == Priority::Warm {
                    self.warmed();
                }
                false
            }
            Err(e) => {
                // A decoder that failed once is not trusted again.
                *reader = None;
                tracing::warn!(video = %segment.track.key.video, rendition = segment.track.key.rendition.label(),
                    segment = segment.number, error = %e, "encoding a segment failed");
                segment.fail(e.to_string());
                self.forget(segment);
                false
            }
        }
    }
}
