//! Tables of counts by name, printed side by side by `simulate` and
//! `simulate --history`.

use std::collections::BTreeMap;

/// The names in either table, sorted, each once.
pub(super) fn keys(a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>) -> Vec<String> {
    let mut k: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    k.sort();
    k.dedup();
    k
}

/// The count of `k`, 0 when the table has none.
pub(super) fn get(m: &BTreeMap<String, u32>, k: &str) -> u32 {
    m.get(k).copied().unwrap_or(0)
}
