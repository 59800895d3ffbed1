//! This process's mappings of the managers' arenas (`arena.rs`), asked for once per manager.
//!
//! This module must never hand out a mapping another process made: the table is
//! [`PerProcess`].

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use crate::ipc::PerProcess;
use crate::manager::arena::Mapping;
use crate::manager::client::connection;
use crate::manager::protocol::{Address, Reply, Request};

/// This process's mappings, by manager name (`None`: the manager has no arena, or it could
/// not be mapped here).
static MAPPINGS: PerProcess<HashMap<String, Option<Arc<Mapping>>>> = PerProcess::new();

/// This process's mapping of `address`'s arena, asking the server for it the first time
/// (giving up at `deadline`, and then asking again next time).
pub(crate) fn mapping(address: &Address, deadline: Option<Instant>) -> Option<Arc<Mapping>> {
    MAPPINGS.with(|by_manager| {
        if let Some(known) = by_manager.get(&address.name) {
            return known.clone();
        }
        let mut conn = connection::take_by(address, deadline).ok()?;
        let mapped = match conn.call_with_fd(&Request::Arena, deadline) {
            Ok((reply, fd)) => {
                connection::give_back(address, conn);
                match (reply, fd) {
                    (Reply::Done, Some(fd)) => Mapping::new(&File::from(fd)).ok().map(Arc::new),
                    _ => None,
                }
            }
            // The manager is gone: nothing to remember.
            Err(_) => return None,
        };
        by_manager.insert(address.name.clone(), mapped.clone());
        mapped
    })
}

/// Whether this process asked `address` for its arena and got an answer (a mapping, or
/// that there is none to be had).
pub(crate) fn known(address: &Address) -> bool {
    MAPPINGS.with(|by_manager| by_manager.contains_key(&address.name))
}

/// Unmaps this process's view of a manager that shut down (read-ahead buffers may keep it a
/// little longer).
pub(crate) fn forget(address: &Address) {
    MAPPINGS.with(|by_manager| by_manager.remove(&address.name));
}
