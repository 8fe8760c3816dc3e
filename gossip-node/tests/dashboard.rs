//! The web dashboard in a real browser: a 3-member cluster of `gossip-node
//! run` processes, member 1's dashboard loaded in headless Chromium, which
//! must show all three members with their keys and a broadcast from member
//! 2; then member 3 is killed and, once member 1 has dropped it, a reload
//! must show the other two only, and the page with dead and left members
//! shown (`?all=1`) must show member 3 as dead.
//!
//! Needs a Chromium binary (`chromium`, `chromium-browser`, `google-chrome`
//! on the `PATH`, or the `CHROMIUM` environment variable). Without one (or
//! with `GOSSIP_SKIP_BROWSER_TESTS=1`) the test is skipped, loudly: a notice
//! on standard error, past the test harness's capture, says how to run it.
//! With `GOSSIP_REQUIRE_BROWSER_TESTS=1` (as `.ci/run` sets) a skip is a
//! failure instead. Screenshots go to `target/dashboard-screenshots/`.
//!
//! Every process started (the nodes and Chromium with its helpers) is killed
//! when its guard drops, also when the test fails.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gossip_node::cli::procs::{AdminClient, ClusterSpec, ProcessCluster};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

mod support;

use support::{BIN, FAST, SHORT_SUSPICION};

/// Names of the Chromium executable looked up on the `PATH`, in order.
const BROWSERS: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];
/// How long one Chromium run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual time the page gets to run its script: several polls of the
/// admin API (network fetches pause virtual time, so they all complete).
const VIRTUAL_TIME_MS: u32 = 3000;
/// The key every member sets.
const KEY: &str = "greeting";

