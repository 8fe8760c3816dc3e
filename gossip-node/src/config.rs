//! The command line, the TOML config file, and their merge into a validated
//! [`NodeConfig`].
//!
//! Every flag of `gossip-node run` has a TOML key of the same name with
//! underscores (`--cluster-id` is `cluster_id`); a flag given on the command
//! line wins over the file. `--seed` given at least once replaces the file's
//! `seeds`; `--meta name=value` overrides the file's `[meta]` entry of that
//! name and keeps the others. Durations are integers in milliseconds, with
//! the `_ms` suffix. Unknown keys are errors. Relative file paths in the
//! config file (`tls_ca`, `tls_cert`, `tls_key`, `keyring_file`, `data_dir`) are relative to the
//! file's directory; on the command line, to the working directory.
//!
//! ```toml
//! listen = "127.0.0.1:7001"
//! advertise = "127.0.0.1:7001"     # default: the bound listen address
//! seeds = ["127.0.0.1:7000"]
//! transport = "grpc"               # grpc | quic
//! tls = "mtls"                     # none (gRPC only) | self-signed (default) | mtls
//! tls_ca = "certs/ca.pem"          # mtls only: the cluster CA certificate
//! tls_cert = "certs/node-1.pem"    # mtls only: this member's certificate
//! tls_key = "certs/node-1-key.pem" # mtls only: its private key
//! encrypt_key = "8ZJ...="          # seal every message with this shared key (gossip-node keygen)
//! keyring_file = "keyring.json"    # keeps the keys across restarts and rotations
//! admin = "127.0.0.1:8001"         # optional; port 0 picks a free port
//! cluster_id = "default"
//! log_format = "text"              # text | json
//! gossip_interval_ms = 200
//! active_rounds = 10               # rounds run for this long after a change
//! push_pull_interval_ms = 30000    # a quiet member's background round
//! probe_interval_ms = 1000
//! probe_timeout_ms = 500
//! fanout = 3
//! active_view = 8                  # recent peers that take most of a round
//! warm_up_peers = 128              # peers contacted ahead of need once quiet; 0: off
//! suspicion_mult = 4
//! tombstone_ttl_ms = 60000
//! max_message_size = 65536
//! max_connections = 256            # cached outgoing connections (LRU)
//!
//! data_dir = "/var/lib/gossip"     # optional: snapshot for rejoining
//!
//! [meta]
//! name = "alpha"
//!
//! [[handlers]]                     # repeat for several; see crate::handlers
//! events = ["member-join", "member-leave", "key-change:app/"]
//! command = "./on-change.sh"       # run by sh -c, event JSON on stdin
//! name = "on-change"               # optional; default handler-N
//! timeout_ms = 30000               # optional; killed after it
//! queue = 256                      # optional; events beyond it are dropped
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use gossip_core::{MAX_META_BYTES, MAX_META_ENTRIES, NodeAddr};
use gossip_tls::{MtlsFiles, TlsConfig};
use serde::Deserialize;

use crate::error::ConfigError;
use crate::handlers::HandlerConfig;
use crate::keyring::{KeyringSettings, Secret};
use crate::transport::TransportKind;

/// Flags of `gossip-node run`. Each also has a TOML key; the flag wins.
#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// Address to listen on for gossip traffic, IP:PORT (port 0 picks a free
    /// port). TOML: `listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address other members reach this one at, HOST:PORT; it is the
    /// member's identity. Default: the bound listen address. TOML:
    /// `advertise`.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,

    /// A member to join through, HOST:PORT; repeat for several. TOML:
    /// `seeds = [...]`.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seeds: Vec<String>,

    /// Transport: grpc or quic. Default grpc (quic in a build without the
    /// grpc feature). TOML: `transport`.
    #[arg(long, value_name = "NAME")]
    pub transport: Option<String>,

    /// Address of the admin HTTP endpoint, IP:PORT (port 0 picks a free
    /// port). Default: no admin endpoint. TOML: `admin`.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// TOML config file.
    #[arg(long, short = 'c', value_name = "FILE", env = "GOSSIP_NODE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Metadata entry NAME=VALUE; repeat for several. TOML: `[meta]`.
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    pub meta: Vec<String>,

    /// Cluster id; messages of other clusters are rejected. Default
    /// "default". TOML: `cluster_id`.
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,

    /// Log format: text (readable) or json (one object per line). The level
    /// filter comes from RUST_LOG (default info). TOML: `log_format`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Directory where the member keeps its snapshot (known members, own
    /// keys and metadata, generation) to rejoin after a restart. Default:
    /// none. TOML: `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Event handler EVENTS=COMMAND, e.g.
    /// `member-join,member-leave=./on-change.sh`: COMMAND runs by `sh -c`
    /// with the event as JSON on stdin and its kind in GOSSIP_EVENT. Repeat
    /// for several; replaces the file's `[[handlers]]`. Events:
    /// member-join, member-update, member-suspect, member-failed,
    /// member-leave, key-change, key-change:PREFIX, broadcast, *.
    #[arg(long = "handler", value_name = "EVENTS=COMMAND")]
    pub handlers: Vec<String>,

    /// Transport security.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Message encryption with a shared key (issue #12).
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Protocol timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// TLS settings of `gossip-node run`, mapped onto
/// [`gossip_tls::TlsConfig`]. Each also has a TOML key; the flag wins.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Transport security: none (plaintext; gRPC only), self-signed
    /// (encrypted, peers NOT authenticated; the default) or mtls (mutual TLS
    /// against a cluster CA; needs --tls-ca, --tls-cert and --tls-key).
    /// TOML: `tls`.
    #[arg(long, value_enum, value_name = "MODE")]
    pub tls: Option<TlsKind>,
    /// The cluster CA certificate, PEM (mtls). TOML: `tls_ca`.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This member's certificate, PEM, signed by the cluster CA (mtls).
    /// TOML: `tls_cert`.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This member's private key, PEM (mtls). Never logged. TOML: `tls_key`.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The TLS mode, as written in `tls` / `--tls`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsKind {
    /// `none`: plaintext. gRPC only; for tests and trusted networks.
    None,
    /// `self-signed`: each member makes its own certificate at start;
    /// encrypted, but peers are **not** authenticated. For local use.
    #[default]
    SelfSigned,
    /// `mtls`: mutual TLS; every peer must present a certificate signed by
    /// the cluster CA.
    Mtls,
}

