//! The file-descriptor limit (SPEC "Connections and slow clients"): raised to the hard limit
//! at start, and `RELAY_MAX_CONNECTIONS` capped below it so that gateway connections and files
//! still find a descriptor.

use std::io;

/// File descriptors kept for everything but client connections and gateway connections: the
/// listener, the runtime's epoll and wakers, stdio, Redis connections, DNS look-ups, files.
pub(crate) const FD_RESERVE: u64 = 64;

/// `EMFILE` and `ENFILE` (the process's or the system's file table is full): 24 and 23 on
/// Linux and the BSDs.
const OUT_OF_FILES: [i32; 2] = [24, 23];

/// The soft limit on open files, before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
}

/// Raises the soft limit on open files to the hard limit, which needs no privilege. Called
/// once at start, before the listener is bound.
pub(crate) fn raise_fd_limit() -> io::Result<FdLimit> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let now = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(FdLimit { before, now })
}

/// The current soft limit on open files, where the platform has one.
pub(crate) fn fd_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// `RELAY_MAX_CONNECTIONS`, capped so that client connections leave room under the
/// file-descriptor limit for [`FD_RESERVE`] and one gateway connection per send in flight.
/// The room kept is at most half the limit, so a low limit still serves clients; beyond the
/// estimate, accept errors are the backstop (logged, shed, retried).
pub(crate) fn connection_cap(
    configured: usize,
    max_in_flight: usize,
    fd_limit: Option<u64>,
) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let in_flight = u64::try_from(max_in_flight).unwrap_or(u64::MAX);
    let reserve = FD_RESERVE.saturating_add(in_flight).min(limit / 2);
    let room = usize::try_from(limit - reserve).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// Whether an accept error says the process's or the system's file table is full.
pub(super) fn is_out_of_files(error: &io::Error) -> bool {
    error
        .raw_os_error()
        .is_some_and(|code| OUT_OF_FILES.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_room_for_gateway_connections_and_files() {
        // Plenty of descriptors: the configured value stands.
        assert_eq!(connection_cap(4096, 1024, Some(1_048_576)), 4096);
        // 20000 - 64 - 1024.
        assert_eq!(connection_cap(100_000, 1024, Some(20_000)), 18_912);
        // A common default of 1024: the reserve is at most half of it.
        assert_eq!(connection_cap(4096, 1024, Some(1024)), 512);
        assert_eq!(connection_cap(4096, 8, Some(1024)), 952);
        // Never zero, and no limit means the configured value.
        assert_eq!(connection_cap(4096, 1024, Some(1)), 1);
        assert_eq!(connection_cap(4096, 1024, Some(0)), 1);
        assert_eq!(connection_cap(4096, 1024, None), 4096);
        assert_eq!(connection_cap(4096, usize::MAX, Some(u64::MAX)), 4096);
    }
}
