//! Takes secrets out of text that came from an answer (error bodies, the
//! `Location` of a redirect, transport error text) before it can reach a
//! log line, the database, `status` or metrics: an error page that echoes
//! the request headers would otherwise carry the API key there.

/// What a secret is replaced with; shorter than [`MIN_PREFIX`], so that
/// redacting again always shortens the text and a fixpoint is reached.
pub const MARK: &str = "***";

/// A run of this many characters that begins the key is redacted, so that
/// an echo the upstream cut short (or our own excerpt) cannot leak the key's
/// beginning either.
pub const MIN_PREFIX: usize = 8;

/// Redacts `text` for a key: every run of at least [`MIN_PREFIX`]
/// characters that begins the key (so the key itself), a key shorter than
/// that wherever it appears, and as defence in depth whatever follows
/// `Bearer ` or an `Authorization:` header name.
pub fn redact(text: &str, key: &str) -> String {
    let mut out = redact_headers(text);
    if key.is_empty() {
        return out;
    }
    if key.chars().count() < MIN_PREFIX {
        return out.replace(key, MARK);
    }
    // Each pass that changes anything shortens the text, so this ends;
    // repeating catches a prefix that a replacement brought together.
    loop {
        let next = redact_key_prefixes(&out, key);
        if next.len() == out.len() {
            return next;
        }
        out = next;
    }
}

/// Cuts redacted text to at most `max` characters on one printable line.
/// A control character becomes a space rather than going, so that no two
/// pieces the redaction saw apart are joined into a secret.
pub fn excerpt(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Replaces every run of at least [`MIN_PREFIX`] characters that matches
/// the key from its first character on.
fn redact_key_prefixes(text: &str, key: &str) -> String {
    let head: String = key.chars().take(MIN_PREFIX).collect();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&head) {
        out.push_str(&rest[..at]);
        out.push_str(MARK);
        let run = common_prefix_len(&rest[at..], key);
        rest = &rest[at + run..];
    }
    out.push_str(rest);
    out
}

/// How many bytes `a` and `b` share from their start, on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

/// Redacts the credential after `Bearer ` and the value of an
/// `Authorization` header, whatever the key: the key may have been
/// re-encoded on the way back (escaped, quoted) so that the plain match
/// misses it.
fn redact_headers(text: &str) -> String {
    let once = redact_after(text, "bearer", bearer_value);
    redact_after(&once, "authorization", authorization_value)
}

/// For each case-insensitive occurrence of `word` (ASCII), asks `value`
/// where the secret after it starts and ends, and replaces that span.
fn redact_after(text: &str, word: &str, value: fn(&str) -> Option<(usize, usize)>) -> String {
    let lower = text.to_ascii_lowercase(); // same byte offsets as `text`
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(word) {
        let after = from + found + word.len();
        match value(&text[after..]) {
            Some((start, end)) => {
                out.push_str(&text[done..after + start]);
                out.push_str(MARK);
                done = after + end;
                from = done;
            }
            None => from = after,
        }
    }
    out.push_str(&text[done..]);
    out
}

/// After `Bearer`: at least one space, then the token up to a delimiter.
fn bearer_value(after: &str) -> Option<(usize, usize)> {
    let start = after.len() - after.trim_start_matches([' ', '\t']).len();
    if start == 0 {
        return None;
    }
    let len = token_len(&after[start..]);
    let token = &after[start..start + len];
    // A second `Bearer` is left for its own turn, so its token goes too.
    let skip = token.is_empty() || token == MARK || token.eq_ignore_ascii_case("bearer");
    (!skip).then_some((start, start + len))
}

/// After `Authorization`: optional quotes and blanks, `:` or `=`, then the
/// value up to the end of the line or of the quoted or tagged field.
fn authorization_value(after: &str) -> Option<(usize, usize)> {
    let name_end = after.trim_start_matches(['"', '\'', ' ', '\t']);
    let rest = name_end
        .strip_prefix(':')
        .or_else(|| name_end.strip_prefix('='))?;
    let value = rest.trim_start_matches([' ', '\t', '"', '\'']);
    let start = after.len() - value.len();
    let len = value
        .find(['\r', '\n', '<', '"', '\'', '&'])
        .unwrap_or(value.len());
    (len > 0 && !is_marked(&value[..len])).then_some((start, start + len))
}

