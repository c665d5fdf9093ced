//! Sizes, rates and durations as people write them: `8MiB`, `100MB`, `200Mbit`, `25MiB/s`,
//! `5s`, `500ms`, `2m`.

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

/// Parses a rate in bytes per second: a size per second (`25MiB`, `25MiB/s`, `10MB/s`, bytes as
/// a plain number) or bits per second, decimal as network people write them (`200Mbit`,
/// `200Mbps`, `1Gbit/s`, `512kbit`). A rate under one byte per second is refused.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let strip = |s: &'_ str, suffix: &str| -> Option<usize> {
        (s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
            .then(|| s.len() - suffix.len())
    };
    let per_second = strip(trimmed, "/s").map_or(trimmed, |end| &trimmed[..end]);
    // "Mbps" is bits (lowercase b, as network gear writes it), "MBps" bytes.
    let (size, bits) = if let Some(end) = per_second.strip_suffix("bps").map(str::len) {
        (&per_second[..end], true)
    } else if let Some(end) = per_second.strip_suffix("Bps").map(str::len) {
        (&per_second[..end + 1], false)
    } else if let Some(end) = strip(per_second, "bits").or_else(|| strip(per_second, "bit")) {
        (&per_second[..end], true)
    } else {
        (per_second, false)
    };
    let size = size.trim().to_ascii_lowercase();
    let not_a_rate = || {
        format!(
            "{text:?} is not a rate; write bytes per second or a rate like \"25MiB\", \"25MiB/s\", \"200Mbit\" or \"unlimited\""
        )
    };
    let bytes = if bits {
        // Bit rates are decimal (a 1 Gbit link is 10^9 bits per second): "M" is 10^6 here.
        let split = size
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(size.len());
        let (number, unit) = size.split_at(split);
        let multiplier: f64 = match unit.trim() {
            "" => 1.0,
            "k" => 1e3,
            "m" => 1e6,
            "g" => 1e9,
            "t" => 1e12,
            _ => return Err(not_a_rate()),
        };
        let value: f64 = number.parse().map_err(|_| not_a_rate())?;
        let bytes = (value * multiplier / 8.0).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        bytes as u64
    } else {
        parse_size(&size).map_err(|_| not_a_rate())?
    };
    if bytes == 0 {
        return Err(format!(
            "{text:?} is less than one byte per second; leave the limit out, or write \"unlimited\", for no limit"
        ));
    }
    Ok(bytes)
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

/// `512 B`, `1.5 KiB`, `2.6 GiB`: binary units, as `parse_size` (and `--chunk-size`) take them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up at 1023.95 so rounding never prints `1024.0 KiB`.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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

    #[test]
    fn rates_parse_as_bytes_or_bits_per_second() {
        assert_eq!(parse_rate("25MiB").unwrap(), 25 << 20);
        assert_eq!(parse_rate("25MiB/s").unwrap(), 25 << 20);
        assert_eq!(parse_rate("10MB/s").unwrap(), 10_000_000);
        assert_eq!(parse_rate("200Mbit").unwrap(), 25_000_000);
        assert_eq!(parse_rate("200 Mbit/s").unwrap(), 25_000_000);
        assert_eq!(parse_rate("200Mbps").unwrap(), 25_000_000);
        assert_eq!(parse_rate("1Gbit").unwrap(), 125_000_000);
        assert_eq!(parse_rate("512kbit").unwrap(), 64_000);
        assert_eq!(parse_rate("1.5Gbps").unwrap(), 187_500_000);
        assert_eq!(parse_rate("10MBps").unwrap(), 10_000_000);
        assert_eq!(parse_rate("4096").unwrap(), 4096);
        assert!(parse_rate("fast").unwrap_err().contains("200Mbit"));
        assert!(parse_rate("5 furlongs").unwrap_err().contains("not a rate"));
        assert!(parse_rate("0").unwrap_err().contains("unlimited"));
        assert!(
            parse_rate("1bit")
                .unwrap_err()
                .contains("less than one byte")
        );
    }
}
