//! `gossip-node members`, `kv` and `broadcast`: commands that talk to a
//! running member's admin API over HTTP and print what it answers.
//!
//! The node is found at `--admin URL`, else the `GOSSIP_ADMIN` environment
//! variable, else [`DEFAULT_ADMIN`] (the admin address of the README's
//! first node). A bare `HOST:PORT` means `http://HOST:PORT`. Every command
//! fails with a non-zero exit and one clear line when the node cannot be
//! reached or refuses the request (its JSON `error` is shown).

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admin::{ErrorBody, GossipAnswer, Health, KeyVersion};
use crate::cli::error::ClientError;

/// The admin URL used without `--admin` or `GOSSIP_ADMIN`.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:8001";

/// How long one admin request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the node's admin API is.
#[derive(Clone, Debug, Args)]
pub struct AdminArgs {
    /// The node's admin endpoint: http://HOST:PORT or HOST:PORT.
    #[arg(
        long = "admin",
        env = "GOSSIP_ADMIN",
        default_value = DEFAULT_ADMIN,
        value_name = "URL",
        global = true
    )]
    pub admin: String,
}

/// Flags of `gossip-node members`.
#[derive(Clone, Debug, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// Print the node's `GET /members` answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list the dead and left members the node still remembers.
    #[arg(long)]
    pub all: bool,
}

/// Flags of `gossip-node kv`.
#[derive(Clone, Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// Print the node's JSON answer instead of plain text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub op: KvOp,
}

/// The `kv` operations.
#[derive(Clone, Debug, Subcommand)]
pub enum KvOp {
    /// Print a key's value (of the node itself unless --owner is given).
    Get {
        /// The key.
        key: String,
        /// The owner's address, HOST:PORT (default: the node asked).
        #[arg(long, value_name = "ADDR")]
        owner: Option<String>,
    },
    /// Set one of the node's keys.
    Set {
        /// The key.
        key: String,
        /// The value (text).
        value: String,
        /// Expire the key everywhere after this many milliseconds.
        #[arg(long, value_name = "N")]
        ttl_ms: Option<u64>,
    },
    /// Delete one of the node's keys.
    Delete {
        /// The key.
        key: String,
    },
}

/// Flags of `gossip-node broadcast`.
#[derive(Clone, Debug, Args)]
pub struct BroadcastArgs {
    #[command(flatten)]
    /// Where the node's admin API is.
    pub admin: AdminArgs,
    /// The payload: JSON if it parses as JSON (`'{"a": 1}'`, `42`,
    /// `'"text"'`), else the text itself as a JSON string.
    pub payload: String,
    /// Hop limit (default: the node's configured `broadcast_ttl`).
    #[arg(long, value_name = "N")]
    pub ttl: Option<u32>,
    /// The broadcast's id, to retry safely (default: a fresh one).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Print the node's JSON answer instead of the id alone.
    #[arg(long)]
    pub json: bool,
}

/// One member as `GET /members` lists it (fields the table shows).
#[derive(Debug, Deserialize)]
struct MemberRow {
    addr: String,
    generation: u64,
    incarnation: u64,
    state: String,
    #[serde(default)]
    meta: std::collections::BTreeMap<String, String>,
    last_heard_ms: Option<u64>,
}

/// Body of `gossip-node members`: the node's live members as a table
/// (state in color on a terminal unless `NO_COLOR` is set), or its
/// `GET /members` answer as JSON.
///
/// # Errors
/// [`ClientError`] if the node cannot be reached, refuses, or answers
/// something unexpected, or standard output cannot be written.
pub async fn members(args: MembersArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let path = if args.all {
        "/members?all=true"
    } else {
        "/members"
    };
    let raw: Value = api.get(path).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", pretty(&raw))?;
        return Ok(());
    }
    let rows: Vec<MemberRow> = serde_json::from_value(raw).map_err(|e| api.bad_answer(path, e))?;
    let kv: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        api.get("/kv").await?;
    let health: Health = api.get("/healthz").await?;
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let table = members_table(&rows, &kv, &health.addr, color);
    writeln!(out, "{table}")?;
    let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
    let (alive, suspect) = (count("alive"), count("suspect"));
    let mut summary = format!(
        "{} live member{} ({alive} alive, {suspect} suspect)",
        alive + suspect,
        if alive + suspect == 1 { "" } else { "s" },
    );
    if args.all {
        summary += &format!(", {} dead, {} left", count("dead"), count("left"));
    }
    writeln!(out, "{summary} as seen by {} (*)", health.addr)?;
    Ok(())
}

