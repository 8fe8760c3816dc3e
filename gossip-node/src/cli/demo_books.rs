//! `gossip-node demo books`: every member of a local cluster keeps
//! re-choosing its favourite book, and a live table shows how far each
//! choice has spread.
//!
//! The demo driver (this process) starts the cluster as `gossip-node demo`
//! does ([`crate::cli::demo`], [`crate::cli::procs`]), then, for each member, every
//! `--every-secs` (each wait jittered by ±50%) picks another title from the
//! list shipped with the binary ([`books`]) and sets it as the member's key
//! [`BOOK_KEY`] through its admin API (`PUT /kv/favorite_book`). The owner
//! gives each write a new version, and gossip carries it to the others.
//!
//! Twice a second it polls every member's `/members` and `/kv` and draws one
//! row per member: its process id, its current favourite and that write's
//! version, and, for every member, the version of that member's favourite
//! this one has seen, marked when it is behind the owner's latest, `?` when
//! it suspects the owner, and `gone` once it has dropped the owner.
//! Killing a member's process (`kill -9 PID`) shows its row as exited while
//! the others first suspect it, then drop it, and carry on.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comfy_table::{Cell, Color};

use crate::cli::demo::Screen;
use crate::cli::error::{DemoError, ProcsError};
use crate::cli::procs::{AdminClient, ProcessCluster};

/// The key each member's favourite book is stored under.
pub const BOOK_KEY: &str = "favorite_book";
/// The titles, one per line (`#` comments and blank lines aside).
const BOOKS_TXT: &str = include_str!("demo_books/books.txt");
/// Period of the admin polls and of the table.
const TICK: Duration = Duration::from_millis(500);
/// Timeout of one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Above this many members the table shows a count of members up to date
/// instead of one column per member.
const MAX_COLUMNS: usize = 10;

/// The titles the members choose from: the lines of `books.txt` shipped
/// with the binary, in order.
pub fn books() -> Vec<&'static str> {
    BOOKS_TXT
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A small pseudo-random generator (xorshift64*), seeded from the standard
/// library's per-process random hasher keys. Only for picking titles and
/// jitter, never for anything that must be unpredictable.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self(RandomState::new().hash_one(std::process::id()) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), up to a negligible bias.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `every` scaled by a factor uniform in [0.5, 1.5).
    fn jittered(&mut self, every: Duration) -> Duration {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        every.mul_f64(0.5 + unit)
    }

    /// A title other than `current` (if there is another).
    fn pick<'a>(&mut self, books: &[&'a str], current: Option<&str>) -> &'a str {
        let others: Vec<&'a str> = books
            .iter()
            .copied()
            .filter(|b| Some(*b) != current)
            .collect();
        let from = if others.is_empty() { books } else { &others };
        from[self.below(from.len())]
    }
}

/// What one poll of a member's admin API saw.
#[derive(Clone, Debug, Default)]
struct View {
    /// The member answered.
    up: bool,
    /// Its live members: address → `alive` or `suspect`.
    members: BTreeMap<String, String>,
    /// The favourites it holds: owner address → (title, version).
    books: BTreeMap<String, (String, u64)>,
}

async fn poll(client: &AdminClient, admin: SocketAddr) -> View {
    let fetch =
        async { Ok::<_, ProcsError>((client.members(admin).await?, client.kv(admin).await?)) };
    let Ok((members, kv)) = fetch.await else {
        return View::default();
    };
    View {
        up: true,
        members: members.into_iter().map(|m| (m.addr, m.state)).collect(),
        books: kv
            .into_iter()
            .filter_map(|(owner, mut keys)| {
                let entry = keys.remove(BOOK_KEY)?;
                let title = match entry.value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                Some((owner, (title, entry.version)))
            })
            .collect(),
    }
}

/// One member as the table shows it.
struct Row {
    index: usize,
    pid: u32,
    addr: String,
    /// `None` while running, else how the process ended.
    exited: Option<String>,
    view: View,
}

/// The owner's latest version of each member's favourite, as last seen at
/// its owner (kept after the owner exits).
type Latest = BTreeMap<String, u64>;

