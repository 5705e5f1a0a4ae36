//! What svs's tests, benches and the soak share, so each has one copy: the services in-process
//! with generated TLS and clients of them (`fixtures`, `client`), connections from chosen
//! loopback addresses (`net`), a viewer that decodes what it receives (`viewer`), free ports,
//! child logs, child processes that die with the test, a real `nats-server` run with the
//! configuration compose deploys, headless Chromium driven over WebDriver (`browser`), Prometheus scrapes, and the demos' beeps found in sound (`sound`). Test code: failures panic with a
//! sentence saying what did not happen.
#![allow(clippy::unwrap_used)]

mod browser;
pub mod client;
mod fixtures;
mod metrics;
mod nats;
pub mod net;
mod process;
pub mod sound;
pub mod viewer;

pub use browser::{Browser, Chromedriver, SvsWeb};
pub use fixtures::*;
pub use metrics::{metric_series, scrape_metrics};
pub use nats::{NATS_USER, NatsServer};
pub use process::{
    ChildService, cpu_seconds, free_port, log_file, peak_rss_kib, rss_kib, wait_for_port,
};
