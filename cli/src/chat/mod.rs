//! `svs chat`: full screen on a terminal (`tui`), line by line otherwise or with `--plain`
//! (`line`); `svs web` draws the same chat in a browser. All parse lines the same way
//! (`command`) and act through the same calls (`actions`, and `rooms` for rooms on MLS); the
//! screens that keep a model (`tui`, and `crate::web`) share one state machine (`engine`) over
//! one model (`model`). Playbacks run beside the conversation the same way everywhere
//! (`playback`).

pub mod actions;
pub mod command;
pub mod engine;
pub mod line;
pub mod model;
pub mod playback;
pub mod rooms;
pub mod tui;