fn members_table(
    rows: &[MemberRow],
    kv: &std::collections::BTreeMap<String, serde_json::Map<String, Value>>,
    me: &str,
    color: bool,
) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    }
    // Wrap cells to the terminal's width only when it is known and wide
    // enough (a pseudo-terminal may report no width at all).
    if table.width().is_some_and(|w| w >= 60) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table.set_header([
        "ADDRESS",
        "STATE",
        "INCARNATION",
        "GENERATION",
        "META",
        "KEYS",
        "LAST HEARD",
    ]);
    for r in rows {
        let addr = if r.addr == me {
            format!("{} *", r.addr)
        } else {
            r.addr.clone()
        };
        let meta: Vec<String> = r.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let keys = kv.get(&r.addr).map_or(0, serde_json::Map::len);
        table.add_row([
            Cell::new(addr),
            Cell::new(&r.state).fg(state_color(&r.state)),
            Cell::new(r.incarnation),
            Cell::new(r.generation),
            Cell::new(meta.join(", ")),
            Cell::new(keys),
            Cell::new(last_heard(r.addr == me, r.last_heard_ms)),
        ]);
    }
    table
}

fn state_color(state: &str) -> Color {
    match state {
        "alive" => Color::Green,
        "suspect" => Color::Yellow,
        "dead" => Color::Red,
        _ => Color::Grey,
    }
}

fn last_heard(is_self: bool, ms: Option<u64>) -> String {
    match ms {
        _ if is_self => "-".to_owned(),
        None => "never".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms} ms ago"),
        Some(ms) => format!("{:.1} s ago", ms as f64 / 1_000.0),
    }
}

/// Body of `gossip-node kv`: `get` prints the value (or the entry as JSON
/// with `--json`), `set` and `delete` print the key's new version.
///
/// # Errors
/// [`ClientError::NotFound`] if `get` finds no such key; otherwise as
/// [`members`].
pub async fn kv(args: KvArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let mut out = std::io::stdout().lock();
    match args.op {
        KvOp::Get { key, owner } => {
            let owner = match owner {
                Some(o) => o,
                None => api.get::<Health>("/healthz").await?.addr,
            };
            let all: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
                api.get("/kv").await?;
            let entry = all
                .get(&owner)
                .and_then(|keys| keys.get(&key))
                .ok_or_else(|| ClientError::NotFound {
                    key: key.clone(),
                    owner: owner.clone(),
                })?;
            if args.json {
                let mut shown = serde_json::Map::new();
                shown.insert("owner".into(), owner.into());
                shown.insert("key".into(), key.into());
                if let Value::Object(fields) = entry {
                    shown.extend(fields.clone());
                }
                writeln!(out, "{}", pretty(&Value::Object(shown)))?;
            } else {
                match &entry["value"] {
                    Value::String(s) => writeln!(out, "{s}")?,
                    // A value that is not UTF-8 comes as an array of bytes.
                    other => writeln!(out, "{other}")?,
                }
            }
        }
        KvOp::Set { key, value, ttl_ms } => {
            if ttl_ms == Some(0) {
                return Err(ClientError::BadInput("--ttl-ms must be positive".into()));
            }
            let mut url = api.key_url(&key)?;
            if let Some(ms) = ttl_ms {
                url.query_pairs_mut().append_pair("ttl_ms", &ms.to_string());
            }
            let answer: KeyVersion = api.send(Method::PUT, url, value.into_bytes()).await?;
            print_version(&mut out, args.json, "set", &answer)?;
        }
        KvOp::Delete { key } => {
            let url = api.key_url(&key)?;
            let answer: KeyVersion = api.send(Method::DELETE, url, Vec::new()).await?;
            print_version(&mut out, args.json, "deleted", &answer)?;
        }
    }
    Ok(())
}

