//! Wall-clock time in milliseconds since the Unix epoch, as carried on the wire, and durations
//! as people say them.

use std::time::Duration;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration in the largest unit it has at least one of, rounded down: "30 days", "12 hours",
/// "1 minute", 90 seconds is "1 minute"; never "0 days".
pub fn spoken_duration(duration: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let secs = duration.as_secs();
    let (size, unit) = UNITS
        .iter()
        .copied()
        .find(|(size, _)| secs >= *size)
        .unwrap_or((1, "second"));
    let count = secs / size;
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        let s = |secs| spoken_duration(Duration::from_secs(secs));
        assert_eq!(s(30 * 86_400), "30 days");
        assert_eq!(s(12 * 3_600), "12 hours");
        assert_eq!(s(90), "1 minute");
        assert_eq!(s(59), "59 seconds");
        assert_eq!(s(1), "1 second");
        assert_eq!(s(0), "0 seconds");
    }
}