fn render(rows: &[Row], latest: &Latest, elapsed: Duration, every: Duration, tty: bool) -> String {
    let n = rows.len();
    let running = rows.iter().filter(|r| r.exited.is_none()).count();
    let columns = n <= MAX_COLUMNS;
    let mut table = crate::cli::term::new_table(tty);
    let mut header: Vec<String> = [
        "member",
        "pid",
        "address",
        "state",
        "favourite book",
        "version",
    ]
    .map(str::to_owned)
    .to_vec();
    if columns {
        header.extend(rows.iter().map(|r| format!("sees #{}", r.index)));
    } else {
        header.push("up to date on".to_owned());
    }
    table.set_header(header);
    for row in rows {
        let (state, book, version) = match (&row.exited, row.view.up) {
            (Some(how), _) => (Cell::new(how).fg(Color::Red), String::new(), String::new()),
            (None, false) => (
                Cell::new("unreachable").fg(Color::Red),
                String::new(),
                String::new(),
            ),
            (None, true) => {
                let (book, version) = row
                    .view
                    .books
                    .get(&row.addr)
                    .map_or((String::new(), String::new()), |(b, v)| {
                        (b.clone(), v.to_string())
                    });
                (Cell::new("running").fg(Color::Green), book, version)
            }
        };
        let mut cells = vec![
            Cell::new(row.index),
            Cell::new(row.pid),
            Cell::new(&row.addr),
            state,
            Cell::new(book),
            Cell::new(version),
        ];
        if columns {
            cells.extend(rows.iter().map(|owner| seen_cell(row, owner, latest, tty)));
        } else {
            let current = rows
                .iter()
                .filter(|r| r.exited.is_none() && r.view.up)
                .filter(|r| {
                    let seen = r.view.books.get(&row.addr).map(|(_, v)| *v);
                    seen.is_some() && seen == latest.get(&row.addr).copied()
                })
                .count();
            cells.push(Cell::new(format!("{current}/{running}")));
        }
        table.add_row(cells);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "gossip-node demo books: {running} of {n} members running, new favourites every {}s ±50%, \
         {:.1}s elapsed",
        every.as_secs(),
        elapsed.as_secs_f64()
    );
    if tty {
        out.push_str(" (Ctrl-C to stop)");
    }
    out.push('\n');
    out.push_str(&table.to_string());
    out.push('\n');
    if columns {
        let behind = if tty { "yellow" } else { "*" };
        let _ = writeln!(
            out,
            "sees #k: the version of member k's favourite this member holds ({behind}: behind,\n\
             ?: suspects k, gone: dropped k). `kill -9` a pid to watch the others detect it."
        );
    }
    out
}

/// The cell of row `row`, column `owner`: the version of `owner`'s
/// favourite that `row` holds.
fn seen_cell(row: &Row, owner: &Row, latest: &Latest, tty: bool) -> Cell {
    if row.exited.is_some() || !row.view.up {
        return Cell::new("");
    }
    let Some(state) = row.view.members.get(&owner.addr) else {
        return Cell::new("gone").fg(Color::Red);
    };
    let Some((_, seen)) = row.view.books.get(&owner.addr) else {
        return Cell::new("-");
    };
    let behind = latest.get(&owner.addr).is_some_and(|v| seen < v);
    let mut text = seen.to_string();
    if behind && !tty {
        text.push('*');
    }
    if state == "suspect" {
        text.push('?');
    }
    let cell = Cell::new(text);
    if state == "suspect" {
        cell.fg(Color::Magenta)
    } else if behind {
        cell.fg(Color::Yellow)
    } else if row.addr == owner.addr {
        cell
    } else {
        cell.fg(Color::Green)
    }
}

/// Sets `title` as the favourite of the member at `admin` (node `index`).
async fn choose(
    client: &AdminClient,
    index: usize,
    admin: SocketAddr,
    title: &str,
) -> Result<(), DemoError> {
    client
        .put_key(admin, BOOK_KEY, title.to_owned())
        .await
        .map_err(|e| DemoError::Admin {
            index,
            reason: match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        })
}

