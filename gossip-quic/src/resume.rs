//! TLS session resumption, so that a reconnect (after an idle close or an
//! LRU eviction) costs no certificate exchange and no signature: the server
//! issues stateless tickets (encrypted with a key of its own, rotated every
//! 6 hours by rustls), the client keeps them per peer address (rustls keys
//! its cache by server name, which members sharing a host would share, each
//! spoiling the others' tickets), and the server counts the handshakes that
//! resumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gossip_core::TransportError;
use rustls::client::Resumption;
use rustls::server::ProducesTickets;

/// Server names whose tickets one peer's client configuration keeps (a
/// peer is dialled under one name).
const NAMES_PER_PEER: usize = 2;

/// A [`ProducesTickets`] that counts the tickets it accepts back.
#[derive(Debug)]
struct CountingTicketer {
    inner: Arc<dyn ProducesTickets>,
    resumed: Arc<AtomicU64>,
}

impl ProducesTickets for CountingTicketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher);
        if plain.is_some() {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
        plain
    }
}

/// Makes `server` issue resumption tickets, counting resumed handshakes in
/// `resumed`.
///
/// # Errors
/// [`TransportError::Tls`] if no ticket key can be generated.
pub(crate) fn server(
    server: &mut rustls::ServerConfig,
    resumed: Arc<AtomicU64>,
) -> Result<(), TransportError> {
    let inner = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TransportError::Tls(format!("cannot set up TLS session tickets: {e}")))?;
    server.ticketer = Arc::new(CountingTicketer { inner, resumed });
    // One ticket per handshake: a client keeps one per peer and resumes
    // with it (rustls sends 2 by default).
    server.send_tls13_tickets = 1;
    Ok(())
}

/// A client configuration for one peer: `base` with a ticket cache of its
/// own, offered on reconnecting to that peer.
pub(crate) fn client_for_peer(base: &rustls::ClientConfig) -> rustls::ClientConfig {
    let mut client = base.clone();
    client.resumption = Resumption::in_memory_sessions(NAMES_PER_PEER);
    client
}
