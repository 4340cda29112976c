//! Figures from what the sandbox saw: windows, gaps, PUTs, and `status`.

use std::time::Duration;

use assignd::sandbox::Sandbox;

use super::*;

/// The most of `times` (sorted) that fall in one window `[t, t + per)`:
/// the busiest sliding window (the busiest one always starts at a call).
pub fn busiest_window(times: &[Duration], per: Duration) -> usize {
    busiest_window_at(times, per).0
}

/// [`busiest_window`], and the index of the first call in it; `times` are
/// offsets or instants.
pub fn busiest_window_at<T>(times: &[T], per: Duration) -> (usize, usize)
where
    T: Copy + Ord + std::ops::Add<Duration, Output = T>,
{
    let mut end = 0;
    let mut most = (0, 0);
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] < *t + per {
            end += 1;
        }
        if end - start > most.0 {
            most = (end - start, start);
        }
    }
    most
}

/// The longest time between two consecutive `times` (sorted), and when it began.
pub fn longest_gap(times: &[Duration]) -> (Duration, Duration) {
    times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default()
}

/// One `PUT /chats/assignee` as the sandbox saw it.
pub struct Put {
    pub chat: i64,
    /// When it arrived, since the sandbox started.
    pub at: Duration,
    /// When it arrived, on this process's monotonic clock.
    pub received: Instant,
}

/// Every `PUT /chats/assignee` so far, by arrival.
pub fn puts(sandbox: &Sandbox) -> Vec<Put> {
    let mut puts: Vec<Put> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1/chats/assignee")
        .map(|r| Put {
            chat: r.body.as_ref().and_then(|b| b["id"].as_i64()).unwrap_or(-1),
            at: r.at,
            received: r.received,
        })
        .collect();
    puts.sort_by_key(|p| p.at);
    puts
}

/// What a drain looked like from the sandbox, for an account limit of
/// `requests` per `per`:
/// - `busiest`: the most requests (any endpoint, any answer) that arrived
///   in one interval `[t, t + per)`, over every `t` that is an arrival (the
///   busiest sliding window always starts at one); when it holds more than
///   `requests`, `over` lists its calls (offset, chat or endpoint, status);
/// - `steady_share`: the PUTs by arrival less the first and the last `edge`
///   (start-up and tail): their `n - 1` intervals over the span from the
///   first to the last of them, as a share of `requests / per`;
/// - `repeats`: PUTs beyond the first for each chat, `worst` the most PUTs
///   for one chat;
/// - `gap`: the longest time between two consecutive PUTs, `gap_at` when
///   it began (since the sandbox started).
#[derive(Debug)]
pub struct Figures {
    pub requests: usize,
    pub puts: usize,
    pub chats_put: usize,
    pub repeats: usize,
    pub worst: usize,
    pub rejected: usize,
    pub busiest: usize,
    pub over: Option<String>,
    pub steady_share: f64,
    pub gap: Duration,
    pub gap_at: Duration,
}

/// [`Figures`] of what `sandbox` saw, for `requests` per `per`.
pub fn figures(sandbox: &Sandbox, requests: u32, per: Duration, edge: usize) -> Figures {
    let mut recorded = sandbox.requests();
    recorded.sort_by_key(|r| r.at);
    let all: Vec<Duration> = recorded.iter().map(|r| r.at).collect();
    let (busiest, first) = busiest_window_at(&all, per);
    let over = (busiest > requests as usize).then(|| {
        let calls: Vec<String> = recorded[first..first + busiest]
            .iter()
            .map(|r| {
                let what = match r.body.as_ref().and_then(|b| b["id"].as_i64()) {
                    Some(chat) if r.method == "PUT" => format!("chat {chat}"),
                    _ => format!("{} {}", r.method, r.path),
                };
                let offset = (r.at - all[first]).as_secs_f64() * 1000.0;
                format!("+{offset:.0}ms {what} {}", r.status)
            })
            .collect();
        format!(
            "from {:.3}s: {}",
            all[first].as_secs_f64(),
            calls.join(", ")
        )
    });
    let puts = puts(sandbox);
    let mut per_chat = std::collections::HashMap::<i64, usize>::new();
    for p in &puts {
        *per_chat.entry(p.chat).or_default() += 1;
    }
    let times: Vec<Duration> = puts.iter().map(|p| p.at).collect();
    let steady_share = if times.len() > 2 * edge + 1 {
        let steady = &times[edge..times.len() - edge];
        let span = (steady[steady.len() - 1] - steady[0]).as_secs_f64();
        (steady.len() - 1) as f64 / span / (requests as f64 / per.as_secs_f64())
    } else {
        0.0
    };
    let (gap, gap_at) = longest_gap(&times);
    Figures {
        requests: all.len(),
        puts: puts.len(),
        chats_put: per_chat.len(),
        repeats: per_chat.values().map(|n| n - 1).sum(),
        worst: per_chat.values().copied().max().unwrap_or(0),
        rejected: sandbox.rejected_429(),
        busiest,
        over,
        steady_share,
        gap,
        gap_at,
    }
}

impl Figures {
    /// Prints the figures under the label `what`.
    pub fn print(&self, what: &str, requests: u32, per: Duration) {
        println!(
            "{what}: {} requests ({} PUTs for {} chats, {} repeated, at most {} for one chat), \
             {} answered 429, busiest {per:?} window {} (limit {requests}), steady share {:.1}% of \
             the limit, longest gap between PUTs {:.2}s (at {:.2}s)",
            self.requests,
            self.puts,
            self.chats_put,
            self.repeats,
            self.worst,
            self.rejected,
            self.busiest,
            self.steady_share * 100.0,
            self.gap.as_secs_f64(),
            self.gap_at.as_secs_f64(),
        );
        if let Some(over) = &self.over {
            println!("  the window over the limit: {over}");
        }
    }
}

/// How many chats each daemon assigned, from its `outcome` log lines.
pub fn assigned_in_log(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("outcome") && l.contains("assigned"))
        .count()
}

/// The `daemons:` section of `assignd status`: (pid, marked with `word`)
/// per line; None without the section.
pub fn status_daemons(status: &str, word: &str) -> Option<Vec<(u32, bool)>> {
    let mut lines = status.lines().skip_while(|l| !l.starts_with("daemons:"));
    lines.next()?;
    let entries = lines
        .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
        .map(|l| {
            let pid = l
                .split("pid ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let marked = l.split(|c: char| !c.is_alphanumeric()).any(|w| w == word);
            (pid, marked)
        })
        .collect();
    Some(entries)
}

/// Waits until `assignd status` lists exactly `pids` as the live daemons
/// with `holder` alone marked `word`; the time it took.
pub async fn wait_status(app: &TestApp, pids: &[u32], holder: u32, word: &str) -> Duration {
    let since = Instant::now();
    let mut want: Vec<(u32, bool)> = pids.iter().map(|&p| (p, p == holder)).collect();
    want.sort();
    loop {
        let (code, out, err) = app.exec(&["status"]);
        let mut seen = status_daemons(&out, word).unwrap_or_default();
        seen.sort();
        if code == 0 && seen == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "`assignd status` should list the live daemons {want:?} as (pid, {word}) within 10 s \
             (a `daemons:` section, one indented line per daemon with `pid N` and `{word}` on \
             the holder); it printed (exit {code}):\n{out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
