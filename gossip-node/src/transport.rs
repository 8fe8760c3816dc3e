//! The choice of transport and the construction of a member over it.
//!
//! [`TransportKind`] names every transport any build knows, whether or not
//! its cargo feature is compiled into this one: a name that is known but not
//! compiled in gets a message saying which feature to enable, rather than
//! "unknown". Adding a transport means a variant here, a cargo feature, and
//! an arm in [`start_member`].
//!
//! Both transports take the member's [`gossip_tls::TlsConfig`] from
//! [`NodeConfig::tls`]; gRPC also runs without TLS, QUIC always encrypts.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use gossip_core::Membership;

use crate::config::NodeConfig;
use crate::error::{ConfigError, NodeError};

/// A transport a member can run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// gRPC over HTTP/2 (`gossip-grpc`); cargo feature `grpc`, on by default.
    Grpc,
    /// QUIC (`gossip-quic`); cargo feature `quic`, on by default.
    Quic,
}

impl Default for TransportKind {
    /// gRPC, or QUIC in a build without the `grpc` feature but with `quic`.
    fn default() -> Self {
        if cfg!(feature = "grpc") || !cfg!(feature = "quic") {
            TransportKind::Grpc
        } else {
            TransportKind::Quic
        }
    }
}

impl TransportKind {
    /// Every transport any build knows, in the order they are listed to
    /// users.
    pub const ALL: [TransportKind; 2] = [TransportKind::Grpc, TransportKind::Quic];

    /// The name used on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Grpc => "grpc",
            TransportKind::Quic => "quic",
        }
    }

    /// The cargo feature of `gossip-node` that compiles the transport in.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// True if this build includes the transport.
    pub fn is_available(self) -> bool {
        match self {
            TransportKind::Grpc => cfg!(feature = "grpc"),
            TransportKind::Quic => cfg!(feature = "quic"),
        }
    }

    /// The transport itself if this build includes it.
    ///
    /// # Errors
    /// [`ConfigError::TransportUnavailable`] naming the feature to enable.
    pub fn ensure_available(self) -> Result<Self, ConfigError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(ConfigError::TransportUnavailable {
                name: self.name(),
                feature: self.feature(),
            })
        }
    }

    /// True if the transport can run without TLS (`tls = "none"`). QUIC
    /// always encrypts.
    pub fn allows_plaintext(self) -> bool {
        match self {
            TransportKind::Grpc => true,
            TransportKind::Quic => false,
        }
    }

    /// The names of every known transport, comma separated, for messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TransportKind {
    type Err = ConfigError;

    /// Parses a transport name (ASCII case-insensitive). A known name parses
    /// even if the transport is not compiled in; see
    /// [`TransportKind::ensure_available`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ConfigError::UnknownTransport(s.chars().take(64).collect()))
    }
}

/// A member that has started: its transport serves and its driver runs.
pub struct StartedMember {
    /// The member, behind the transport-agnostic trait.
    pub member: Arc<dyn Membership>,
    /// The address the transport is bound to (the real port if the
    /// configuration asked for port 0).
    pub listen_addr: SocketAddr,
    /// The member's events from before it started: nothing is missed.
    pub events: tokio::sync::broadcast::Receiver<gossip_core::Event>,
    /// The task that writes the keyring file after every change (with
    /// `keyring_file`); abort it when the member stops.
    pub keyring_task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for StartedMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartedMember")
            .field("id", &self.member.local_id())
            .field("listen_addr", &self.listen_addr)
            .finish()
    }
}

/// Binds the configured transport with the configured TLS, builds the
/// member over it and starts it. The seeds are not contacted yet: that is
/// [`crate::node::start`]'s, once whatever watches the events is ready.
/// `generation`: the life's generation (default: the clock, in ms).
///
/// # Errors
/// [`NodeError::Config`] if the transport is not compiled in or refuses the
/// TLS mode, [`NodeError::Transport`] if it cannot bind, load its TLS files
/// or serve, [`NodeError::Member`] if the member refuses its metadata.
pub async fn start_member(
    config: &NodeConfig,
    generation: Option<u64>,
) -> Result<StartedMember, NodeError> {
    config.validate()?;
    // The keyring file is read (or created) before anything binds.
    let keyring = config
        .keyring
        .load()
        .map_err(ConfigError::from)?
        .map(gossip_core::Sealer::new);
    #[cfg(not(any(feature = "grpc", feature = "quic")))]
    let _ = (generation, &keyring);
    let kind = config.transport;
    match kind {
        #[cfg(feature = "grpc")]
        TransportKind::Grpc => {
            let grpc = gossip_grpc::GrpcTransport::bind(gossip_grpc::GrpcConfig {
                listen: config.listen,
                advertise: config.advertise.clone(),
                tls: config.tls.clone(),
                max_connections: config.max_connections,
                ..Default::default()
            })
            .await
            .map_err(|source| transport_error(config, source))?;
            let listen_addr = grpc.listen_addr();
            start_over(config, grpc, listen_addr, keyring, generation).await
        }
        #[cfg(feature = "quic")]
        TransportKind::Quic => {
            let quic = gossip_quic::QuicTransport::bind(gossip_quic::QuicConfig {
                listen: config.listen,
                advertise: config.advertise.clone(),
                tls: config.tls.clone(),
                max_connections: config.max_connections,
                ..Default::default()
            })
            .await
            .map_err(|source| transport_error(config, source))?;
            let listen_addr = quic.listen_addr();
            start_over(config, quic, listen_addr, keyring, generation).await
        }
        // Every transport this build includes has an arm above.
        #[cfg(not(all(feature = "grpc", feature = "quic")))]
        other => Err(ConfigError::TransportUnavailable {
            name: other.name(),
            feature: other.feature(),
        }
        .into()),
    }
}