/// A value already redacted (by the `Bearer` pass): left alone.
fn is_marked(value: &str) -> bool {
    value
        .split_ascii_whitespace()
        .all(|w| w == MARK || w.eq_ignore_ascii_case("bearer"))
}

/// The length of a credential: up to whitespace or a character that ends a
/// field in HTML, JSON or a header list.
fn token_len(s: &str) -> usize {
    s.find(|c: char| c.is_whitespace() || "\"'<>,;&\\".contains(c))
        .unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "canary-SECRET-7f3a9c";

    #[test]
    fn the_key_goes_wherever_it_is() {
        let page = format!("<pre>token={KEY}\nX-Echo: {KEY}{KEY}</pre>");
        let out = redact(&page, KEY);
        assert!(!out.contains("canary-S"), "{out}");
        assert_eq!(out, "<pre>token=***\nX-Echo: ******</pre>");
    }

    #[test]
    fn a_cut_off_key_goes_too() {
        let out = redact("echo: canary-SECR", KEY);
        assert_eq!(out, "echo: ***");
        // Shorter than MIN_PREFIX: too common to be a sign of the key.
        assert_eq!(redact("canary-", KEY), "canary-");
    }

    #[test]
    fn bearer_and_authorization_values_go_whatever_the_key() {
        let cases = [
            (
                "authorization: Bearer abc.def\nhost: x",
                "authorization: Bearer ***\nhost: x",
            ),
            (
                "AUTHORIZATION: Basic dXNlcg==\r\n",
                "AUTHORIZATION: ***\r\n",
            ),
            (
                r#"{"Authorization":"Token xyz"}"#,
                r#"{"Authorization":"***"}"#,
            ),
            (
                "<td>Authorization</td><td>bearer q</td>",
                "<td>Authorization</td><td>bearer ***</td>",
            ),
            ("the Bearer token is wrong", "the Bearer *** is wrong"),
            ("Bearer", "Bearer"),
            ("no authorization here", "no authorization here"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input, "other-secret-key"), want, "{input}");
        }
    }

    #[test]
    fn short_keys_are_replaced_whole() {
        assert_eq!(redact("a k and k", "k"), "a *** and ***");
        assert_eq!(redact("", ""), "");
    }

    #[test]
    fn a_fixpoint_is_reached_when_a_replacement_joins_a_prefix() {
        // The key holds the mark: replacing it forms its beginning again.
        assert_eq!(redact("ZZ***abcdefgabcd", "Z***abcdefg"), "***");
    }

    #[test]
    fn excerpts_are_one_printable_line() {
        assert_eq!(excerpt("a\nb\u{7}c\td", 5), "a b c");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever surrounds it, and whatever characters the key holds,
        /// neither the key nor its first MIN_PREFIX characters survive, in
        /// the redacted text or in any excerpt of it.
        #[test]
        fn no_key_or_key_prefix_survives(
            key in "\\PC{8,40}",
            parts in proptest::collection::vec("\\PC{0,12}|\\*{1,4}|[Bb]earer ?|[Aa]uthorization:? ?", 0..12),
            cuts in proptest::collection::vec(0usize..48, 0..4),
            max in 0usize..400,
        ) {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                text.push_str(p);
                let cut = cuts.get(i).map_or(key.len(), |c| (*c).max(MIN_PREFIX));
                text.extend(key.chars().take(cut));
            }
            let out = redact(&text, &key);
            let prefix: String = key.chars().take(MIN_PREFIX).collect();
            proptest::prop_assert!(!out.contains(&prefix), "{text:?} -> {out:?}");
            proptest::prop_assert!(!excerpt(&out, max).contains(&prefix));
        }

        /// Arbitrary text and keys never panic, redacting twice changes
        /// nothing more (for a key of MIN_PREFIX or more), and `Bearer <token>` never survives.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*", key in "\\PC{0,12}") {
            let once = redact(&text, &key);
            // (A short key may be part of the mark itself.)
            if key.chars().count() >= MIN_PREFIX {
                proptest::prop_assert_eq!(&once, &redact(&once, &key));
            }
            let bearer = redact(&format!("{text} Bearer secret-token"), &key);
            proptest::prop_assert!(!bearer.contains("secret-token"), "{}", bearer);
        }
    }
}
