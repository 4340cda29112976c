//! Every rules example in the documentation loads: the docs cannot rot.

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
