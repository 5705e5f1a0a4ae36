//! What svs's process-level tests, benches and the soak share, so each has one copy: free ports,
//! child logs, child processes that die with the test, a real `nats-server` run with the
//! configuration compose deploys, and Prometheus scrapes. Test code: failures panic with a
//! sentence saying what did not happen.
#![allow(clippy::unwrap_used)]
#![warn(missing_docs)]

mod metrics;
mod nats;
mod process;

pub use metrics::{metric_series, scrape_metrics};
pub use nats::{NATS_USER, NatsServer};
pub use process::{
    ChildService, cpu_seconds, free_port, log_file, peak_rss_kib, rss_kib, wait_for_port,
};