#[cfg(any(feature = "grpc", feature = "quic"))]
fn transport_error(config: &NodeConfig, source: gossip_core::TransportError) -> NodeError {
    NodeError::Transport {
        transport: config.transport.name(),
        listen: config.listen,
        source,
    }
}

/// The part of [`start_member`] common to every transport: the member over
/// `transport`, subscribed to, started.
#[cfg(any(feature = "grpc", feature = "quic"))]
async fn start_over<T: gossip_core::Transport>(
    config: &NodeConfig,
    transport: T,
    listen_addr: SocketAddr,
    keyring: Option<gossip_core::Sealer>,
    generation: Option<u64>,
) -> Result<StartedMember, NodeError> {
    let member = gossip_core::Member::new(
        config.protocol.clone(),
        transport,
        gossip_core::MemberOptions {
            meta: config.meta.clone(),
            keyring: keyring.clone(),
            generation,
            ..Default::default()
        },
    )?;
    let events = member.subscribe();
    member
        .start()
        .await
        .map_err(|source| transport_error(config, source))?;
    let keyring_task = match (keyring, &config.keyring.keyring_file) {
        (Some(sealer), Some(file)) => Some(crate::keyring::spawn_persister(sealer, file.clone())),
        _ => None,
    };
    let member: Arc<dyn Membership> = Arc::new(member);
    Ok(StartedMember {
        member,
        listen_addr,
        events,
        keyring_task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<TransportKind, &str>) {
        match (input.parse::<TransportKind>(), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_names() {
        check("grpc", Ok(TransportKind::Grpc));
        check("GRPC", Ok(TransportKind::Grpc));
        check("quic", Ok(TransportKind::Quic));
        check(
            "x",
            Err("unknown transport 'x' (expected one of: grpc, quic)"),
        );
        check(
            "",
            Err("unknown transport '' (expected one of: grpc, quic)"),
        );
    }

    #[cfg(feature = "quic")]
    #[test]
    fn quic_is_available_with_its_feature() {
        assert_eq!(
            TransportKind::Quic.ensure_available().unwrap(),
            TransportKind::Quic
        );
    }

    #[cfg(not(feature = "quic"))]
    #[test]
    fn quic_is_not_available_without_its_feature() {
        let err = TransportKind::Quic.ensure_available().unwrap_err();
        assert_eq!(
            err.to_string(),
            "transport 'quic' is not available in this build (enable the `quic` feature)"
        );
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_is_available_with_its_feature() {
        assert_eq!(
            TransportKind::Grpc.ensure_available().unwrap(),
            TransportKind::Grpc
        );
    }

    #[cfg(not(feature = "grpc"))]
    #[test]
    fn grpc_is_not_available_without_its_feature() {
        let err = TransportKind::Grpc.ensure_available().unwrap_err();
        assert_eq!(
            err.to_string(),
            "transport 'grpc' is not available in this build (enable the `grpc` feature)"
        );
    }

    #[test]
    fn default_is_a_compiled_in_transport_when_there_is_one() {
        let default = TransportKind::default();
        if cfg!(feature = "grpc") {
            assert_eq!(default, TransportKind::Grpc);
        } else if cfg!(feature = "quic") {
            assert_eq!(default, TransportKind::Quic);
        } else {
            assert!(default.ensure_available().is_err());
        }
    }

    #[test]
    fn only_grpc_allows_plaintext() {
        assert!(TransportKind::Grpc.allows_plaintext());
        assert!(!TransportKind::Quic.allows_plaintext());
    }
}
