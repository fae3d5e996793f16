//! How the layers' TCP connections to Redis are set up.

/// `info` with `TCP_NODELAY` set. Group sends are pipelined on one
/// multiplexed connection: with Nagle on, a command written while an
/// earlier one is unacknowledged waits for that acknowledgement, and one
/// cut across two writes can wait for Redis's delayed ACK (tens of
/// milliseconds) while Redis, holding half a command, has no reply to
/// carry it.
pub(crate) fn no_delay(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    info.set_tcp_settings(tcp)
}
