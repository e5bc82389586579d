//! Order statistics of handover times: min, median, p99 and max.
//!
//! Pure arithmetic on a slice of microsecond samples; it owns no state and never fails on
//! empty input (it answers `None`).

/// Summary of a set of handover times, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: u64,
    /// The middle value, or the mean of the two middle values for an even count.
    pub median: f64,
    /// Nearest-rank 99th percentile: the smallest sample with at least 99% of samples at
    /// or below it.
    pub p99: u64,
    pub max: u64,
}

/// Nearest-rank percentile of an ascending slice: the value at rank ceil(p/100 * n).
/// `p` is in (0, 100]; `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p = p.clamp(1, 100) as usize;
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Median of an ascending slice; `None` for an empty slice.
pub fn median(sorted: &[u64]) -> Option<f64> {
    let n = sorted.len();
    let upper = *sorted.get(n / 2)?;
    if n % 2 == 1 {
        return Some(upper as f64);
    }
    let lower = *sorted.get(n / 2 - 1)?;
    Some((lower as f64 + upper as f64) / 2.0)
}

/// Summarises `samples` (any order); `None` when there are none.
pub fn summarize(samples: &[u64]) -> Option<Summary> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    Some(Summary {
        count: sorted.len(),
        min: *sorted.first()?,
        median: median(&sorted)?,
        p99: percentile(&sorted, 99)?,
        max: *sorted.last()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_hundred_has_known_order_statistics() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let s = summarize(&samples).expect("non-empty");
        assert_eq!(s.count, 100);
        assert_eq!((s.min, s.p99, s.max), (1, 99, 100));
        assert_eq!(s.median, 50.5);
    }

    #[test]
    fn p99_of_a_thousand_is_the_990th_value() {
        let samples: Vec<u64> = (0..1000).map(|i| i * 10).collect();
        assert_eq!(percentile(&samples, 99), Some(9890));
        assert_eq!(percentile(&samples, 100), Some(9990));
        assert_eq!(percentile(&samples, 50), Some(4990));
    }

    #[test]
    fn p99_of_few_samples_is_the_max() {
        assert_eq!(percentile(&[3, 7, 9], 99), Some(9));
        assert_eq!(percentile(&[5], 99), Some(5));
    }

    #[test]
    fn odd_median_is_the_middle_value() {
        assert_eq!(median(&[1, 2, 40]), Some(2.0));
        assert_eq!(median(&[4, 6]), Some(5.0));
    }

    #[test]
    fn empty_input_has_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(percentile(&[], 99), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn outlier_shows_in_max_not_median() {
        let mut samples = vec![100; 99];
        samples.push(1_000_000);
        let s = summarize(&samples).expect("non-empty");
        assert_eq!(
            (s.min, s.median, s.p99, s.max),
            (100, 100.0, 100, 1_000_000)
        );
    }
}
