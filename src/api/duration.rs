//! Kubernetes duration strings (`90m`, `2160h`, `30s`), kept as written so that server-side
//! apply and status never rewrite what the user typed.

use std::{fmt, str::FromStr, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: time::Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a duration: use a number and a unit, such as 90s, 15m or 2160h")]
pub struct DurationError(String);

impl Duration {
    pub fn as_std(&self) -> time::Duration {
        self.value
    }

    pub fn as_secs(&self) -> u64 {
        self.value.as_secs()
    }

    pub fn from_secs(secs: u64) -> Self {
        Self { text: format!("{secs}s"), value: time::Duration::from_secs(secs) }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed: kube::core::Duration = s.parse().map_err(|_| DurationError(s.to_owned()))?;
        if parsed.is_negative() || s.is_empty() {
            return Err(DurationError(s.to_owned()));
        }
        Ok(Self { text: s.to_owned(), value: parsed.into() })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_text_the_user_wrote() {
        let d: Duration = "2160h".parse().unwrap();
        assert_eq!(d.to_string(), "2160h");
        assert_eq!(d.as_secs(), 2160 * 3600);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2160h\"");
    }

    #[test]
    fn refuses_negative_and_unitless() {
        assert!("-5m".parse::<Duration>().is_err());
        assert!("5".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
        assert!("1h30m".parse::<Duration>().is_ok());
    }
}