impl TlsKind {
    /// The name used on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            TlsKind::None => "none",
            TlsKind::SelfSigned => "self-signed",
            TlsKind::Mtls => "mtls",
        }
    }

    /// The mode of `tls`.
    pub fn of(tls: &TlsConfig) -> Self {
        match tls {
            TlsConfig::None => TlsKind::None,
            TlsConfig::SelfSigned => TlsKind::SelfSigned,
            TlsConfig::Mtls(_) => TlsKind::Mtls,
        }
    }
}

impl std::fmt::Display for TlsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keyring settings of `gossip-node run` (issue #12). Each also has a TOML
/// key; the flag wins. `Debug` hides the key.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Encryption")]
pub struct KeyArgs {
    /// Seal every message with this shared key, standard base64 of 32
    /// bytes (`gossip-node keygen`); members without it are refused. Works
    /// with every transport and TLS mode. Better from the environment or
    /// the config file than on the command line. TOML: `encrypt_key`.
    #[arg(
        long,
        value_name = "KEY",
        env = "GOSSIP_ENCRYPT_KEY",
        hide_env_values = true
    )]
    pub encrypt_key: Option<Secret>,
    /// File that keeps the keyring (JSON, the primary key first), written
    /// after every `gossip-node keys` change; created from --encrypt-key if
    /// absent, and wins over it once it exists. TOML: `keyring_file`.
    #[arg(long, value_name = "FILE")]
    pub keyring_file: Option<PathBuf>,
}

/// Protocol settings of `gossip-node run`, mapped onto
/// [`gossip_core::Config`]. Each also has a TOML key; the flag wins.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Protocol")]
pub struct TimingArgs {
    /// Period of anti-entropy rounds, ms (default 200).
    #[arg(long, value_name = "MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Gossip rounds run for this many intervals after the last change a
    /// member made or learned, then stop until the next one (default 10; at
    /// least ceil(log2 n) is used; 4294967295 never stops them).
    #[arg(long, value_name = "N")]
    pub active_rounds: Option<u32>,
    /// Longest time between two anti-entropy rounds of a quiet member: one
    /// background round to one peer, ms (default 30000). It runs on a gossip
    /// tick, so a value below the gossip interval means one every tick.
    #[arg(long, value_name = "MS")]
    pub push_pull_interval_ms: Option<u64>,
    /// Period of failure-detector probes, ms (default 1000).
    #[arg(long, value_name = "MS")]
    pub probe_interval_ms: Option<u64>,
    /// Time to wait for a direct ack, ms (default 500); at most the probe
    /// interval.
    #[arg(long, value_name = "MS")]
    pub probe_timeout_ms: Option<u64>,
    /// Peers contacted per gossip round (default 3).
    #[arg(long, value_name = "N")]
    pub fanout: Option<usize>,
    /// Recently contacted peers that take all but one of a round's
    /// requests, so that rounds reuse open connections (default 8; 0: every
    /// peer random).
    #[arg(long, value_name = "N")]
    pub active_view: Option<usize>,
    /// Peers, in all, a quiet member contacts ahead of need (`fanout` per
    /// probe period) so that their connections are open before a write
    /// needs them (default 128; 0: off).
    #[arg(long, value_name = "N")]
    pub warm_up_peers: Option<usize>,
    /// Suspicion timeout multiplier (default 4).
    #[arg(long, value_name = "N")]
    pub suspicion_mult: Option<u32>,
    /// How long dead members and deleted keys are remembered, ms (default
    /// 60000).
    #[arg(long, value_name = "MS")]
    pub tombstone_ttl_ms: Option<u64>,
    /// Largest message sent or accepted, bytes (default 65536).
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Most cached outgoing connections; the least recently used is closed
    /// first (default 256).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// The TOML config file, as written. Every key is optional; unknown keys are
/// errors. See the [module documentation](self) for an example.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen`: IP:PORT.
    pub listen: Option<String>,
    /// `advertise`: HOST:PORT.
    pub advertise: Option<String>,
    /// `seeds`: HOST:PORT strings.
    pub seeds: Option<Vec<String>>,
    /// `transport`: a transport name.
    pub transport: Option<String>,
    /// `admin`: IP:PORT.
    pub admin: Option<String>,
    /// `tls`: `"none"`, `"self-signed"` or `"mtls"`.
    pub tls: Option<TlsKind>,
    /// `tls_ca`: PEM file of the cluster CA certificate.
    pub tls_ca: Option<PathBuf>,
    /// `tls_cert`: PEM file of this member's certificate.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM file of this member's private key.
    pub tls_key: Option<PathBuf>,
    /// `encrypt_key`: the shared key, base64.
    pub encrypt_key: Option<Secret>,
    /// `keyring_file`: the file that keeps the keyring.
    pub keyring_file: Option<PathBuf>,
    /// `[meta]`: metadata entries.
    pub meta: Option<BTreeMap<String, String>>,
    /// `cluster_id`.
    pub cluster_id: Option<String>,
    /// `log_format`: `"text"` or `"json"`.
    pub log_format: Option<LogFormat>,
    /// `gossip_interval_ms`.
    pub gossip_interval_ms: Option<u64>,
    /// `active_rounds`.
    pub active_rounds: Option<u32>,
    /// `push_pull_interval_ms`.
    pub push_pull_interval_ms: Option<u64>,
    /// `probe_interval_ms`.
    pub probe_interval_ms: Option<u64>,
    /// `probe_timeout_ms`.
    pub probe_timeout_ms: Option<u64>,
    /// `fanout`.
    pub fanout: Option<usize>,
    /// `active_view`.
    pub active_view: Option<usize>,
    /// `warm_up_peers`.
    pub warm_up_peers: Option<usize>,
    /// `suspicion_mult`.
    pub suspicion_mult: Option<u32>,
    /// `tombstone_ttl_ms`.
    pub tombstone_ttl_ms: Option<u64>,
    /// `max_message_size`, bytes.
    pub max_message_size: Option<usize>,
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `[[handlers]]`: event handlers.
    pub handlers: Option<Vec<FileHandler>>,
    /// `data_dir`: the snapshot's directory.
    pub data_dir: Option<PathBuf>,
}

