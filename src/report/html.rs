//! `report --html`: one self-contained page (inline CSS and SVG, no
//! script, no external asset). Every text from the database or the rules
//! goes through [`escape`].

use std::fmt::Write as _;

use super::{DayFigures, Report, human_ms};

/// Colours for the agents' bars, in turn.
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.25em .75em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
svg text{font:11px system-ui,sans-serif;fill:#444}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}";

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn wait_text(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), human_ms)
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>assignd report</title><style>{STYLE}</style></head><body>\n\
         <h1>assignd report</h1><p>{} to {} (days in {})</p>\n",
        escape(&r.since),
        escape(&r.until),
        escape(&r.timezone)
    );
    totals(&mut page, r);
    chats(&mut page, r);
    page.push_str("<h2>Assignments per agent per day</h2>\n");
    page.push_str(&bars(r));
    page.push_str("<h2>Time in queue per day (p50, p95)</h2>\n");
    page.push_str(&lines(&r.days));
    agents(&mut page, r);
    pools(&mut page, r);
    dead_letters(&mut page, r);
    page.push_str("</body></html>\n");
    page
}

fn totals(page: &mut String, r: &Report) {
    let t = &r.totals;
    let rows = [
        ("Assignments", t.assignments.to_string()),
        ("Reassignments", t.reassignments.to_string()),
        ("Escalations", t.escalations.to_string()),
        ("Hand-backs", t.handbacks.to_string()),
        (
            "After hours",
            format!("{} ({:.1}%)", t.after_hours, t.after_hours_share * 100.0),
        ),
        ("Time in queue p50", wait_text(r.queue_wait.p50_ms)),
        ("Time in queue p95", wait_text(r.queue_wait.p95_ms)),
        ("Dead letters", r.dead_letters.len().to_string()),
    ];
    key_values(page, &rows);
}

/// The measure of routing over the chats that arrived in the window.
fn chats(page: &mut String, r: &Report) {
    let c = &r.chats;
    let (by, a) = (&c.time_to_assignment, &c.after_hours);
    let count = |n: usize| format!("{n} chats");
    let rows = [
        ("Chats arrived", c.arrived.to_string()),
        (
            "Replied",
            format!("{} ({:.1}%)", c.replied, c.reply_share * 100.0),
        ),
        ("First reply p50", wait_text(c.first_reply.p50_ms)),
        ("First reply p95", wait_text(c.first_reply.p95_ms)),
        ("Assigned by assignd", count(by.assignd.count)),
        (
            "Time to assignment p50 (assignd)",
            wait_text(by.assignd.p50_ms),
        ),
        (
            "Time to assignment p95 (assignd)",
            wait_text(by.assignd.p95_ms),
        ),
        ("Assigned by others", count(by.other.count)),
        (
            "Time to assignment p50 (others)",
            wait_text(by.other.p50_ms),
        ),
        (
            "Time to assignment p95 (others)",
            wait_text(by.other.p95_ms),
        ),
        (
            "After-hours reply rate",
            format!(
                "{} of {} ({:.1}%)",
                a.replied,
                a.chats,
                a.reply_rate * 100.0
            ),
        ),
    ];
    page.push_str("<h2>Replies and assignments</h2>\n");
    key_values(page, &rows);
}

/// A table of (name, value) rows; the values escaped.
fn key_values(page: &mut String, rows: &[(&str, String)]) {
    page.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(
            page,
            "<tr><th>{k}</th><td class=\"n\">{}</td></tr>",
            escape(v)
        );
    }
    page.push_str("</table>\n");
}

fn agents(page: &mut String, r: &Report) {
    page.push_str(
        "<h2>Agents</h2><table><tr><th>agent</th><th>assignments</th><th>reassignments</th>\
         <th>escalations</th><th>hand-backs</th><th>after hours</th><th>wait p50</th>\
         <th>wait p95</th></tr>\n",
    );
    for a in &r.agents {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&a.agent),
            a.assignments,
            a.reassignments,
            a.escalations,
            a.handbacks,
            a.after_hours,
            wait_text(a.queue_wait.p50_ms),
            wait_text(a.queue_wait.p95_ms)
        );
    }
    page.push_str("</table>\n");
}

fn pools(page: &mut String, r: &Report) {
    page.push_str(
        "<h2>Pools</h2><table><tr><th>pool</th><th>assignments</th><th>max</th><th>min</th>\
         <th>Jain</th><th>escalations</th><th>wait p50</th><th>wait p95</th></tr>\n",
    );
    for p in &r.pools {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.3}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&p.fairness.pool),
            p.assignments,
            p.fairness.max,
            p.fairness.min,
            p.fairness.jain,
            p.escalations,
            wait_text(p.queue_wait.p50_ms),
            wait_text(p.queue_wait.p95_ms)
        );
    }
    page.push_str("</table>\n");
}

