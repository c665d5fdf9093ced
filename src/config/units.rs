//! Sizes and durations as people write them: `8MiB`, `100MB`, `5s`, `500ms`, `2m`.

/// Parses a size as users write it: `1048576`, `8MiB`, `100MB`, `1.5 GiB`, `64k`. Decimal units
/// (`KB`, `MB`, …) are powers of 1000, binary ones (`KiB`, `MiB`, …, and bare `K`, `M`, …) of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let not_a_size = || format!("{text:?} is not a size; write bytes or a size like 8MiB or 100MB");
    if number.is_empty() {
        return Err(not_a_size());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "k" | "kib" => 1 << 10,
        "mb" => 1_000_000,
        "m" | "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "g" | "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "t" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ));
        }
    };
    // Whole numbers stay exact; only fractions go through floating point.
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let value: f64 = number.parse().map_err(|_| not_a_size())?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: `500ms`, `5s`, `2m`, `1h`, `1d`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_duration = || format!("{text:?} is not a duration; write e.g. 500ms, 5s, 2m or 1h");
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    let seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => value / 1000.0,
        "" | "s" | "sec" | "secs" => value,
        "m" | "min" | "mins" => value * 60.0,
        "h" | "hour" | "hours" => value * 3600.0,
        "d" | "day" | "days" => value * 86_400.0,
        _ => return Err(not_a_duration()),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|_| not_a_duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        use std::time::Duration;
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn sizes_parse_in_both_unit_families() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size(" 1.5 GiB ").unwrap(), 3 << 29);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("16mib").unwrap(), 16 << 20);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn sizes_that_are_not_sizes_are_refused_with_the_way_to_write_one() {
        assert!(parse_size("ten").unwrap_err().contains("like 8MiB"));
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("MiB").unwrap_err().contains("not a size"));
        assert!(parse_size("1.2.3MB").unwrap_err().contains("not a size"));
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("-1").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999TiB").unwrap_err().contains("too large"));
    }
}