/// One `[[handlers]]` table of the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHandler {
    /// `name`: in logs and metrics; default `handler-N`.
    pub name: Option<String>,
    /// `events`: filters, e.g. `["member-join", "key-change:app/"]`.
    pub events: Vec<String>,
    /// `command`: the shell command.
    pub command: String,
    /// `timeout_ms`: longest run (default 30000).
    pub timeout_ms: Option<u64>,
    /// `queue`: most events waiting (default 256).
    pub queue: Option<usize>,
}

impl FileConfig {
    /// Parses TOML text; `path` is only used in the error message.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for invalid TOML, an unknown key or a value of
    /// the wrong type.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses a config file, and makes its relative file paths
    /// relative to the file's directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, otherwise as
    /// [`FileConfig::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut file = Self::parse(&text, path)?;
        if let Some(dir) = path.parent() {
            file.resolve_paths(dir);
        }
        Ok(file)
    }

    /// Joins every relative file path (`tls_ca`, `tls_cert`, `tls_key`,
    /// `keyring_file`, `data_dir`) onto `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [
            &mut self.tls_ca,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.keyring_file,
            &mut self.data_dir,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// A validated configuration of one member: what `gossip-node run` starts.
///
/// Build it with [`NodeConfig::from_args`] (command line plus file) or
/// [`NodeConfig::new`] and field updates; [`crate::node::start`] validates it
/// again before starting.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address the transport binds.
    pub listen: SocketAddr,
    /// Address advertised to peers; `None`: the bound listen address.
    pub advertise: Option<NodeAddr>,
    /// Members to join through.
    pub seeds: Vec<NodeAddr>,
    /// The transport.
    pub transport: TransportKind,
    /// Transport security. [`TlsConfig::None`] only over gRPC.
    pub tls: TlsConfig,
    /// Address of the admin HTTP endpoint, if any.
    pub admin: Option<SocketAddr>,
    /// Initial metadata.
    pub meta: BTreeMap<String, String>,
    /// Log format of the binary.
    pub log_format: LogFormat,
    /// Protocol configuration.
    pub protocol: gossip_core::Config,
    /// Most cached outgoing connections of the transport, least recently
    /// used closed first (issue #9 item 5). Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Event handlers (issue #11), in order.
    pub handlers: Vec<HandlerConfig>,
    /// Where the shared keys come from (issue #12); none: no encryption.
    pub keyring: KeyringSettings,
    /// Where the snapshot is kept ([`crate::snapshot`]); `None`: nowhere.
    pub data_dir: Option<PathBuf>,
}

