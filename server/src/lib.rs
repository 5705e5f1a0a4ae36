//! svs-server: what both svs services run on — the accept loop and its per-address limits
//! (`serve`), admission of calls (`auth`), generated TLS (`tls`), health and reflection, the
//! shared flags (`ServerOptions`), the serve-until-shutdown ending both use (`run`), Prometheus
//! metrics (`metrics`), and the mapping of protocol errors to gRPC statuses (`status`).
#![warn(missing_docs)]

pub mod auth;
pub mod error;
mod health_check;
pub mod metrics;
pub mod rate;
pub mod run;
pub mod serve;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod verified_tokens;

pub use error::Error;
pub use health_check::HealthArgs;
pub use run::{ServerOptions, run_main};
