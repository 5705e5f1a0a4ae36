//! The CLI tests' harness: everything in svs-test-support (the services in-process, clients,
//! connections from chosen addresses, processes, NATS, metrics), plus the pseudo-terminal driver,
//! which runs this crate's `svs` binary.
#![allow(dead_code, unused_imports)]

/// Process helpers, by the name the tests have used for them.
pub(crate) use svs_test_support as process;
pub(crate) use svs_test_support::*;
pub(crate) mod pty;
pub(crate) mod run;