/// Default [`NodeConfig::max_connections`]: 256, for the peers a member of
/// a LAN cluster of a thousand talks to at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl NodeConfig {
    /// Defaults (the default transport, self-signed TLS, no seeds, no admin
    /// endpoint, default protocol settings) listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            advertise: None,
            seeds: Vec::new(),
            transport: TransportKind::default(),
            tls: TlsConfig::SelfSigned,
            admin: None,
            meta: BTreeMap::new(),
            log_format: LogFormat::default(),
            protocol: gossip_core::Config::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handlers: Vec::new(),
            keyring: KeyringSettings::default(),
            data_dir: None,
        }
    }

    /// Reads the config file named by `--config` (if any) and merges the
    /// flags over it.
    ///
    /// # Errors
    /// Any [`ConfigError`]: unreadable or invalid file, bad address, unknown
    /// or unavailable transport, TLS mode without its files or refused by
    /// the transport, setting out of range.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Merges the flags over a parsed file and validates the result.
    ///
    /// # Errors
    /// As [`NodeConfig::from_args`], except for reading the file.
    pub fn merge(args: &RunArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let config = Self::combine(args, file)?;
        config.validate()?;
        Ok(config)
    }

    /// The merge proper: parses every setting, the flag winning, without the
    /// checks of [`NodeConfig::validate`].
    fn combine(args: &RunArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let listen = args
            .listen
            .as_deref()
            .or(file.listen.as_deref())
            .ok_or(ConfigError::MissingListen)?;
        let listen = parse_socket_addr("listen", listen)?;
        let advertise = args
            .advertise
            .as_deref()
            .or(file.advertise.as_deref())
            .map(|a| parse_node_addr("advertise", a))
            .transpose()?;
        let seeds = if args.seeds.is_empty() {
            file.seeds.unwrap_or_default()
        } else {
            args.seeds.clone()
        };
        let seeds = seeds
            .iter()
            .map(|s| parse_node_addr("seed", s))
            .collect::<Result<Vec<_>, _>>()?;
        let transport = args
            .transport
            .as_deref()
            .or(file.transport.as_deref())
            .map(str::parse::<TransportKind>)
            .transpose()?
            .unwrap_or_default();
        let admin = args
            .admin
            .as_deref()
            .or(file.admin.as_deref())
            .map(|a| parse_socket_addr("admin", a))
            .transpose()?;
        let tls = tls_config(
            &args.tls,
            TlsArgs {
                tls: file.tls,
                tls_ca: file.tls_ca,
                tls_cert: file.tls_cert,
                tls_key: file.tls_key,
            },
        )?;
        let mut meta = file.meta.unwrap_or_default();
        for entry in &args.meta {
            let (name, value) = parse_meta(entry)?;
            meta.insert(name, value);
        }
        let log_format = args.log_format.or(file.log_format).unwrap_or_default();

        let mut protocol = gossip_core::Config::default();
        if let Some(id) = args.cluster_id.clone().or(file.cluster_id) {
            protocol.cluster_id = id;
        }
        let t = &args.timing;
        let ms = Duration::from_millis;
        if let Some(v) = t.gossip_interval_ms.or(file.gossip_interval_ms) {
            protocol.gossip_interval = ms(v);
        }
        if let Some(v) = t.active_rounds.or(file.active_rounds) {
            protocol.active_rounds = v;
        }
        if let Some(v) = t.push_pull_interval_ms.or(file.push_pull_interval_ms) {
            protocol.push_pull_interval = ms(v);
        }
        if let Some(v) = t.probe_interval_ms.or(file.probe_interval_ms) {
            protocol.probe_interval = ms(v);
        }
        if let Some(v) = t.probe_timeout_ms.or(file.probe_timeout_ms) {
            protocol.probe_timeout = ms(v);
        }
        if let Some(v) = t.fanout.or(file.fanout) {
            protocol.fanout = v;
        }
        if let Some(v) = t.active_view.or(file.active_view) {
            protocol.active_view = v;
        }
        if let Some(v) = t.warm_up_peers.or(file.warm_up_peers) {
            protocol.warm_up_peers = v;
        }
        if let Some(v) = t.suspicion_mult.or(file.suspicion_mult) {
            protocol.suspicion_mult = v;
        }
        if let Some(v) = t.tombstone_ttl_ms.or(file.tombstone_ttl_ms) {
            protocol.tombstone_ttl = ms(v);
        }
        if let Some(v) = t.max_message_size.or(file.max_message_size) {
            protocol.max_message_size = v;
        }
        let max_connections = t
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);

        let handlers = handler_configs(&args.handlers, file.handlers.unwrap_or_default())?;
        let keyring = KeyringSettings {
            encrypt_key: args
                .keys
                .encrypt_key
                .clone()
                .or(file.encrypt_key)
                .map(|s| s.0),
            keyring_file: args.keys.keyring_file.clone().or(file.keyring_file),
        };
        let data_dir = args.data_dir.clone().or(file.data_dir);

        Ok(Self {
            listen,
            advertise,
            seeds,
            transport,
            tls,
            admin,
            meta,
            log_format,
            protocol,
            max_connections,
            handlers,
            keyring,
            data_dir,
        })
    }

    /// Checks what the types do not: the transport is compiled in and
    /// accepts the TLS mode, the metadata is within limits, and the protocol
    /// settings are in range.
    ///
    /// # Errors
    /// [`ConfigError::TransportUnavailable`], [`ConfigError::BadMeta`],
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.ensure_available()?;
        self.keyring.validate()?;
        check_tls(self.transport, TlsKind::of(&self.tls))?;
        if self.meta.len() > MAX_META_ENTRIES {
            return Err(ConfigError::BadMeta(format!(
                "{} entries, more than the limit of {MAX_META_ENTRIES}",
                self.meta.len()
            )));
        }
        let bytes: usize = self.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_META_BYTES {
            return Err(ConfigError::BadMeta(format!(
                "{bytes} bytes, more than the limit of {MAX_META_BYTES}"
            )));
        }
        for h in &self.handlers {
            if h.timeout.is_zero() || h.queue == 0 {
                return Err(ConfigError::BadHandler(format!(
                    "{}: timeout_ms and queue must be positive",
                    h.name
                )));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "max_connections",
                reason: "must be at least 1".to_owned(),
            });
        }
        // The protocol's limits have one owner, the core.
        self.protocol.validate().map_err(|e| ConfigError::Invalid {
            key: setting_of(e.field),
            reason: e.reason,
        })
    }
}

