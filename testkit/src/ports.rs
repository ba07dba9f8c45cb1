//! Picks free TCP ports on loopback for throwaway servers; never binds anything but 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener};

/// Returns a TCP port on `127.0.0.1` that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and releasing it, so another
/// process can still take it before the caller binds it: callers that start a
/// server on it retry with a new port when the bind fails.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 only fails when the machine has no loopback or no free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_a_port_that_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should still be free");
    }
}
