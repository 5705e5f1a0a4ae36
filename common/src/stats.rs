//! Summaries of measured values, as the player's JSON summary, the benches and the soak print
//! them.

/// The `p`-quantile (`p` in 0..=1) of `values` by nearest rank; sorts `values`. `None` when there
/// are none.
pub fn percentile<T: Copy + PartialOrd>(values: &mut [T], p: f64) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = ((values.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    values.get(rank).copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_of_unsorted_values() {
        let mut values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut values, 0.5), Some(3.0));
        assert_eq!(percentile(&mut values, 0.99), Some(5.0));
        assert_eq!(percentile(&mut values, 0.0), Some(1.0));
        let mut durations = [
            std::time::Duration::from_millis(9),
            std::time::Duration::ZERO,
        ];
        assert_eq!(
            percentile(&mut durations, 1.0),
            Some(std::time::Duration::from_millis(9))
        );
        assert_eq!(percentile::<f64>(&mut [], 0.5), None);
    }
}