/// The config-file key (and flag, with dashes) that sets the protocol field
/// `field` of [`gossip_core::Config`]: durations carry their unit.
fn setting_of(field: &'static str) -> &'static str {
    match field {
        "gossip_interval" => "gossip_interval_ms",
        "push_pull_interval" => "push_pull_interval_ms",
        "probe_interval" => "probe_interval_ms",
        "probe_timeout" => "probe_timeout_ms",
        "tombstone_ttl" => "tombstone_ttl_ms",
        other => other,
    }
}

/// Checks that `transport` accepts the TLS mode `tls`: QUIC always encrypts.
///
/// # Errors
/// [`ConfigError::Invalid`] for `tls = "none"` over QUIC.
pub fn check_tls(transport: TransportKind, tls: TlsKind) -> Result<(), ConfigError> {
    if tls == TlsKind::None && !transport.allows_plaintext() {
        return Err(ConfigError::Invalid {
            key: "tls",
            reason: format!(
                "\"none\" is not supported by the {transport} transport (it always encrypts); \
                 use \"self-signed\" or \"mtls\""
            ),
        });
    }
    Ok(())
}

/// The TLS configuration of `flags` over `file`, the flag winning key by
/// key: `mtls` needs all three files, the other modes none.
fn tls_config(flags: &TlsArgs, file: TlsArgs) -> Result<TlsConfig, ConfigError> {
    let kind = flags.tls.or(file.tls).unwrap_or_default();
    let pick = |flag: &Option<PathBuf>, file: Option<PathBuf>| flag.clone().or(file);
    let files = [
        (
            "tls_ca",
            "--tls-ca",
            "the cluster CA certificate",
            pick(&flags.tls_ca, file.tls_ca),
        ),
        (
            "tls_cert",
            "--tls-cert",
            "this member's certificate",
            pick(&flags.tls_cert, file.tls_cert),
        ),
        (
            "tls_key",
            "--tls-key",
            "this member's private key",
            pick(&flags.tls_key, file.tls_key),
        ),
    ];
    if kind != TlsKind::Mtls {
        // Files given for another mode are a mistake that would otherwise
        // leave the member unauthenticated without a word.
        if let Some((key, ..)) = files.iter().find(|(.., path)| path.is_some()) {
            return Err(ConfigError::Invalid {
                key,
                reason: format!("only used with tls = \"mtls\", but tls is \"{kind}\""),
            });
        }
        return Ok(match kind {
            TlsKind::None => TlsConfig::None,
            _ => TlsConfig::SelfSigned,
        });
    }
    let [ca, cert, key] = files.map(|(key, flag, what, path)| {
        path.filter(|p| !p.as_os_str().is_empty())
            .ok_or(ConfigError::MissingTlsFile { key, flag, what })
    });
    Ok(TlsConfig::Mtls(MtlsFiles {
        ca_cert: ca?,
        cert: cert?,
        key: key?,
    }))
}

/// The handlers of the `--handler` flags if any, else of the file's
/// `[[handlers]]`.
fn handler_configs(
    flags: &[String],
    file: Vec<FileHandler>,
) -> Result<Vec<HandlerConfig>, ConfigError> {
    let name = |i: usize| format!("handler-{}", i + 1);
    if !flags.is_empty() {
        return flags
            .iter()
            .enumerate()
            .map(|(i, f)| HandlerConfig::parse_flag(name(i), f))
            .collect();
    }
    file.into_iter()
        .enumerate()
        .map(|(i, f)| {
            let events: Vec<&str> = f.events.iter().map(String::as_str).collect();
            let mut h = HandlerConfig::new(f.name.unwrap_or_else(|| name(i)), &events, &f.command)?;
            if let Some(ms) = f.timeout_ms {
                h.timeout = Duration::from_millis(ms);
            }
            if let Some(q) = f.queue {
                h.queue = q;
            }
            Ok(h)
        })
        .collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_socket_addr(what: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| ConfigError::BadAddress {
        what,
        value: truncate(s),
        reason: "expected IP:PORT, e.g. 127.0.0.1:7001 or [::1]:7001".to_owned(),
    })
}

fn parse_node_addr(what: &'static str, s: &str) -> Result<NodeAddr, ConfigError> {
    NodeAddr::parse(s.trim()).map_err(|e| ConfigError::BadAddress {
        what,
        value: truncate(s),
        reason: e.why.to_owned(),
    })
}

fn parse_meta(entry: &str) -> Result<(String, String), ConfigError> {
    match entry.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(ConfigError::BadMeta(format!(
            "{:?} is not NAME=VALUE",
            truncate(entry)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{DEFAULT_HANDLER_TIMEOUT, EventFilter, EventKind};

    /// The flags of `gossip-node run`, alone.
    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["run"];
        full.extend_from_slice(argv);
        <Run as clap::Parser>::try_parse_from(full)
            .expect("valid command line")
            .args
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, Path::new("test.toml")).expect("valid TOML")
    }

    #[track_caller]
    fn check_err(argv: &[&str], toml: &str, expected: &str) {
        let err = NodeConfig::merge(&args(argv), file(toml)).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn flag_beats_toml() {
        let toml = r#"
            listen = "127.0.0.1:7001"
            admin = "127.0.0.1:8001"
            seeds = ["127.0.0.1:7000"]
            cluster_id = "from-file"
            gossip_interval_ms = 300
            probe_interval_ms = 2000
            fanout = 5
            active_view = 4
            warm_up_peers = 7
            log_format = "json"
            [meta]
            name = "file"
            zone = "a"
        "#;
        // `combine`: the precedence holds whichever transports are compiled
        // in.
        let c = NodeConfig::combine(
            &args(&[
                "--listen",
                "127.0.0.1:7002",
                "--seed",
                "127.0.0.1:7100",
                "--seed",
                "10.0.0.1:7101",
                "--cluster-id",
                "from-flag",
                "--gossip-interval-ms",
                "100",
                "--meta",
                "name=flag",
                "--log-format",
                "text",
            ]),
            file(toml),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(c.admin, Some("127.0.0.1:8001".parse().unwrap()));
        assert_eq!(
            c.seeds,
            vec![
                NodeAddr::parse("127.0.0.1:7100").unwrap(),
                NodeAddr::parse("10.0.0.1:7101").unwrap()
            ]
        );
        assert_eq!(c.protocol.cluster_id, "from-flag");
        assert_eq!(c.protocol.gossip_interval, Duration::from_millis(100));
        assert_eq!(c.protocol.probe_interval, Duration::from_millis(2000));
        assert_eq!(c.protocol.fanout, 5);
        assert_eq!(c.protocol.active_view, 4);
        assert_eq!(c.protocol.warm_up_peers, 7);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.meta["name"], "flag");
        assert_eq!(c.meta["zone"], "a");
    }

    #[test]
    fn toml_alone_sets_every_key() {
        let c = NodeConfig::combine(
            &args(&[]),
            file(
                r#"
                listen = "127.0.0.1:0"
                advertise = "node-a.local:7001"
                transport = "grpc"
                tls = "mtls"
                tls_ca = "/etc/gossip/ca.pem"
                tls_cert = "/etc/gossip/node.pem"
                tls_key = "/etc/gossip/node-key.pem"
                gossip_interval_ms = 100
                active_rounds = 3
                push_pull_interval_ms = 5000
                probe_interval_ms = 200
                probe_timeout_ms = 100
                fanout = 2
                suspicion_mult = 2
                tombstone_ttl_ms = 5000
                max_message_size = 4096
                "#,
            ),
        );
        let c = c.unwrap();
        assert_eq!(c.validate().is_ok(), cfg!(feature = "grpc"));
        assert_eq!(c.advertise.unwrap().as_str(), "node-a.local:7001");
        assert_eq!(
            c.tls,
            TlsConfig::Mtls(MtlsFiles {
                ca_cert: "/etc/gossip/ca.pem".into(),
                cert: "/etc/gossip/node.pem".into(),
                key: "/etc/gossip/node-key.pem".into(),
            })
        );
        assert_eq!(c.protocol.probe_timeout, Duration::from_millis(100));
        assert_eq!(c.protocol.active_rounds, 3);
        assert_eq!(c.protocol.push_pull_interval, Duration::from_secs(5));
        assert_eq!(c.protocol.suspicion_mult, 2);
        assert_eq!(c.protocol.tombstone_ttl, Duration::from_secs(5));
        assert_eq!(c.protocol.max_message_size, 4096);
        assert_eq!(c.protocol.fanout, 2);
        assert!(c.admin.is_none());
    }

    #[test]
    fn unknown_toml_key_is_an_error() {
        let err = FileConfig::parse(
            "listen = \"127.0.0.1:1\"\nlisten_addr = 3\n",
            Path::new("n.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("invalid config file n.toml:"), "{err}");
        assert!(err.contains("unknown field `listen_addr`"), "{err}");
    }

    #[test]
    fn bad_toml_values_are_errors() {
        for text in [
            "listen = 7",
            "fanout = -1",
            "log_format = \"xml\"",
            "listen = \"a",
        ] {
            assert!(
                FileConfig::parse(text, Path::new("x.toml")).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn missing_or_unreadable_file_is_an_error() {
        let mut a = args(&["--listen", "127.0.0.1:1"]);
        a.config = Some(PathBuf::from("/nonexistent/gossip-node.toml"));
        let err = NodeConfig::from_args(&a).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot read config file /nonexistent/gossip-node.toml"
        );
    }

    #[test]
    fn config_file_is_read() {
        let path = std::env::temp_dir().join(format!(
            "gossip-node-config-test-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, "listen = \"127.0.0.1:7001\"\nbogus = true\n").unwrap();
        let mut a = args(&[]);
        a.config = Some(path.clone());
        let err = NodeConfig::from_args(&a).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn unknown_transport_is_named() {
        check_err(
            &["--listen", "127.0.0.1:1", "--transport", "carrier-pigeon"],
            "",
            "unknown transport 'carrier-pigeon' (expected one of: grpc, quic)",
        );
        check_err(
            &["--listen", "127.0.0.1:1"],
            "transport = \"x\"",
            "unknown transport 'x' (expected one of: grpc, quic)",
        );
    }

    #[cfg(not(feature = "quic"))]
    #[test]
    fn quic_is_not_available_without_its_feature() {
        check_err(
            &["--listen", "127.0.0.1:1", "--transport", "quic"],
            "",
            "transport 'quic' is not available in this build (enable the `quic` feature)",
        );
        check_err(
            &["--listen", "127.0.0.1:1"],
            "transport = \"quic\"",
            "transport 'quic' is not available in this build (enable the `quic` feature)",
        );
    }

    #[cfg(feature = "quic")]
    #[test]
    fn quic_is_chosen_with_its_feature() {
        let c = NodeConfig::merge(
            &args(&["--listen", "127.0.0.1:1", "--transport", "quic"]),
            file("transport = \"grpc\""),
        )
        .unwrap();
        assert_eq!(c.transport, TransportKind::Quic);
        let c = NodeConfig::merge(
            &args(&["--listen", "127.0.0.1:1"]),
            file("transport = \"QUIC\""),
        )
        .unwrap();
        assert_eq!(c.transport, TransportKind::Quic);
    }

    #[cfg(not(feature = "grpc"))]
    #[test]
    fn grpc_is_not_available_without_its_feature() {
        check_err(
            &["--listen", "127.0.0.1:1", "--transport", "grpc"],
            "",
            "transport 'grpc' is not available in this build (enable the `grpc` feature)",
        );
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_is_chosen_with_its_feature() {
        let c = NodeConfig::merge(
            &args(&["--listen", "127.0.0.1:1", "--transport", "grpc"]),
            file("transport = \"quic\""),
        )
        .unwrap();
        assert_eq!(c.transport, TransportKind::Grpc);
    }

    #[test]
    fn tls_defaults_to_self_signed() {
        let c = NodeConfig::combine(&args(&["--listen", "127.0.0.1:1"]), file("")).unwrap();
        assert_eq!(c.tls, TlsConfig::SelfSigned);
        assert_eq!(NodeConfig::new(c.listen).tls, TlsConfig::SelfSigned);
    }

    #[test]
    fn tls_flags_beat_tls_keys() {
        let toml = r#"
            tls = "self-signed"
            "#;
        let c = NodeConfig::combine(
            &args(&["--listen", "127.0.0.1:1", "--tls", "none"]),
            file(toml),
        )
        .unwrap();
        assert_eq!(c.tls, TlsConfig::None);

        // Each file from the flag if given, else from the file.
        let toml = r#"
            tls = "mtls"
            tls_ca = "file-ca.pem"
            tls_cert = "file-cert.pem"
            tls_key = "file-key.pem"
            "#;
        let c = NodeConfig::combine(
            &args(&[
                "--listen",
                "127.0.0.1:1",
                "--tls-cert",
                "flag-cert.pem",
                "--tls-key",
                "flag-key.pem",
            ]),
            file(toml),
        )
        .unwrap();
        assert_eq!(
            c.tls,
            TlsConfig::Mtls(MtlsFiles {
                ca_cert: "file-ca.pem".into(),
                cert: "flag-cert.pem".into(),
                key: "flag-key.pem".into(),
            })
        );

        // Every flag alone, and the mode from the flag.
        let c = NodeConfig::combine(
            &args(&[
                "--listen",
                "127.0.0.1:1",
                "--tls",
                "mtls",
                "--tls-ca",
                "a",
                "--tls-cert",
                "b",
                "--tls-key",
                "c",
            ]),
            file(""),
        )
        .unwrap();
        assert_eq!(TlsKind::of(&c.tls), TlsKind::Mtls);
    }

    #[test]
    fn bad_tls_values_are_errors() {
        let err = FileConfig::parse("tls = \"tls\"", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `tls`"), "{err}");
        assert!(err.contains("`none`, `self-signed`"), "{err}");
        assert!(<Run as clap::Parser>::try_parse_from(["run", "--tls", "selfsigned"]).is_err());
    }

    #[track_caller]
    fn check_tls_err(argv: &[&str], toml: &str, expected: &str) {
        let mut full = vec!["--listen", "127.0.0.1:1"];
        full.extend_from_slice(argv);
        let err = NodeConfig::combine(&args(&full), file(toml)).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn mtls_names_the_missing_file_key() {
        check_tls_err(
            &["--tls", "mtls"],
            "",
            "tls = \"mtls\" needs `tls_ca` (or --tls-ca FILE): the PEM file of the cluster CA certificate",
        );
        check_tls_err(
            &["--tls-ca", "ca.pem", "--tls-key", "k.pem"],
            "tls = \"mtls\"",
            "tls = \"mtls\" needs `tls_cert` (or --tls-cert FILE): the PEM file of this member's certificate",
        );
        check_tls_err(
            &[],
            "tls = \"mtls\"\ntls_ca = \"ca.pem\"\ntls_cert = \"c.pem\"\ntls_key = \"\"",
            "tls = \"mtls\" needs `tls_key` (or --tls-key FILE): the PEM file of this member's private key",
        );
    }

    #[test]
    fn tls_files_without_mtls_are_an_error() {
        check_tls_err(
            &["--tls-cert", "c.pem"],
            "",
            "invalid setting `tls_cert`: only used with tls = \"mtls\", but tls is \"self-signed\"",
        );
        check_tls_err(
            &["--tls", "none"],
            "tls_ca = \"ca.pem\"",
            "invalid setting `tls_ca`: only used with tls = \"mtls\", but tls is \"none\"",
        );
    }

    #[test]
    fn quic_refuses_plaintext() {
        let expected = "invalid setting `tls`: \"none\" is not supported by the quic transport \
                        (it always encrypts); use \"self-signed\" or \"mtls\"";
        assert_eq!(
            check_tls(TransportKind::Quic, TlsKind::None)
                .unwrap_err()
                .to_string(),
            expected
        );
        for tls in [TlsKind::SelfSigned, TlsKind::Mtls] {
            assert!(check_tls(TransportKind::Quic, tls).is_ok());
        }
        for tls in [TlsKind::None, TlsKind::SelfSigned, TlsKind::Mtls] {
            assert!(check_tls(TransportKind::Grpc, tls).is_ok());
        }
        if cfg!(feature = "quic") {
            check_err(
                &[
                    "--listen",
                    "127.0.0.1:1",
                    "--transport",
                    "quic",
                    "--tls",
                    "none",
                ],
                "",
                expected,
            );
            check_err(
                &["--listen", "127.0.0.1:1", "--tls", "none"],
                "transport = \"quic\"",
                expected,
            );
        }
        if cfg!(feature = "grpc") {
            let c = NodeConfig::merge(
                &args(&[
                    "--listen",
                    "127.0.0.1:1",
                    "--transport",
                    "grpc",
                    "--tls",
                    "none",
                ]),
                file(""),
            )
            .unwrap();
            assert_eq!(c.tls, TlsConfig::None);
        }
    }

    #[test]
    fn relative_tls_paths_in_the_file_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\ntls = \"mtls\"\ntls_ca = \"certs/ca.pem\"\n\
             tls_cert = \"/abs/node.pem\"\ntls_key = \"node-key.pem\"\n",
        )
        .unwrap();
        let mut a = args(&[]);
        a.config = Some(path);
        let c =
            NodeConfig::combine(&a, FileConfig::load(a.config.as_ref().unwrap()).unwrap()).unwrap();
        assert_eq!(
            c.tls,
            TlsConfig::Mtls(MtlsFiles {
                ca_cert: dir.path().join("certs/ca.pem"),
                cert: "/abs/node.pem".into(),
                key: dir.path().join("node-key.pem"),
            })
        );
    }

    #[test]
    fn bad_addresses() {
        check_err(
            &["--listen", "localhost:7001"],
            "",
            "invalid listen address \"localhost:7001\": expected IP:PORT, e.g. 127.0.0.1:7001 or [::1]:7001",
        );
        check_err(
            &["--listen", "127.0.0.1"],
            "",
            "invalid listen address \"127.0.0.1\": expected IP:PORT, e.g. 127.0.0.1:7001 or [::1]:7001",
        );
        check_err(
            &["--listen", "127.0.0.1:1", "--seed", "nohost"],
            "",
            "invalid seed address \"nohost\": missing ':port'",
        );
        check_err(
            &["--listen", "127.0.0.1:1", "--advertise", "a:0"],
            "",
            "invalid advertise address \"a:0\": port is not a number in 1..=65535",
        );
        check_err(
            &["--listen", "127.0.0.1:1"],
            "admin = \"127.0.0.1:99999\"",
            "invalid admin address \"127.0.0.1:99999\": expected IP:PORT, e.g. 127.0.0.1:7001 or [::1]:7001",
        );
    }

    #[test]
    fn missing_listen() {
        check_err(
            &[],
            "",
            "no listen address: pass --listen ADDR or set `listen` in the config file",
        );
    }

    #[test]
    fn bad_meta_and_ranges() {
        check_err(
            &["--listen", "127.0.0.1:1", "--meta", "novalue"],
            "",
            "invalid metadata: \"novalue\" is not NAME=VALUE",
        );
        check_err(
            &["--listen", "127.0.0.1:1", "--meta", "=v"],
            "",
            "invalid metadata: \"=v\" is not NAME=VALUE",
        );
        // Validation checks the transport first.
        if TransportKind::default().is_available() {
            check_err(
                &["--listen", "127.0.0.1:1", "--fanout", "0"],
                "",
                "invalid setting `fanout`: must be at least 1",
            );
            check_err(
                &["--listen", "127.0.0.1:1"],
                "probe_interval_ms = 100\nprobe_timeout_ms = 200",
                "invalid setting `probe_timeout_ms`: 200 ms is longer than the probe interval (100 ms)",
            );
            check_err(
                &["--listen", "127.0.0.1:1", "--cluster-id", ""],
                "",
                "invalid setting `cluster_id`: must not be empty",
            );
        }
    }

    #[test]
    fn silence_at_rest_keys() {
        // Defaults: those of the protocol.
        let c = NodeConfig::combine(&args(&["--listen", "127.0.0.1:1"]), file("")).unwrap();
        assert_eq!(c.protocol.active_rounds, 10);
        assert_eq!(c.protocol.push_pull_interval, Duration::from_secs(30));
        // The file alone, then a flag over the file.
        let toml = "active_rounds = 20\npush_pull_interval_ms = 60000";
        let c = NodeConfig::combine(&args(&["--listen", "127.0.0.1:1"]), file(toml)).unwrap();
        assert_eq!(c.protocol.active_rounds, 20);
        assert_eq!(c.protocol.push_pull_interval, Duration::from_secs(60));
        let c = NodeConfig::combine(
            &args(&[
                "--listen",
                "127.0.0.1:1",
                "--active-rounds",
                "5",
                "--push-pull-interval-ms",
                "10000",
            ]),
            file(toml),
        )
        .unwrap();
        assert_eq!(c.protocol.active_rounds, 5);
        assert_eq!(c.protocol.push_pull_interval, Duration::from_secs(10));
        assert!(FileConfig::parse("active_rounds = -1", Path::new("t.toml")).is_err());
        // Validation checks the transport first.
        if TransportKind::default().is_available() {
            assert!(c.validate().is_ok());
            check_err(
                &["--listen", "127.0.0.1:1", "--active-rounds", "0"],
                "",
                "invalid setting `active_rounds`: must be at least 1",
            );
            check_err(
                &["--listen", "127.0.0.1:1", "--push-pull-interval-ms", "0"],
                "",
                "invalid setting `push_pull_interval_ms`: must be positive",
            );
        }
    }

    #[test]
    fn default_transport_under_each_feature_set() {
        let r = NodeConfig::merge(&args(&["--listen", "127.0.0.1:1"]), FileConfig::default());
        if cfg!(feature = "grpc") {
            assert_eq!(r.unwrap().transport, TransportKind::Grpc);
        } else if cfg!(feature = "quic") {
            assert_eq!(r.unwrap().transport, TransportKind::Quic);
        } else {
            assert_eq!(
                r.unwrap_err().to_string(),
                "transport 'grpc' is not available in this build (enable the `grpc` feature)"
            );
        }
    }

    #[test]
    fn handlers_from_the_file_or_the_flags() {
        let toml = r#"
            listen = "127.0.0.1:1"
            [[handlers]]
            events = ["member-join", "key-change:app/"]
            command = "./on-join.sh"
            timeout_ms = 500
            queue = 8
            [[handlers]]
            name = "audit"
            events = ["*"]
            command = "logger -t gossip"
        "#;
        let c = NodeConfig::combine(&args(&[]), file(toml)).unwrap();
        assert_eq!(c.handlers.len(), 2);
        let h = &c.handlers[0];
        assert_eq!(h.name, "handler-1");
        assert_eq!(h.command, "./on-join.sh");
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert_eq!(h.queue, 8);
        assert_eq!(
            h.events,
            vec![
                EventFilter::Kind(EventKind::MemberJoin),
                EventFilter::KeyPrefix("app/".to_owned())
            ]
        );
        assert_eq!(c.handlers[1].name, "audit");
        assert_eq!(c.handlers[1].timeout, DEFAULT_HANDLER_TIMEOUT);
        // The flags replace the file's handlers.
        let c = NodeConfig::combine(
            &args(&["--handler", "member-leave,member-failed=./gone.sh"]),
            file(toml),
        )
        .unwrap();
        assert_eq!(c.handlers.len(), 1);
        assert_eq!(c.handlers[0].command, "./gone.sh");
        assert_eq!(c.handlers[0].events.len(), 2);

        let bad = |argv: &[&str], toml: &str| {
            let mut full = vec!["--listen", "127.0.0.1:1"];
            full.extend_from_slice(argv);
            NodeConfig::merge(&args(&full), file(toml))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(&["--handler", "./x.sh"], ""),
            "invalid event handler: \"./x.sh\" is not EVENTS=COMMAND"
        );
        assert!(
            bad(&[], "[[handlers]]\nevents = [\"join\"]\ncommand = \"x\"")
                .starts_with("invalid event handler: unknown event \"join\"")
        );
        assert_eq!(
            bad(&[], "[[handlers]]\nevents = []\ncommand = \"x\""),
            "invalid event handler: handler-1: no event to run on"
        );
        if TransportKind::default().is_available() {
            assert_eq!(
                bad(
                    &[],
                    "[[handlers]]\nevents = [\"*\"]\ncommand = \"x\"\ntimeout_ms = 0"
                ),
                "invalid event handler: handler-1: timeout_ms and queue must be positive"
            );
        }
        assert!(FileConfig::parse("[[handlers]]\nevents = [\"*\"]", Path::new("t.toml")).is_err());
    }

    #[test]
    fn keyring_settings_from_the_file_or_the_flags_and_never_shown() {
        let key = gossip_core::Key::generate().unwrap().to_base64();
        let text = format!(
            "listen = \"127.0.0.1:1\"\nencrypt_key = \"{key}\"\nkeyring_file = \"k.json\"\n"
        );
        let mut file = FileConfig::parse(&text, Path::new("/etc/g/node.toml")).unwrap();
        file.resolve_paths(Path::new("/etc/g"));
        let c = NodeConfig::merge(&RunArgs::default(), file.clone()).unwrap();
        assert_eq!(c.keyring.encrypt_key.as_deref(), Some(key.as_str()));
        assert_eq!(c.keyring.keyring_file, Some(PathBuf::from("/etc/g/k.json")));
        assert!(!format!("{c:?} {file:?}").contains(&key));
        // The flag wins.
        let other = gossip_core::Key::generate().unwrap().to_base64();
        let args = RunArgs {
            keys: KeyArgs {
                encrypt_key: Some(Secret(other.clone())),
                keyring_file: None,
            },
            ..RunArgs::default()
        };
        let c = NodeConfig::merge(&args, file).unwrap();
        assert_eq!(c.keyring.encrypt_key.as_deref(), Some(other.as_str()));
        assert!(!format!("{args:?}").contains(&other));
        // A bad key is reported without being repeated.
        let bad = "listen = \"127.0.0.1:1\"\nencrypt_key = \"c2VjcmV0\"\n";
        let bad = FileConfig::parse(bad, Path::new("t.toml")).unwrap();
        let err = NodeConfig::merge(&RunArgs::default(), bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encrypt_key") && !err.contains("c2VjcmV0"),
            "{err}"
        );
    }
}
