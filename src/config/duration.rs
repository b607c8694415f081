//! Durations written as `<integer><unit>`: `500ms`, `90s`, `30m`, `12h`, `7d`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration as users write it in configs; only the units `ms`, `s`, `m`, `h`, `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The parsed duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("`{text}` has no unit; write e.g. `30s`, `5m`, `12h` or `7d`")
        })?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!("`{text}` does not start with a number"));
        }
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "`{text}` has unknown unit `{unit}`; use ms, s, m, h or d"
                ))
            }
        };
        let millis = amount
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("`{text}` is too long"))?;
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if millis >= size && millis.is_multiple_of(size) {
                return write!(f, "{}{unit}", millis / size);
            }
        }
        write!(f, "{millis}ms")
    }
}

/// Written back as it would be configured (`30s`, `250ms`), for the effective config.
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        for (text, secs) in [("90s", 90), ("30m", 1800), ("12h", 43_200), ("7d", 604_800)] {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().get(),
                Duration::from_secs(secs)
            );
        }
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().get(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn rejects_missing_or_unknown_units_with_a_reason() {
        assert!("30"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("no unit"));
        assert!("3w"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("unknown unit `w`"));
        assert!("s".parse::<HumanDuration>().unwrap_err().contains("number"));
        assert!("-5s".parse::<HumanDuration>().is_err());
        assert!("99999999999999999999d".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!("120m".parse::<HumanDuration>().unwrap().to_string(), "2h");
        assert_eq!(
            "1500ms".parse::<HumanDuration>().unwrap().to_string(),
            "1500ms"
        );
    }
}
