//! The MLS delivery service (`svs.directory.v1.Groups`): published devices, their key packages,
//! one ordered log per group with exactly one commit per epoch, and Welcomes waiting for
//! devices. The store is a trait (`GroupStore`) with one conformance suite; today it has the
//! embedded implementation only, so cluster mode does not serve Groups yet.

#[cfg(test)]
mod conformance;
mod redb_groups;
mod service;
mod store;

pub(crate) use redb_groups::{RedbGroups, create_tables};
pub(crate) use service::GroupsService;
pub(crate) use store::{GroupLimits, GroupStore};
