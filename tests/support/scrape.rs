//! Reads a counter from a daemon's `/metrics`, for the tests and the
//! benchmarks that count what the daemon did from outside.

/// The sum of every series of the family whose samples start with
/// `prefix` (e.g. `assignd_queue_reads_total{`), at `base` (`http://...`).
pub async fn metric_sum(base: &str, prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
