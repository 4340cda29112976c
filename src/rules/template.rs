//! Message templates for `note`, `reply.text` and `busy_reply.text`:
//! `{agent}`, `{rule}`, `{pool}`, `{chat}`, `{customer}`, `{next_open}`, and
//! in `busy_reply` only, `{position}`. Parsed at load, so an unknown
//! placeholder is a load error, not a surprise in a customer's chat.

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Agent,
    Rule,
    Pool,
    Chat,
    Customer,
    NextOpen,
    /// The chat's place among the chats waiting for a seat (busy_reply).
    Position,
}

impl Placeholder {
    const ALL: [(&'static str, Placeholder); 7] = [
        ("agent", Placeholder::Agent),
        ("rule", Placeholder::Rule),
        ("pool", Placeholder::Pool),
        ("chat", Placeholder::Chat),
        ("customer", Placeholder::Customer),
        ("next_open", Placeholder::NextOpen),
        ("position", Placeholder::Position),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Where in the template text a problem is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest.find('}').ok_or(TemplateError {
                        offset: i,
                        message: "`{` is never closed (write `{{` for a literal brace)".into(),
                    })?;
                    let name = &rest[..end];
                    let p = Placeholder::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, p)| *p)
                        .ok_or_else(|| TemplateError {
                            offset: i,
                            message: format!(
                                "unknown placeholder `{{{name}}}` (use {})",
                                Placeholder::ALL
                                    .iter()
                                    .map(|(n, _)| format!("{{{n}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(p));
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(TemplateError {
                        offset: i,
                        message: "`}` without `{` (write `}}` for a literal brace)".into(),
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Value(p))
    }

    /// Fills the placeholders from `value`.
    pub fn render(&self, value: impl Fn(Placeholder) -> String) -> String {
        self.render_around(value, None).concat()
    }

    /// Fills every placeholder but `open`, and returns the text between the
    /// places where `open` stands (one more piece than it has uses), for a
    /// value known only later.
    pub fn render_around(
        &self,
        value: impl Fn(Placeholder) -> String,
        open: Option<Placeholder>,
    ) -> Vec<String> {
        let mut pieces = vec![String::new()];
        for part in &self.parts {
            let last = pieces.last_mut().expect("never empty");
            match part {
                Part::Text(t) => last.push_str(t),
                Part::Value(p) if Some(*p) == open => pieces.push(String::new()),
                Part::Value(p) => last.push_str(&value(*p)),
            }
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_rejects() {
        let t = Template::parse("Routed to {agent} by {rule} {{ok}}").unwrap();
        let s = t.render(|p| match p {
            Placeholder::Agent => "alice".into(),
            Placeholder::Rule => "vip".into(),
            _ => "?".into(),
        });
        assert_eq!(s, "Routed to alice by vip {ok}");
        assert!(t.uses(Placeholder::Agent) && !t.uses(Placeholder::NextOpen));
        let e = Template::parse("Hi {agnet}!").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("unknown placeholder `{agnet}`"));
        assert!(Template::parse("oops {agent").is_err());
        assert!(Template::parse("oops }").is_err());
    }

    #[test]
    fn a_placeholder_left_open_splits_the_text() {
        let t = Template::parse("{pool}: number {position} ({position})").unwrap();
        let pieces = t.render_around(|_| "support".into(), Some(Placeholder::Position));
        assert_eq!(pieces, ["support: number ", " (", ")"]);
        assert_eq!(pieces.join("3"), "support: number 3 (3)");
        assert_eq!(t.render(|_| "x".into()), "x: number x (x)");
    }
}
