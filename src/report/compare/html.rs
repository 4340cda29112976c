//! `report --compare --html`: the comparison as one self-contained page:
//! each measure's figures and verdict, and a chart of each difference with
//! its confidence interval against zero (one row a measure, each on its
//! own scale). No script, no external asset; every text escaped.

use std::fmt::Write as _;

use super::{Comparison, MeasureResult};
use crate::report::html::escape;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.25em .75em;text-align:left}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
p.headline{font-size:1.1em;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#444}";

const WIDTH: f64 = 760.0;
const ROW: f64 = 34.0;
const LABEL: f64 = 170.0;

/// The whole page; `window` says which stretch of time it covers.
pub fn render(c: &Comparison, window: &str) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>assignd: {b} against {a}</title><style>{STYLE}</style></head><body>\n\
         <h1>assignd: {b} against {a}</h1><p>{window} &middot; {an} and {bn} chats</p>\n\
         <p class=\"headline\">{headline}</p>\n",
        a = escape(&c.a),
        b = escape(&c.b),
        window = escape(window),
        an = c.a_chats,
        bn = c.b_chats,
        headline = escape(&c.headline),
    );
    page.push_str("<h2>Each difference and its interval (second arm − first)</h2>\n");
    page.push_str(&forest(&c.measures));
    page.push_str("<h2>Measures</h2>\n<table><tr><th>measure</th><th>verdict</th></tr>\n");
    for m in &c.measures {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(m.measure.label()),
            escape(&m.verdict)
        );
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

/// One row a measure: a line from the interval's low end to its high end,
/// a dot at the difference, and the zero line; a measure without an
/// interval says so.
fn forest(measures: &[MeasureResult]) -> String {
    let height = ROW * measures.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">\n"
    );
    let (x0, span) = (LABEL + 10.0, WIDTH - LABEL - 30.0);
    let zero = x0 + span / 2.0;
    for (i, m) in measures.iter().enumerate() {
        let y = ROW * i as f64 + ROW / 2.0 + 5.0;
        let _ = writeln!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text>\
             <line x1=\"{zero}\" y1=\"{}\" x2=\"{zero}\" y2=\"{}\" stroke=\"#999\"/>",
            y + 4.0,
            escape(m.measure.label()),
            y - 12.0,
            y + 12.0
        );
        let (Some(d), Some(ci)) = (m.difference, &m.interval) else {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\">too few chats</text>",
                zero + 8.0,
                y + 4.0
            );
            continue;
        };
        let reach = [d, ci.low, ci.high]
            .iter()
            .fold(0.0f64, |r, v| r.max(v.abs()));
        let scale = if reach > 0.0 {
            span / 2.0 / (reach * 1.1)
        } else {
            0.0
        };
        let x = |v: f64| zero + v * scale;
        let colour = if ci.sign() == 0 { "#888" } else { "#4e79a7" };
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"3\"/>\
             <circle cx=\"{:.1}\" cy=\"{y}\" r=\"5\" fill=\"{colour}\"/>",
            x(ci.low),
            x(ci.high),
            x(d)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::{Arm, ChatSample, Options, compare};
    use super::*;

    fn arm(name: &str, shift: f64) -> Arm {
        let chats = (0..60)
            .map(|i| ChatSample {
                first_reply_s: Some(60.0 + f64::from(i % 17) * 7.0 + shift),
                assignment_s: Some(2.0),
                agent: Some(format!("<agent {}>", i % 3)),
                ..ChatSample::default()
            })
            .collect();
        Arm {
            name: name.into(),
            chats,
        }
    }

    #[test]
    fn the_page_charts_each_interval_and_escapes_every_text() {
        let c = compare(&arm("a<b>", 0.0), &arm("b", -40.0), &Options::default()).unwrap();
        let page = render(&c, "2026-12-01 to 2026-12-07");
        assert!(page.contains("<svg") && page.contains("<circle"), "{page}");
        assert!(page.contains("a&lt;b&gt;") && !page.contains("a<b>"));
        assert!(
            page.contains("too few chats"),
            "measures without chats say so"
        );
        assert!(page.contains(&escape(&c.headline)));
    }
}
