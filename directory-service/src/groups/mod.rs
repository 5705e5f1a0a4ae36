//! The MLS delivery service (`svs.directory.v1.Groups`): published devices, their key packages,
//! one ordered log per group with exactly one commit per epoch, and Welcomes waiting for
//! devices. The store is a trait (`GroupStore`) with one conformance suite, run against the
//! embedded implementation here and the JetStream one in `cluster::groups`.

#[cfg(test)]
pub(crate) mod conformance;
mod redb_groups;
mod service;
mod store;

pub(crate) use redb_groups::{RedbGroups, create_tables};
pub(crate) use service::GroupsService;
pub(crate) use store::{
    Entry, GroupLimits, GroupStore, LogPage, Post, PostKind, Posted, PublishedDevice,
    StoredWelcome, devices_of_both, next_state,
};
