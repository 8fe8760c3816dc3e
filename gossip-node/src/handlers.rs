//! Event handlers: shell commands run on the member's events, as Serf's
//! event handlers are (issue #11).
//!
//! Each handler has an event filter and a command. For every event its
//! filter accepts, the command runs through `sh -c` with:
//!
//! - the event as one line of JSON on standard input ([`event_json`]);
//! - `GOSSIP_EVENT`: the kind, e.g. `member-join` ([`EventKind::name`]);
//! - `GOSSIP_SELF`: this member's advertised address, `host:port`;
//! - `GOSSIP_CLUSTER_ID`: the cluster id.
//!
//! A handler runs one command at a time, in event order, each for at most
//! its `timeout` (then its whole process group is killed). Handlers run on
//! tasks of their own, fed by a queue of `queue` events each: a slow,
//! hanging or failing handler is logged and counted but never blocks the
//! protocol or another handler; an event that finds the queue full is
//! dropped and counted. The counters ([`HandlerStats`]) are served in
//! `GET /metrics` as `gossip_handler_runs_total{handler, result}` (`ok`,
//! `failed`, `timeout`) and `gossip_handler_dropped_total{handler}`.
//!
//! Filters, as written in the config (`events = [...]`) or the `--handler
//! EVENTS=COMMAND` flag (comma-separated): `member-join`, `member-update`,
//! `member-suspect`, `member-failed`, `member-leave`, `key-change`,
//! `key-change:PREFIX` (keys starting with `PREFIX`), `broadcast`, and `*`
//! (every event).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gossip_core::Event;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::ConfigError;

/// Default [`HandlerConfig::timeout`]: 30 s.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`HandlerConfig::queue`]: 256 events.
pub const DEFAULT_HANDLER_QUEUE: usize = 256;

/// How long running handlers get to finish when the node stops, before they
/// are killed.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The kind of an [`Event`], as a handler filter and `GOSSIP_EVENT` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `member-join`: [`Event::Joined`].
    MemberJoin,
    /// `member-update`: [`Event::Updated`].
    MemberUpdate,
    /// `member-suspect`: [`Event::Suspected`].
    MemberSuspect,
    /// `member-failed`: [`Event::Failed`].
    MemberFailed,
    /// `member-leave`: [`Event::Left`].
    MemberLeave,
    /// `key-change`: [`Event::KeyChanged`].
    KeyChange,
    /// `broadcast`: [`Event::Broadcast`].
    Broadcast,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 7] = [
        EventKind::MemberJoin,
        EventKind::MemberUpdate,
        EventKind::MemberSuspect,
        EventKind::MemberFailed,
        EventKind::MemberLeave,
        EventKind::KeyChange,
        EventKind::Broadcast,
    ];

    /// The name, e.g. `member-join`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::MemberJoin => "member-join",
            EventKind::MemberUpdate => "member-update",
            EventKind::MemberSuspect => "member-suspect",
            EventKind::MemberFailed => "member-failed",
            EventKind::MemberLeave => "member-leave",
            EventKind::KeyChange => "key-change",
            EventKind::Broadcast => "broadcast",
        }
    }

    /// The kind of `event`.
    pub fn of(event: &Event) -> Self {
        match event {
            Event::Joined(_) => EventKind::MemberJoin,
            Event::Updated(_) => EventKind::MemberUpdate,
            Event::Suspected(_) => EventKind::MemberSuspect,
            Event::Failed(_) => EventKind::MemberFailed,
            Event::Left(_) => EventKind::MemberLeave,
            Event::KeyChanged { .. } => EventKind::KeyChange,
            Event::Broadcast(_) => EventKind::Broadcast,
        }
    }
}

/// One entry of a handler's filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// `*`: every event.
    Any,
    /// Every event of one kind.
    Kind(EventKind),
    /// `key-change:PREFIX`: key changes of keys that start with the prefix.
    KeyPrefix(String),
}

impl EventFilter {
    /// Parses one filter: a kind name, `key-change:PREFIX` or `*`.
    ///
    /// # Errors
    /// [`ConfigError::BadHandler`] naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if s == "*" {
            return Ok(EventFilter::Any);
        }
        if let Some(prefix) = s.strip_prefix("key-change:") {
            return Ok(EventFilter::KeyPrefix(prefix.to_owned()));
        }
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .map(EventFilter::Kind)
            .ok_or_else(|| {
                let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                ConfigError::BadHandler(format!(
                    "unknown event {:?} (expected one of: {}, key-change:PREFIX, *)",
                    s.chars().take(64).collect::<String>(),
                    names.join(", ")
                ))
            })
    }

    /// Whether this filter accepts `event`.
    pub fn accepts(&self, event: &Event) -> bool {
        match self {
            EventFilter::Any => true,
            EventFilter::Kind(kind) => *kind == EventKind::of(event),
            EventFilter::KeyPrefix(prefix) => {
                matches!(event, Event::KeyChanged { key, .. } if key.starts_with(prefix.as_str()))
            }
        }
    }
}

