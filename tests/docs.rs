//! Every rules example in the documentation loads, and every table in it
//! renders as one table: the docs cannot rot.

use std::path::PathBuf;

fn toml_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        blocks.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn every_rules_example_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for doc in ["docs/rules.md", "docs/deploy.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (i, block) in toml_blocks(&text).into_iter().enumerate() {
            // Config examples are checked as config, rules examples as rules.
            if ["[helpcrunch", "[worker]", "[http]", "[database]"]
                .iter()
                .any(|t| block.contains(t))
            {
                assignd::config::Config::parse(&root.join(doc), &block)
                    .unwrap_or_else(|e| panic!("{doc} block {i}: {e}"));
            } else {
                let name = root.join(format!("{doc}#{i}"));
                assignd::rules::load_sources(&[(name, block)])
                    .unwrap_or_else(|e| panic!("{doc} block {i}: {e}"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
}

/// Where a Markdown table row stands alone: after a line that is not part
/// of a table (a blank one, say), a row must be a header, followed by its
/// `|---|` line; otherwise it renders as loose text. The README's
/// configuration table once lost its last rows so.
fn loose_table_rows(doc: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut fenced = false;
    let mut loose = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('|') {
            continue;
        }
        let after_table = i > 0 && lines[i - 1].starts_with('|');
        let header = lines.get(i + 1).is_some_and(|l| l.starts_with("|--"));
        if !after_table && !header {
            loose.push((i + 1, line.chars().take(60).collect()));
        }
    }
    loose
}

#[test]
fn every_table_is_whole() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let loose = loose_table_rows(&text);
        assert!(
            loose.is_empty(),
            "{}: rows outside a table: {loose:?}",
            doc.display()
        );
    }
    let broken = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n";
    assert_eq!(loose_table_rows(broken), [(5, "| 3 | 4 |".to_string())]);
}
