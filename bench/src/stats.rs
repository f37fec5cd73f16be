//! Latency summaries: nearest-rank percentiles over samples in milliseconds.

use serde::Serialize;

/// A latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// The nearest-rank percentile `p` (0–100) of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises samples (milliseconds).
pub fn summarize(mut samples: Vec<f64>) -> Summary {
    samples.retain(|s| s.is_finite());
    samples.sort_by(f64::total_cmp);
    Summary {
        count: samples.len(),
        p50_ms: percentile(&samples, 50.0),
        p95_ms: percentile(&samples, 95.0),
        p99_ms: percentile(&samples, 99.0),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let summary = summarize((1..=100).map(f64::from).collect());
        assert_eq!(
            (summary.count, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        let small = summarize(vec![3.0, 1.0, 2.0]);
        assert_eq!((small.p50_ms, small.p99_ms), (2.0, 3.0));
        assert!(summarize(vec![]).p50_ms.is_nan());
    }
}
