//! Refuses connections before their handshake once the node holds its
//! `max_peers` established connections. The connection limits alone refuse
//! such a connection only once it is established, after both ends paid a
//! full Noise handshake for it; a node at its limit that keeps being dialled
//! (or whose Kademlia queries keep dialling) would spend its CPU on
//! handshakes that cannot lead anywhere.

use std::collections::HashSet;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};

/// Why a connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
#[error("this node holds its {max} connections")]
pub struct Full {
    /// The limit.
    pub max: usize,
}

/// The guard: counts established connections and refuses pending ones (in
/// and out) while the count is at `max`.
#[derive(Debug)]
pub struct Guard {
    max: usize,
    established: HashSet<ConnectionId>,
}

impl Guard {
    /// A guard for `max` established connections.
    pub fn new(max: u32) -> Guard {
        Guard { max: max as usize, established: HashSet::new() }
    }

    /// Established connections now.
    pub fn established(&self) -> usize {
        self.established.len()
    }

    fn check(&self) -> Result<(), ConnectionDenied> {
        if self.established.len() >= self.max { Err(ConnectionDenied::new(Full { max: self.max })) } else { Ok(()) }
    }
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check()
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.check()?;
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.established.insert(e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                self.established.remove(&e.connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use libp2p::core::ConnectedPoint;
    use libp2p::core::transport::PortUse;
    use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};

    use super::*;

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: "/memory/1".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    #[test]
    fn refuses_before_the_handshake_only_while_full() {
        let mut guard = Guard::new(2);
        let addr: Multiaddr = "/memory/1".parse().unwrap();
        let peer = PeerId::random();
        let ids = [ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2)];
        let point = endpoint();
        for id in ids {
            assert!(guard.handle_pending_outbound_connection(id, Some(peer), &[], Endpoint::Dialer).is_ok());
            guard.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &point,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        assert_eq!(guard.established(), 2);
        let third = ConnectionId::new_unchecked(3);
        let err = guard.handle_pending_inbound_connection(third, &addr, &addr).unwrap_err();
        assert!(err.downcast_ref::<Full>().is_some_and(|f| f.max == 2), "{err:?}");
        assert!(guard.handle_pending_outbound_connection(third, None, &[], Endpoint::Dialer).is_err());
        // One closes: there is room again.
        guard.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ids[0],
            endpoint: &point,
            cause: None,
            remaining_established: 1,
        }));
        assert_eq!(guard.established(), 1);
        assert!(guard.handle_pending_inbound_connection(third, &addr, &addr).is_ok());
    }
}