fn print_version(
    out: &mut impl Write,
    json: bool,
    verb: &str,
    answer: &KeyVersion,
) -> Result<(), ClientError> {
    if json {
        let v = serde_json::json!({"key": answer.key, "version": answer.version});
        writeln!(out, "{}", pretty(&v))?;
    } else {
        writeln!(out, "{verb} {:?} (version {})", answer.key, answer.version)?;
    }
    Ok(())
}

/// Body of `gossip-node broadcast`: posts the payload to `POST /gossip` and
/// prints the broadcast's id (or the JSON answer with `--json`).
///
/// # Errors
/// As [`members`]; the node refuses a `ttl` of 0 or over
/// [`MAX_BROADCAST_TTL`](crate::admin::MAX_BROADCAST_TTL), an invalid
/// uuid, and a payload too large for one message.
pub async fn broadcast(args: BroadcastArgs) -> Result<(), ClientError> {
    let api = Api::new(&args.admin.admin)?;
    let payload = serde_json::from_str::<Value>(&args.payload)
        .unwrap_or_else(|_| Value::String(args.payload.clone()));
    let mut body = serde_json::json!({ "payload": payload });
    if let Some(ttl) = args.ttl {
        body["ttl"] = ttl.into();
    }
    if let Some(uuid) = &args.uuid {
        body["uuid"] = uuid.clone().into();
    }
    let url = api.url("/gossip")?;
    let answer: GossipAnswer = api
        .send(Method::POST, url, body.to_string().into_bytes())
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({"uuid": answer.uuid, "duplicate": answer.duplicate});
        writeln!(out, "{}", pretty(&v))?;
    } else if answer.duplicate {
        writeln!(out, "{} (already seen: not sent again)", answer.uuid)?;
    } else {
        writeln!(out, "{}", answer.uuid)?;
    }
    Ok(())
}

pub(crate) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Prints a command's `answer` to standard output: as pretty JSON with
/// `--json`, else as `text` writes it.
///
/// # Errors
/// [`ClientError`] if standard output cannot be written.
pub(crate) fn print_answer<T: serde::Serialize>(
    json: bool,
    answer: &T,
    text: impl FnOnce(&mut dyn std::io::Write, &T) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            pretty(&serde_json::to_value(answer).unwrap_or_default())
        )?;
    } else {
        text(&mut out, answer)?;
    }
    Ok(())
}

/// An admin API at one base URL.
pub(crate) struct Api {
    base: Url,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(admin: &str) -> Result<Self, ClientError> {
        Self::with_timeout(admin, REQUEST_TIMEOUT)
    }

    /// An admin API client whose requests may each take up to `timeout`
    /// (for routes that wait on other members, such as `/keys`).
    pub(crate) fn with_timeout(admin: &str, timeout: Duration) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: admin.to_owned(),
            reason,
        };
        let text = if admin.contains("://") {
            admin.to_owned()
        } else {
            format!("http://{admin}")
        };
        let base = Url::parse(&text).map_err(|e| bad(e.to_string()))?;
        if base.scheme() != "http" {
            return Err(bad(format!(
                "scheme {:?} is not supported (the admin API is plain http)",
                base.scheme()
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".to_owned()));
        }
        // The admin API is an operator's endpoint, reached directly: proxy
        // settings in the environment are not applied to it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(ClientError::Client)?;
        Ok(Self { base, http })
    }

    /// The URL of `path` (which starts with `/` and may end with a
    /// `?query`) under the base URL.
    pub(crate) fn url(&self, path: &str) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(query);
        Ok(url)
    }

    /// The URL of `/kv/{key}`, each `/`-separated part of the key
    /// percent-encoded.
    fn key_url(&self, key: &str) -> Result<Url, ClientError> {
        if key.is_empty() {
            return Err(ClientError::BadInput("the key is empty".into()));
        }
        let mut url = self.url("/kv")?;
        url.path_segments_mut()
            .map_err(|()| ClientError::BadInput(format!("cannot build a URL from {}", self.base)))?
            .extend(key.split('/'));
        Ok(url)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path)?;
        self.send(Method::GET, url, Vec::new()).await
    }

    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let shown = url.to_string();
        let mut req = self.http.request(method.clone(), url);
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: shown.clone(),
                source,
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: shown.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(refused(&method, shown, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url: shown,
            reason: e.to_string(),
        })
    }

    fn bad_answer(&self, path: &str, e: serde_json::Error) -> ClientError {
        ClientError::BadAnswer {
            url: format!("{}{}", self.base.as_str().trim_end_matches('/'), path),
            reason: e.to_string(),
        }
    }
}

