//! Byte sizes written as integers or with a unit: `65536`, `512KiB`, `64MiB`, `1GiB`, `1GB`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::str::FromStr;

/// A number of bytes, accepted as a plain integer or a string with a binary or decimal unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| {
            format!("`{text}` is not a size; write e.g. `65536`, `64MiB` or `1GiB`")
        })?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                "`{text}` has unknown unit `{other}`; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ))
            }
        };
        amount
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

/// Written back as a plain byte count, which every reader of the effective config accepts.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_units() {
        assert_eq!("65536".parse::<ByteSize>().unwrap().bytes(), 65_536);
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().bytes(), 64 << 20);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().bytes(), 1_000_000_000);
        let from_json: ByteSize = serde_json::from_value(serde_json::json!(42)).unwrap();
        assert_eq!(from_json.bytes(), 42);
    }

    #[test]
    fn rejects_unknown_units_and_garbage() {
        assert!("12parsecs"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("unknown unit"));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }
}