/// One event handler: which events, which command, how long it may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Its name in logs and metrics (`handler` label); default `handler-N`,
    /// N counted from 1 in configuration order.
    pub name: String,
    /// The events it runs on: an event any entry accepts.
    pub events: Vec<EventFilter>,
    /// The shell command, run by `sh -c`.
    pub command: String,
    /// Longest run; the command's process group is killed after it.
    pub timeout: Duration,
    /// Events waiting for it at most; more are dropped and counted.
    pub queue: usize,
}

impl HandlerConfig {
    /// A handler of the events `events` (comma-separated filters) running
    /// `command`, with default timeout and queue.
    ///
    /// # Errors
    /// [`ConfigError::BadHandler`] for an unknown event, no event, or an
    /// empty command.
    pub fn new(name: String, events: &[&str], command: &str) -> Result<Self, ConfigError> {
        let events = events
            .iter()
            .flat_map(|e| e.split(','))
            .filter(|e| !e.trim().is_empty())
            .map(EventFilter::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Err(ConfigError::BadHandler(format!(
                "{name}: no event to run on"
            )));
        }
        if command.trim().is_empty() {
            return Err(ConfigError::BadHandler(format!("{name}: empty command")));
        }
        Ok(Self {
            name,
            events,
            command: command.to_owned(),
            timeout: DEFAULT_HANDLER_TIMEOUT,
            queue: DEFAULT_HANDLER_QUEUE,
        })
    }

    /// Parses the `--handler` flag, `EVENTS=COMMAND` (e.g.
    /// `member-join,member-leave=./on-change.sh`).
    ///
    /// # Errors
    /// [`ConfigError::BadHandler`] if there is no `=`, or as
    /// [`HandlerConfig::new`].
    pub fn parse_flag(name: String, flag: &str) -> Result<Self, ConfigError> {
        let (events, command) = flag.split_once('=').ok_or_else(|| {
            ConfigError::BadHandler(format!(
                "{:?} is not EVENTS=COMMAND",
                flag.chars().take(64).collect::<String>()
            ))
        })?;
        Self::new(name, &[events], command)
    }

    /// Whether this handler runs on `event`.
    pub fn accepts(&self, event: &Event) -> bool {
        self.events.iter().any(|f| f.accepts(event))
    }
}

/// What every handler's command gets in its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerEnv {
    /// `GOSSIP_SELF`: this member's advertised address.
    pub self_addr: String,
    /// `GOSSIP_CLUSTER_ID`.
    pub cluster_id: String,
}

/// The counters of one handler.
#[derive(Debug, Default)]
pub struct HandlerCounters {
    /// The handler's name.
    pub name: String,
    /// Runs that exited with status 0.
    pub ok: AtomicU64,
    /// Runs that exited otherwise, or could not start.
    pub failed: AtomicU64,
    /// Runs killed at their timeout.
    pub timed_out: AtomicU64,
    /// Events dropped: the queue was full, or the handlers fell so far
    /// behind the member that its event channel skipped some.
    pub dropped: AtomicU64,
}

/// The counters of every handler, in configuration order.
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// One per handler.
    pub handlers: Vec<HandlerCounters>,
}

/// The event as handlers get it on standard input: one JSON object with
/// `"event"` (the kind's name) and
///
/// - member events: `"member"`, the member as `GET /members` lists it for
///   `member-join` and `member-update`, `{"addr", "generation"}` otherwise;
/// - `key-change`: `"owner"`, `"key"`, `"value"` (text, an array of bytes
///   if not UTF-8, `null` if deleted or expired) and `"version"`;
/// - `broadcast`: `"uuid"`, `"origin"` (`{"addr", "generation"}`),
///   `"version"`, `"ttl"` and `"payload"` (text, or an array of bytes).
pub fn event_json(event: &Event) -> Value {
    let kind = EventKind::of(event).name();
    match event {
        Event::Joined(m) | Event::Updated(m) => json!({"event": kind, "member": m}),
        Event::Suspected(id) | Event::Failed(id) | Event::Left(id) => {
            json!({"event": kind, "member": id})
        }
        Event::KeyChanged {
            owner,
            key,
            value,
            version,
        } => {
            let value = match value {
                None => Value::Null,
                Some(v) => match std::str::from_utf8(v) {
                    Ok(text) => Value::String(text.to_owned()),
                    Err(_) => json!(v.to_vec()),
                },
            };
            json!({"event": kind, "owner": owner, "key": key, "value": value, "version": version})
        }
        Event::Broadcast(msg) => {
            let mut v = serde_json::to_value(msg).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut v {
                fields.insert("event".to_owned(), kind.into());
            }
            v
        }
    }
}