fn refused(method: &Method, url: String, status: StatusCode, body: &[u8]) -> ClientError {
    let error = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.error,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    let method = match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "request",
    };
    ClientError::Refused {
        method,
        url,
        status: status.as_u16(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let api = Api::new("127.0.0.1:8001").unwrap();
        assert_eq!(
            api.url("/members").unwrap().as_str(),
            "http://127.0.0.1:8001/members"
        );
        let api = Api::new("http://localhost:9/base/").unwrap();
        assert_eq!(
            api.url("/kv").unwrap().as_str(),
            "http://localhost:9/base/kv"
        );
        assert_eq!(
            api.url("/members?all=true").unwrap().as_str(),
            "http://localhost:9/base/members?all=true"
        );
        assert_eq!(
            api.key_url("a b/c?d").unwrap().as_str(),
            "http://localhost:9/base/kv/a%20b/c%3Fd"
        );
        for bad in ["https://127.0.0.1:1", "http://", "::::", "ftp://x"] {
            assert!(
                matches!(Api::new(bad), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(api.key_url(""), Err(ClientError::BadInput(_))));
    }

    #[test]
    fn refusals_show_the_nodes_error() {
        let e = refused(
            &Method::PUT,
            "http://x/kv/a".into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":"value too large"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the node refused PUT http://x/kv/a: 413: value too large"
        );
        let e = refused(&Method::GET, "u".into(), StatusCode::BAD_GATEWAY, b"<html>");
        assert!(e.to_string().ends_with("502: <html>"), "{e}");
    }

    #[test]
    fn last_heard_is_short() {
        assert_eq!(last_heard(true, Some(0)), "-");
        assert_eq!(last_heard(false, None), "never");
        assert_eq!(last_heard(false, Some(120)), "120 ms ago");
        assert_eq!(last_heard(false, Some(2_345)), "2.3 s ago");
    }

    #[test]
    fn the_table_lists_every_member_without_color_codes() {
        let rows = vec![
            MemberRow {
                addr: "127.0.0.1:7001".into(),
                generation: 5,
                incarnation: 0,
                state: "alive".into(),
                meta: [("name".to_owned(), "alpha".to_owned())].into(),
                last_heard_ms: Some(0),
            },
            MemberRow {
                addr: "127.0.0.1:7002".into(),
                generation: 6,
                incarnation: 2,
                state: "suspect".into(),
                meta: Default::default(),
                last_heard_ms: Some(1_500),
            },
        ];
        let mut kv = std::collections::BTreeMap::new();
        let mut keys = serde_json::Map::new();
        keys.insert("a".into(), Value::Null);
        keys.insert("b".into(), Value::Null);
        kv.insert("127.0.0.1:7002".to_owned(), keys);
        let text = members_table(&rows, &kv, "127.0.0.1:7001", false).to_string();
        assert!(!text.contains('\u{1b}'), "no escape codes: {text}");
        for needle in ["127.0.0.1:7001 *", "name=alpha", "suspect", "1.5 s ago"] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        let line = text.lines().find(|l| l.contains("7002")).unwrap();
        assert!(line.contains(" 2 "), "two keys: {line}");
        assert_eq!(state_color("dead"), Color::Red);
        assert_eq!(state_color("left"), Color::Grey);
    }
}
