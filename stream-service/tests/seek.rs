//! The source decoder lands on the exact frame asked for: JPEGs encoded after a seek are the
//! same bytes as those encoded reading from the start (real OpenCV, real files from make-demo).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Instant;
use stream_service::Progress;
use stream_service::Rendition;
use stream_service::media::{self, SourceReader};
use stream_service::{Encoding, RunEncoder};

/// The next source frame as a JPEG at quality 80.
fn next_jpeg(reader: &mut SourceReader) -> Result<Option<Vec<u8>>, stream_service::Error> {
    let mut jpeg = RunEncoder::start(Encoding::Jpeg { quality: 80 }, 10.0)?;
    match reader.next_frame()? {
        Some(frame) => Ok(Some(jpeg.encode(frame)?)),
        None => Ok(None),
    }
}

#[test]
fn seeking_lands_on_the_exact_frame_at_every_rendition() {
    let tmp = tempfile::tempdir().unwrap();
    for rendition in Rendition::ALL {
        media::make_demo_rendition(
            tmp.path(),
            "seek",
            rendition,
            10.0,
            10.0,
            &mut Progress::hidden(),
        )
        .unwrap();
        let path = media::rendition_path(tmp.path(), "seek", rendition);
        let mut sequential = SourceReader::open(&path, "v1").unwrap();
        let mut all = Vec::new();
        while let Some(jpeg) = next_jpeg(&mut sequential).unwrap() {
            all.push(jpeg);
        }
        assert_eq!(all.len(), 100);
        // Forwards, backwards, across keyframes, the last frame, and reading on after a seek.
        let mut reader = SourceReader::open(&path, "v1").unwrap();
        for at in [57u64, 3, 99, 0, 40, 41, 13, 88, 12] {
            let started = Instant::now();
            reader.seek(at).unwrap();
            let jpeg = next_jpeg(&mut reader).unwrap().unwrap();
            let took = started.elapsed();
            assert_eq!(media::read_frame_mark(&jpeg), Some(at));
            assert!(
                jpeg == all[at as usize],
                "{} frame {at} after a seek",
                rendition.label()
            );
            if let Some(next) = all.get(at as usize + 1) {
                assert!(
                    next_jpeg(&mut reader).unwrap().unwrap() == *next,
                    "and the one after it"
                );
            }
            println!(
                "{} seek to {at}: {:.1} ms",
                rendition.label(),
                took.as_secs_f64() * 1e3
            );
        }
        let started = Instant::now();
        let mut fresh = SourceReader::open(&path, "v1").unwrap();
        fresh.seek(70).unwrap();
        assert!(next_jpeg(&mut fresh).unwrap().unwrap() == all[70]);
        println!(
            "{} open + seek + first frame: {:.1} ms",
            rendition.label(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[test]
fn the_demo_frame_number_reads_back_from_the_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    media::make_demo_rendition(
        tmp.path(),
        "mark",
        Rendition::P240,
        3.0,
        30.0,
        &mut Progress::hidden(),
    )
    .unwrap();
    let path = media::rendition_path(tmp.path(), "mark", Rendition::P240);
    let mut reader = SourceReader::open(&path, "v1").unwrap();
    let mut n = 0;
    while let Some(jpeg) = next_jpeg(&mut reader).unwrap() {
        assert_eq!(media::read_frame_mark(&jpeg), Some(n));
        n += 1;
    }
    assert_eq!(n, 90);
    assert_eq!(media::read_frame_mark(b"not a jpeg"), None);
}