/// The Chromium to use: `$CHROMIUM`, else the first of [`BROWSERS`] on the
/// `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "CHROMIUM={} is not a file", path.display());
        return Some(path);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    BROWSERS.iter().find_map(|name| {
        std::env::split_paths(&dirs)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A Chromium child in its own process group; the whole group (renderer,
/// GPU and zygote helpers included) is killed on drop.
struct BrowserProcess {
    child: Child,
    done: bool,
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        if !self.done {
            // The group id is the child's pid (`process_group(0)`).
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Headless Chromium with a throw-away profile.
struct Browser {
    exe: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn new(exe: PathBuf) -> Self {
        let profile = tempfile::Builder::new()
            .prefix("gossip-dashboard-chromium")
            .tempdir()
            .unwrap();
        Self { exe, profile }
    }

    /// Runs Chromium headless on `url` with `extra` flags; returns its
    /// standard output. Panics with its standard error if it fails or takes
    /// longer than [`BROWSER_TIMEOUT`].
    fn run(&self, url: &str, extra: &[OsString]) -> String {
        let mut user_data = OsString::from("--user-data-dir=");
        user_data.push(self.profile.path());
        let mut child = Command::new(&self.exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
            ])
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .arg(user_data)
            .args(extra)
            .arg(url)
            // A profile and caches of its own, whatever HOME is.
            .env("HOME", self.profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        let mut guard = BrowserProcess { child, done: false };
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let status = loop {
            if let Some(status) = guard.child.try_wait().unwrap() {
                guard.done = true;
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not finish within {BROWSER_TIMEOUT:?} on {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Helpers may outlive the main process for a moment; they go with
        // their group.
        let _ = killpg(Pid::from_raw(guard.child.id() as i32), Signal::SIGKILL);
        let out = out.join().unwrap();
        let err = err.join().unwrap();
        assert!(
            status.success(),
            "chromium failed ({status}) on {url}:\n{err}"
        );
        out
    }

    /// The page at `url` after its script has run: the serialized DOM.
    fn dump_dom(&self, url: &str) -> String {
        self.run(url, &["--dump-dom".into()])
    }

    /// Saves a 1280×800 screenshot of `url` as the PNG file `path`.
    fn screenshot(&self, url: &str, path: &Path) {
        let mut arg = OsString::from("--screenshot=");
        arg.push(path);
        self.run(url, &[arg, "--window-size=1280,800".into()]);
    }
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The member rows of a dashboard's DOM: address → state, from the
/// `data-member` and `data-state` attributes of each `<tr>`.
fn member_rows(dom: &str) -> BTreeMap<String, String> {
    dom.split("<tr")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((attr(tag, "data-member")?, attr(tag, "data-state")?))
        })
        .collect()
}

/// The value of attribute `name` in the text of one start tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// The status line's start tag.
fn status_tag(dom: &str) -> &str {
    let start = dom
        .find("id=\"status\"")
        .expect("no status line in the page");
    let from = dom[..start].rfind('<').unwrap();
    &dom[from..start + dom[start..].find('>').unwrap()]
}

/// Loads the dashboard at `url` until it shows exactly the rows `want`
/// (address → state), each alive one with its key [`KEY`], the broadcast
/// `uuid` and a healthy status line, or `timeout` passes.
fn until_page_shows(
    browser: &Browser,
    url: &str,
    want: &BTreeMap<String, &str>,
    uuid: &str,
    timeout: Duration,
) {
    let alive = want.values().filter(|s| **s == "alive").count();
    let deadline = Instant::now() + timeout;
    loop {
        let dom = browser.dump_dom(url);
        let rows = member_rows(&dom);
        let status = status_tag(&dom).to_owned();
        let shown: BTreeMap<String, &str> =
            rows.iter().map(|(a, s)| (a.clone(), s.as_str())).collect();
        let keys = dom.matches(&format!("data-key=\"{KEY}\"")).count();
        let broadcast = dom.contains(&format!("data-uuid=\"{uuid}\""));
        if shown == *want
            && keys == alive
            && broadcast
            && attr(&status, "data-ok").as_deref() == Some("true")
            && attr(&status, "data-members") == Some(want.len().to_string())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard at {url} shows {rows:?} with {keys} {KEY} keys, broadcast \
             {uuid} shown: {broadcast} ({status}); want {want:?}, the alive with theirs; \
             page:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where screenshots go: `target/dashboard-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check_png(path: &Path) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
    println!("dashboard screenshot: {}", path.display());
}

/// The addresses `admin` lists in `/members`, or why it could not tell.
fn members_of(
    rt: &tokio::runtime::Runtime,
    client: &AdminClient,
    admin: SocketAddr,
) -> Result<BTreeSet<String>, String> {
    let list = rt
        .block_on(client.members(admin))
        .map_err(|e| e.to_string())?;
    Ok(list.into_iter().map(|m| m.addr).collect())
}

/// Every address in `addrs`, expected alive.
fn alive(addrs: &BTreeSet<String>) -> BTreeMap<String, &'static str> {
    addrs.iter().map(|a| (a.clone(), "alive")).collect()
}

/// Broadcasts the JSON `payload` from the member at `admin` (`POST
/// /gossip`); returns the broadcast's UUID.
async fn broadcast(admin: SocketAddr, payload: &str) -> String {
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    let answer: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .post(format!("http://{admin}/gossip"))
        .json(&serde_json::json!({ "payload": payload }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uuid in {answer}"))
        .to_owned()
}

/// Waits until every admin endpoint in `admins` lists exactly `want`.
fn until_members(
    rt: &tokio::runtime::Runtime,
    client: &AdminClient,
    admins: &[SocketAddr],
    want: &BTreeSet<String>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: Vec<_> = admins.iter().map(|&a| members_of(rt, client, a)).collect();
        if seen.iter().all(|s| s.as_ref() == Ok(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members not {want:?} within {timeout:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dashboard_shows_every_member_live_and_drops_a_killed_one() {
    let flag = |name| std::env::var_os(name).is_some_and(|v| v == "1");
    let chromium = if flag("GOSSIP_SKIP_BROWSER_TESTS") {
        Err("GOSSIP_SKIP_BROWSER_TESTS=1 is set".to_owned())
    } else {
        find_chromium().ok_or_else(|| {
            format!("no Chromium found (looked for {BROWSERS:?} on PATH and $CHROMIUM)")
        })
    };
    let chromium = match chromium {
        Ok(chromium) => chromium,
        Err(why) => {
            let notice = format!(
                "SKIPPED the dashboard browser test: {why}. To run it, install Chromium \
                 (`apt-get install -y chromium` on Debian/Ubuntu) or point CHROMIUM at a Chrome \
                 or Chromium binary."
            );
            assert!(
                !flag("GOSSIP_REQUIRE_BROWSER_TESTS"),
                "{notice} GOSSIP_REQUIRE_BROWSER_TESTS=1 forbids skipping it."
            );
            // Straight to the process's standard error: the harness
            // captures only the print macros, and a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "\n*** {notice} ***\n");
            return;
        }
    };
    let browser = Browser::new(chromium);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = AdminClient::new(Duration::from_secs(2)).unwrap();

    let logs = tempfile::Builder::new()
        .prefix("gossip-dashboard-logs")
        .tempdir()
        .unwrap();
    let mut spec = ClusterSpec::new(BIN.into(), 3, logs.path().to_owned());
    let cluster_id = format!("dashboard-{}", std::process::id());
    spec.args = ["--cluster-id", &cluster_id]
        .iter()
        .chain(FAST.iter())
        .chain(SHORT_SUSPICION.iter())
        .map(OsString::from)
        .collect();
    spec.node_args = (1..=3)
        .map(|i| vec!["--meta".into(), format!("name=node-{i}").into()])
        .collect();
    let mut cluster = ProcessCluster::spawn(&spec).unwrap();
    rt.block_on(cluster.wait_until_up(&client)).unwrap();
    let admins: Vec<SocketAddr> = cluster.nodes().iter().map(|n| n.admin()).collect();
    for (i, &admin) in admins.iter().enumerate() {
        let value = format!("hello from member {} of the dashboard test", i + 1);
        rt.block_on(client.put_key(admin, KEY, value)).unwrap();
    }
    let mut all: BTreeSet<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.addr().to_owned())
        .collect();
    until_members(&rt, &client, &admins, &all, Duration::from_secs(20));

    // Member 2 broadcasts; member 1's dashboard shows all three, alive, and
    // the broadcast.
    let uuid = rt.block_on(broadcast(admins[1], "{\"deploy\": \"v1.4.2\"}"));
    let url = format!("http://{}/", admins[0]);
    let started = Instant::now();
    until_page_shows(&browser, &url, &alive(&all), &uuid, Duration::from_secs(60));
    println!("page showed 3 members after {:?}", started.elapsed());
    let dir = screenshot_dir();
    let shot = dir.join("dashboard-3-members.png");
    browser.screenshot(&url, &shot);
    check_png(&shot);

    // Member 3 crashes; once member 1 has dropped it, so does the page.
    let gone = cluster.nodes()[2].addr().to_owned();
    assert!(cluster.kill(2), "member 3 had already exited");
    all.remove(&gone);
    until_members(&rt, &client, &admins[..2], &all, Duration::from_secs(30));
    until_page_shows(&browser, &url, &alive(&all), &uuid, Duration::from_secs(60));
    let shot = dir.join("dashboard-after-kill.png");
    browser.screenshot(&url, &shot);
    check_png(&shot);

    // With "show dead and left members" on, member 1 still shows member 3,
    // as dead, while it remembers its tombstone (a minute by default).
    let with_dead = format!("{url}?all=1");
    let mut want = alive(&all);
    want.insert(gone, "dead");
    until_page_shows(&browser, &with_dead, &want, &uuid, Duration::from_secs(60));
    let shot = dir.join("dashboard-with-dead.png");
    browser.screenshot(&with_dead, &shot);
    check_png(&shot);
}

#[test]
fn member_rows_reads_addresses_and_states() {
    let dom = r#"<table><tr><th>Address</th></tr>
        <tr data-member="127.0.0.1:7001" data-state="alive" data-version="3"><td>x</td></tr>
        <tr class="changed" data-member="127.0.0.1:7002" data-state="suspect"></tr>
        <tr><td colspan="8">no members</td></tr></table>"#;
    let rows = member_rows(dom);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows["127.0.0.1:7001"], "alive");
    assert_eq!(rows["127.0.0.1:7002"], "suspect");
    assert!(member_rows("<tr data-member=\"a\"").is_empty());
}
