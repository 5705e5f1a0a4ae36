//! The one thread that touches the window system. Qt (behind OpenCV's highgui) must create,
//! drive and destroy its windows on one thread, and destroys itself at exit on the process's
//! main thread, so the `svs` binary gives its main thread to `serve` and runs everything else on
//! a runtime thread. Players open windows through `open`; every open window is driven from here
//! (several playbacks of one chat at once), and keys go to the window opened last.

use opencv::core::Mat;
use opencv::highgui;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

enum Request {
    Open {
        id: u64,
        frames: Receiver<Shown>,
        keys: tokio::sync::mpsc::UnboundedSender<i32>,
    },
}

/// A picture to show, with the window's title.
#[derive(Debug)]
pub struct Shown {
    pub image: Mat,
    pub title: String,
}

static REQUESTS: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

/// A window while its player holds it; dropping it closes the window.
#[derive(Debug)]
pub struct Window {
    frames: SyncSender<Shown>,
}

impl Window {
    /// Shows `image` (waits while the window thread is two pictures behind). False if the
    /// window is gone.
    pub fn show(&self, image: Mat, title: String) -> bool {
        self.frames.send(Shown { image, title }).is_ok()
    }
}

/// Opens a window on the window thread, or `None` when no window thread serves (library use,
/// tests). Keys pressed in it (highgui key codes) arrive on `keys`.
pub fn open(keys: tokio::sync::mpsc::UnboundedSender<i32>) -> Option<Window> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let requests = REQUESTS.get()?;
    let (frames, receiver) = std::sync::mpsc::sync_channel(2);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(Request::Open {
            id,
            frames: receiver,
            keys,
        })
        .ok()?;
    Some(Window { frames })
}

struct Open {
    name: String,
    title: String,
    frames: Receiver<Shown>,
    keys: tokio::sync::mpsc::UnboundedSender<i32>,
}

/// Runs `work` on a new thread and serves windows on this one until it returns; returns its
/// result. Call it from `main`.
pub fn serve<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, requests) = std::sync::mpsc::channel();
    let _ = REQUESTS.set(Mutex::new(sender));
    let worker = std::thread::spawn(work);
    let mut windows: Vec<Open> = Vec::new();
    while !worker.is_finished() {
        // With no window open, wait for one (or for the work to end) without spinning.
        let request = if windows.is_empty() {
            match requests.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            requests.try_recv().ok()
        };
        if let Some(Request::Open { id, frames, keys }) = request {
            let name = format!("svs {id}");
            if highgui::named_window(&name, highgui::WINDOW_AUTOSIZE).is_ok() {
                windows.push(Open {
                    name,
                    title: String::new(),
                    frames,
                    keys,
                });
            }
        }
        drive(&mut windows);
    }
    if !windows.is_empty() {
        let _ = highgui::destroy_all_windows();
        let _ = highgui::wait_key(1);
    }
    match worker.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Shows what arrived for each window, closes those whose player let go, and hands a pressed
/// key to the window opened last.
fn drive(windows: &mut Vec<Open>) {
    windows.retain_mut(|w| {
        loop {
            match w.frames.try_recv() {
                Ok(shown) => {
                    if shown.title != w.title {
                        let _ = highgui::set_window_title(&w.name, &shown.title);
                        w.title = shown.title;
                    }
                    let _ = highgui::imshow(&w.name, &shown.image);
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    let _ = highgui::destroy_window(&w.name);
                    // Lets Qt take the window down now, not at the next key poll.
                    let _ = highgui::wait_key(1);
                    return false;
                }
            }
        }
    });
    if windows.is_empty() {
        return;
    }
    let key = highgui::wait_key(10).unwrap_or(-1);
    if key >= 0
        && let Some(last) = windows.last()
    {
        let _ = last.keys.send(key);
    }
}