fn dead_letters(page: &mut String, r: &Report) {
    page.push_str("<h2>Dead letters</h2>\n");
    if r.dead_letters.is_empty() {
        page.push_str("<p>None.</p>\n");
        return;
    }
    page.push_str("<table><tr><th>row</th><th>chat</th><th>when</th><th>reason</th></tr>\n");
    for d in &r.dead_letters {
        let chat = match &d.chat_id {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let _ = writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.row,
            escape(&chat),
            escape(d.at.as_deref().unwrap_or("-")),
            escape(d.reason.as_deref().unwrap_or("-"))
        );
    }
    page.push_str("</table>\n");
}

/// A y axis from 0 to `max` with a few labelled grid lines.
fn axis(svg: &mut String, max: f64, label: impl Fn(f64) -> String) {
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = HEIGHT - BOTTOM - (HEIGHT - BOTTOM - 10.0) * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y + 4.0,
            escape(&label(v))
        );
    }
}

/// The x position of day `i` of `n` (its slot's centre) and a slot's width.
fn slot(i: usize, n: usize) -> (f64, f64) {
    let w = (WIDTH - LEFT) / n.max(1) as f64;
    (LEFT + w * (i as f64 + 0.5), w)
}

fn day_labels(svg: &mut String, days: &[DayFigures]) {
    let every = days.len().div_ceil(14).max(1);
    for (i, d) in days.iter().enumerate().step_by(every) {
        let (x, _) = slot(i, days.len());
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            HEIGHT - 8.0,
            escape(d.date.get(5..).unwrap_or(&d.date))
        );
    }
}

/// Stacked bars: each day's assignments, one colour per agent.
fn bars(r: &Report) -> String {
    let names: Vec<&str> = r
        .agents
        .iter()
        .filter(|a| a.assignments > 0)
        .map(|a| a.agent.as_str())
        .collect();
    let max = r
        .days
        .iter()
        .map(|d| d.assignments.values().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = format!(
        "<svg role=\"img\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
    );
    axis(&mut svg, f64::from(max), |v| format!("{v:.0}"));
    let scale = (HEIGHT - BOTTOM - 10.0) / f64::from(max);
    for (i, day) in r.days.iter().enumerate() {
        let (x, w) = slot(i, r.days.len());
        let mut y = HEIGHT - BOTTOM;
        for (k, name) in names.iter().enumerate() {
            let n = day.assignments.get(*name).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = f64::from(n) * scale;
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} {}: {n}</title></rect>",
                x - w * 0.35,
                w * 0.7,
                PALETTE[k % PALETTE.len()],
                escape(&day.date),
                escape(name)
            );
        }
    }
    day_labels(&mut svg, &r.days);
    svg.push_str("</svg>\n<p class=\"legend\">");
    for (k, name) in names.iter().enumerate() {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[k % PALETTE.len()],
            escape(name)
        );
    }
    svg.push_str("</p>\n");
    svg
}

/// p50 and p95 of each day's time in queue as two lines (days without an
/// assignment from the queue are skipped).
fn lines(days: &[DayFigures]) -> String {
    let max = days
        .iter()
        .filter_map(|d| d.queue_wait.p95_ms)
        .max()
        .unwrap_or(0)
        .max(1000);
    let mut svg = format!(
        "<svg role=\"img\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
    );
    axis(&mut svg, max as f64, |v| human_ms(v as i64));
    let scale = (HEIGHT - BOTTOM - 10.0) / max as f64;
    for (which, colour, pick) in [
        (
            "p50",
            "#4e79a7",
            (|d: &DayFigures| d.queue_wait.p50_ms) as fn(&DayFigures) -> _,
        ),
        ("p95", "#e15759", |d: &DayFigures| d.queue_wait.p95_ms),
    ] {
        let points: Vec<(f64, f64, &str, i64)> = days
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let v = pick(d)?;
                let (x, _) = slot(i, days.len());
                Some((x, HEIGHT - BOTTOM - v as f64 * scale, d.date.as_str(), v))
            })
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, y, _, _)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y, date, v) in points {
            let _ = write!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"><title>{} {which}: {}</title></circle>",
                escape(date),
                human_ms(v)
            );
        }
    }
    day_labels(&mut svg, days);
    svg.push_str(
        "</svg>\n<p class=\"legend\"><span><i style=\"background:#4e79a7\"></i>p50</span>\
         <span><i style=\"background:#e15759\"></i>p95</span></p>\n",
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<b>a & 'b'</b> \"c\""),
            "&lt;b&gt;a &amp; &#39;b&#39;&lt;/b&gt; &quot;c&quot;"
        );
    }
}
