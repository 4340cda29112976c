//! The console's markup: one layout, tables, forms and an inline SVG chart.
//! Every text from the database, the rules or a request goes through
//! [`escape`]; no script, one stylesheet served from the daemon.

use std::fmt::Write as _;

pub use crate::report::html::escape;

/// The pages, in the navigation's order: (path, title).
const NAV: [(&str, &str); 4] = [
    ("/console/agents", "Agents"),
    ("/console/queue", "Queue"),
    ("/console/chat", "Chats"),
    ("/console/audit", "Audit"),
];

/// A whole page. `signed_in` is (name, CSRF field) for the navigation's
/// sign-out form; the sign-in page has none.
pub fn page(title: &str, signed_in: Option<(&str, &str)>, main: &str) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · assignd</title><link rel=\"stylesheet\" href=\"/console/style.css\">\
         </head><body>\n",
        escape(title)
    );
    if let Some((name, csrf)) = signed_in {
        out.push_str("<nav id=\"nav\"><b>assignd</b>");
        for (href, label) in NAV {
            let current = if label == title {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        let _ = writeln!(
            out,
            "<form id=\"signout\" method=\"post\" action=\"/console/signout\">{}\
             <span>{}</span><button>Sign out</button></form></nav>",
            hidden("csrf", csrf),
            escape(name)
        );
    }
    let _ = write!(
        out,
        "<main><h1>{}</h1>\n{main}</main></body></html>\n",
        escape(title)
    );
    out
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

/// A POST form of one button: `class`, `action`, hidden `fields`, and
/// any `extra` inputs before the button.
pub fn button_form(
    class: &str,
    action: &str,
    fields: &[(&str, &str)],
    extra: &str,
    label: &str,
) -> String {
    let hidden: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    format!(
        "<form class=\"{class}\" method=\"post\" action=\"{action}\">{hidden}{extra}<button>{}</button></form>",
        escape(label)
    )
}

/// A table: its `id`, header cells, and rows already rendered as `<tr>`s.
pub fn table(id: &str, headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!(
            "<p class=\"empty\" id=\"{id}-empty\">{}</p>\n",
            escape(empty)
        );
    }
    let mut out = format!("<table id=\"{id}\"><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        out.push_str(r);
        out.push('\n');
    }
    out.push_str("</tbody></table>\n");
    out
}

/// A cell of class `class` holding `text` (escaped).
pub fn td(class: &str, text: &str) -> String {
    format!("<td class=\"{class}\">{}</td>", escape(text))
}

/// A flash message after an action, if there is one.
pub fn flash(text: Option<&str>) -> String {
    text.map(|t| format!("<p class=\"flash\" id=\"flash\">{}</p>\n", escape(t)))
        .unwrap_or_default()
}

/// Horizontal bars, one per (label, count), longest the widest.
pub fn bar_chart(id: &str, caption: &str, bars: &[(String, u32)]) -> String {
    const ROW: f64 = 26.0;
    const LABEL: f64 = 120.0;
    const WIDTH: f64 = 560.0;
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let height = ROW * bars.len().max(1) as f64 + 8.0;
    let mut svg = format!(
        "<figure id=\"{id}\"><svg role=\"img\" \
         width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">"
    );
    for (i, (label, n)) in bars.iter().enumerate() {
        let y = ROW * i as f64 + 4.0;
        let w = (WIDTH - LABEL - 40.0) * f64::from(*n) / f64::from(max);
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.0}\" rx=\"3\"><title>{}: {n}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\">{n}</text>",
            LABEL - 8.0,
            y + 15.0,
            escape(label),
            ROW - 8.0,
            escape(label),
            LABEL + w + 6.0,
            y + 15.0,
        );
    }
    let _ = writeln!(
        svg,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(caption)
    );
    svg
}

/// A duration in the largest sensible unit: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A stored instant (Unix ms) as people read it, in UTC.
pub fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_escaped() {
        let p = page("<x>", Some(("a\"b", "c<d")), "");
        assert!(!p.contains("<x>"));
        assert!(p.contains("a&quot;b") && p.contains("c&lt;d"));
        let t = table("t", &["<h>"], &["<tr><td>1</td></tr>".into()], "none");
        assert!(t.contains("&lt;h&gt;"));
        let c = bar_chart("c", "cap", &[("<b>".into(), 2)]);
        assert!(!c.contains("<b>") && c.contains("&lt;b&gt;"));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m 5s");
        assert_eq!(age(3 * 3600 + 300), "3h 5m");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d 4h");
        assert_eq!(age(-3), "0s");
    }
}
