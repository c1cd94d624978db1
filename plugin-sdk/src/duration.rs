//! Durations in a plugin's config, written as people write them: `500ms`,
//! `10s`, `1m`. Each plugin says which units and how long it accepts.

/// What a plugin accepts as a duration.
#[derive(Debug, Clone, Copy)]
pub struct DurationRule {
    /// Unit suffixes with their length in milliseconds, as `("s", 1000)`.
    pub units: &'static [(&'static str, u64)],
    /// Examples shown when a duration does not parse, as "`500ms`, `2s` or `1m`".
    pub examples: &'static str,
    /// The longest duration, in milliseconds.
    pub max_ms: u64,
    /// The longest duration as the config would write it, as `60s`.
    pub max: &'static str,
}

/// Milliseconds in `text`, a whole number and one of `rule`'s units; at
/// least 1ms, at most `rule.max_ms`. The error says what to write.
pub fn parse_duration(text: &str, rule: &DurationRule) -> Result<u64, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let Some(&(_, unit_ms)) = rule.units.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "`{text}` is not a duration: write a whole number and a unit ({}), as in {}",
            unit_list(rule.units),
            rule.examples
        ));
    };
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write a number before the unit, as in `1{unit}`"
        ));
    }
    // All digits: a number that does not parse is too large for a u64.
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .filter(|ms| *ms <= rule.max_ms)
        .ok_or_else(|| format!("`{text}` is too long: at most {}", rule.max))?;
    if ms == 0 {
        return Err(format!("`{text}` is too short: at least 1ms"));
    }
    Ok(ms)
}

/// `ms, s or m`.
fn unit_list(units: &[(&str, u64)]) -> String {
    let names: Vec<&str> = units.iter().map(|(name, _)| *name).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: DurationRule = DurationRule {
        units: &[("ms", 1), ("s", 1000), ("m", 60_000)],
        examples: "`500ms`, `2s` or `1m`",
        max_ms: 60_000,
        max: "60s",
    };

    #[test]
    fn durations_parse_within_the_rule() {
        assert_eq!(parse_duration("500ms", &RULE), Ok(500));
        assert_eq!(parse_duration("1m", &RULE), Ok(60_000));
        assert_eq!(
            parse_duration("1h", &RULE),
            Err("`1h` is not a duration: write a whole number and a unit (ms, s or m), as in `500ms`, `2s` or `1m`".into())
        );
        assert_eq!(
            parse_duration("61s", &RULE),
            Err("`61s` is too long: at most 60s".into())
        );
        assert_eq!(
            parse_duration("0s", &RULE),
            Err("`0s` is too short: at least 1ms".into())
        );
        assert_eq!(
            parse_duration("s", &RULE),
            Err("`s` is not a duration: write a number before the unit, as in `1s`".into())
        );
        assert_eq!(
            parse_duration("99999999999999999999m", &RULE),
            Err("`99999999999999999999m` is too long: at most 60s".into())
        );
    }
}