/// Waits for the members to come up, gives each a first favourite, then
/// re-chooses them about every `every` and draws the table until `duration`
/// after `start` (forever if `None`).
///
/// # Errors
/// A member that does not come up, a first choice that cannot be set, or
/// standard output that cannot be written. Later failures to set a
/// favourite (a member killed meanwhile) are not errors: the table shows
/// the member's state.
pub(crate) async fn show(
    cluster: &mut ProcessCluster,
    start: Instant,
    duration: Option<Duration>,
    every: Duration,
) -> Result<(), DemoError> {
    let client = AdminClient::new(REQUEST_TIMEOUT)?;
    let books = books();
    let mut rng = Rng::new();
    cluster.wait_until_up(&client).await?;
    let mut current: Vec<&str> = Vec::with_capacity(cluster.nodes().len());
    let mut due: Vec<Instant> = Vec::with_capacity(cluster.nodes().len());
    for node in cluster.nodes() {
        let title = rng.pick(&books, None);
        choose(&client, node.index(), node.admin(), title).await?;
        current.push(title);
        due.push(Instant::now() + rng.jittered(every));
    }

    let mut screen = Screen::new();
    let mut latest = Latest::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for (i, node) in cluster.nodes_mut().iter_mut().enumerate() {
            if Instant::now() < due[i] || node.poll_exit().is_some() {
                continue;
            }
            let title = rng.pick(&books, Some(current[i]));
            // A member killed meanwhile cannot take it; its row says so.
            if choose(&client, node.index(), node.admin(), title)
                .await
                .is_ok()
            {
                current[i] = title;
            }
            due[i] = Instant::now() + rng.jittered(every);
        }

        let mut polls = tokio::task::JoinSet::new();
        for (i, node) in cluster.nodes().iter().enumerate() {
            let (client, admin) = (client.clone(), node.admin());
            polls.spawn(async move { (i, poll(&client, admin).await) });
        }
        let mut views = vec![View::default(); cluster.nodes().len()];
        while let Some(joined) = polls.join_next().await {
            if let Ok((i, view)) = joined {
                views[i] = view;
            }
        }
        let mut rows = Vec::with_capacity(views.len());
        for (node, view) in cluster.nodes_mut().iter_mut().zip(views) {
            let exited = node.poll_exit().map(|s| format!("exited ({s})"));
            if exited.is_none()
                && let Some((_, version)) = view.books.get(node.addr())
            {
                latest.insert(node.addr().to_owned(), *version);
            }
            rows.push(Row {
                index: node.index(),
                pid: node.pid(),
                addr: node.addr().to_owned(),
                exited,
                view,
            });
        }
        let elapsed = start.elapsed();
        let done = duration.is_some_and(|d| elapsed >= d);
        let text = render(&rows, &latest, elapsed, every, screen.tty());
        screen.draw(&text, done)?;
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_list_is_usable() {
        let books = books();
        assert!(books.len() >= 30, "{}", books.len());
        for b in &books {
            assert!(b.len() <= 60 && !b.contains('|'), "{b:?}");
        }
        let mut sorted = books.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), books.len(), "duplicate titles");
    }

    #[test]
    fn picks_change_the_book_and_jitter_stays_in_range() {
        let books = books();
        let mut rng = Rng::new();
        let mut current = books[0];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let next = rng.pick(&books, Some(current));
            assert_ne!(next, current);
            seen.insert(next);
            current = next;
            let d = rng.jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(5) && d < Duration::from_secs(15),
                "{d:?}"
            );
        }
        assert!(
            seen.len() > books.len() / 2,
            "only {} titles picked",
            seen.len()
        );
        assert_eq!(rng.pick(&["only"], Some("only")), "only");
    }

    fn row(
        index: usize,
        addr: &str,
        exited: Option<&str>,
        members: &[(&str, &str)],
        held: &[(&str, u64)],
    ) -> Row {
        Row {
            index,
            pid: 100 + index as u32,
            addr: addr.to_owned(),
            exited: exited.map(str::to_owned),
            view: View {
                up: exited.is_none(),
                members: members
                    .iter()
                    .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
                    .collect(),
                books: held
                    .iter()
                    .map(|(a, v)| ((*a).to_owned(), (format!("book of {a}"), *v)))
                    .collect(),
            },
        }
    }

    #[test]
    fn plain_table_marks_behind_suspect_and_gone() {
        let rows = vec![
            row(
                1,
                "a:1",
                None,
                &[("a:1", "alive"), ("b:1", "alive")],
                &[("a:1", 4), ("b:1", 2)],
            ),
            row(
                2,
                "b:1",
                None,
                &[("a:1", "alive"), ("b:1", "alive"), ("c:1", "suspect")],
                &[("a:1", 4), ("b:1", 3), ("c:1", 5)],
            ),
            row(3, "c:1", Some("exited (signal: 9)"), &[], &[]),
        ];
        let latest = Latest::from([
            ("a:1".to_owned(), 4),
            ("b:1".to_owned(), 3),
            ("c:1".to_owned(), 5),
        ]);
        let text = render(
            &rows,
            &latest,
            Duration::from_secs(3),
            Duration::from_secs(10),
            false,
        );
        let lines: Vec<&str> = text.lines().collect();
        let cells = |pid: &str| -> Vec<String> {
            let line = lines.iter().find(|l| l.contains(pid)).unwrap();
            line.split('|')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        };
        assert_eq!(
            cells("101"),
            [
                "1",
                "101",
                "a:1",
                "running",
                "book of a:1",
                "4",
                "4",
                "2*",
                "gone"
            ]
        );
        assert_eq!(
            cells("102"),
            [
                "2",
                "102",
                "b:1",
                "running",
                "book of b:1",
                "3",
                "4",
                "3",
                "5?"
            ]
        );
        assert_eq!(cells("103"), ["3", "103", "c:1", "exited (signal: 9)"]);
        assert!(
            text.starts_with("gossip-node demo books: 2 of 3 members running"),
            "{text}"
        );
    }
}
