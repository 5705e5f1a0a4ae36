//! `svs chat`: full screen on a terminal (`tui`), line by line otherwise or with `--plain`
//! (`line`). Both parse lines the same way (`command`), act through the same calls (`actions`,
//! and `rooms` for rooms on MLS) and run playbacks beside the conversation the same way
//! (`playback`).

pub mod actions;
pub mod command;
pub mod line;
pub mod playback;
pub mod rooms;
pub mod tui;