/// The running handlers of one member. [`Handlers::stop`] ends them.
#[derive(Debug)]
pub struct Handlers {
    stats: Arc<HandlerStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Handlers {
    /// Starts one task per handler and one that hands them `events` (a
    /// subscription to the member's events, taken before anything happens
    /// that the handlers should see).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        events: broadcast::Receiver<Event>,
        handlers: Vec<HandlerConfig>,
        env: HandlerEnv,
    ) -> Self {
        let stats = Arc::new(HandlerStats {
            handlers: handlers
                .iter()
                .map(|h| HandlerCounters {
                    name: h.name.clone(),
                    ..HandlerCounters::default()
                })
                .collect(),
        });
        let (stop, stopped) = watch::channel(false);
        let env = Arc::new(env);
        let mut tasks = Vec::new();
        let mut queues = Vec::new();
        for (i, h) in handlers.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(h.queue.max(1));
            let h = Arc::new(h);
            queues.push((h.clone(), tx));
            tasks.push(tokio::spawn(run_handler(
                h,
                rx,
                env.clone(),
                stats.clone(),
                i,
                stopped.clone(),
            )));
        }
        if !queues.is_empty() {
            tasks.push(tokio::spawn(dispatch(
                events,
                queues,
                stats.clone(),
                stopped,
            )));
        }
        Self { stats, stop, tasks }
    }

    /// The counters, shared with `GET /metrics`.
    pub fn stats(&self) -> &Arc<HandlerStats> {
        &self.stats
    }

    /// Stops taking events, gives running commands a second to finish, then
    /// kills them; returns once every task has ended. Queued events are
    /// dropped.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for mut task in self.tasks {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// An event queued for a handler: its kind and its JSON text.
type Queued = (EventKind, Arc<String>);

/// Hands each event to every handler that accepts it, without waiting.
async fn dispatch(
    mut events: broadcast::Receiver<Event>,
    queues: Vec<(Arc<HandlerConfig>, mpsc::Sender<Queued>)>,
    stats: Arc<HandlerStats>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => return,
            e = events.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(missed = n, "event handlers fell behind; events dropped");
                for c in &stats.handlers {
                    c.dropped.fetch_add(n, Ordering::Relaxed);
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let kind = EventKind::of(&event);
        let mut text = None;
        for (i, (h, tx)) in queues.iter().enumerate() {
            if !h.accepts(&event) {
                continue;
            }
            let text = text
                .get_or_insert_with(|| Arc::new(event_json(&event).to_string()))
                .clone();
            if tx.try_send((kind, text)).is_err() {
                warn!(handler = %h.name, event = kind.name(), "handler queue full; event dropped");
                stats.handlers[i].dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs one handler's commands, one at a time, in order.
async fn run_handler(
    h: Arc<HandlerConfig>,
    mut queue: mpsc::Receiver<Queued>,
    env: Arc<HandlerEnv>,
    stats: Arc<HandlerStats>,
    index: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let counters = &stats.handlers[index];
    loop {
        let next = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => return,
            n = queue.recv() => n,
        };
        let Some((kind, json)) = next else { return };
        let counter = match run_once(&h, kind, &json, &env).await {
            Outcome::Ok => &counters.ok,
            Outcome::Failed => &counters.failed,
            Outcome::TimedOut => &counters.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

enum Outcome {
    Ok,
    Failed,
    TimedOut,
}

/// The first 1 KiB of a command's output, for the log.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]);
    text.trim_end().to_owned()
}

async fn run_once(h: &HandlerConfig, kind: EventKind, json: &str, env: &HandlerEnv) -> Outcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&h.command)
        .env("GOSSIP_EVENT", kind.name())
        .env("GOSSIP_SELF", &env.self_addr)
        .env("GOSSIP_CLUSTER_ID", &env.cluster_id)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout kills what it started too.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(handler = %h.name, error = %e, "cannot start the event handler");
            return Outcome::Failed;
        }
    };
    let group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = json.as_bytes().to_vec();
        line.push(b'\n');
        // A handler that does not read its input closes the pipe: fine.
        tokio::spawn(async move {
            let _ = stdin.write_all(&line).await;
        });
    }
    let waited = tokio::time::timeout(h.timeout, child.wait_with_output()).await;
    if waited.is_ok() {
        // The command ended by itself; leave whatever it started alone.
        std::mem::forget(group);
    } else {
        // Dropping the child's future killed it; its group may hold more.
        drop(group);
    }
    match waited {
        Ok(Ok(out)) if out.status.success() => {
            if !out.stdout.is_empty() {
                info!(handler = %h.name, event = kind.name(), output = %excerpt(&out.stdout), "event handler output");
            }
            debug!(handler = %h.name, event = kind.name(), "event handler ran");
            Outcome::Ok
        }
        Ok(Ok(out)) => {
            warn!(
                handler = %h.name,
                event = kind.name(),
                status = %out.status,
                stderr = %excerpt(&out.stderr),
                "event handler failed"
            );
            Outcome::Failed
        }
        Ok(Err(e)) => {
            warn!(handler = %h.name, error = %e, "cannot wait for the event handler");
            Outcome::Failed
        }
        Err(_) => {
            warn!(
                handler = %h.name,
                event = kind.name(),
                timeout_ms = h.timeout.as_millis() as u64,
                "event handler timed out; killed"
            );
            Outcome::TimedOut
        }
    }
}

/// Kills a command's process group when dropped: at its timeout, or when
/// the handler's task is aborted while it runs.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(all(test, unix))]
mod tests;
