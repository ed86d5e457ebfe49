//! Rate limits: `"100/m"`-style strings, as written in task options, control commands and the
//! settings bucket.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rate string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit {value:?}: use <count>/<s|m|h> with a count from 1 to {max}, like \"100/m\"", max = u32::MAX)]
pub struct InvalidRate {
    /// The offending value.
    pub value: String,
}

/// A rate: `count` per `period` (a second, a minute or an hour), spread evenly: one task every
/// `period / count`, with no bursts (Celery's token bucket also holds one token).
///
/// ```
/// use celerity_proto::Rate;
/// let rate: Rate = "100/m".parse()?;
/// assert_eq!(rate.count(), 100);
/// assert_eq!(rate.period(), std::time::Duration::from_secs(60));
/// assert_eq!(rate.interval(), std::time::Duration::from_millis(600));
/// assert_eq!(rate.to_string(), "100/m");
/// assert!("fast".parse::<Rate>().is_err());
/// # Ok::<(), celerity_proto::InvalidRate>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: NonZeroU32,
    unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    const fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
        }
    }

    const fn from_seconds(seconds: u64) -> Option<Self> {
        match seconds {
            1 => Some(Self::Second),
            60 => Some(Self::Minute),
            3600 => Some(Self::Hour),
            _ => None,
        }
    }
}

impl Rate {
    /// `count` per `period_secs` seconds (1, 60 or 3600), or `None` for another period or a count
    /// of 0. Usable in constants.
    ///
    /// ```
    /// const API: Option<celerity_proto::Rate> = celerity_proto::Rate::per(10, 1);
    /// assert_eq!(API.map(|rate| rate.to_string()), Some("10/s".to_owned()));
    /// ```
    pub const fn per(count: u32, period_secs: u64) -> Option<Self> {
        match (NonZeroU32::new(count), Unit::from_seconds(period_secs)) {
            (Some(count), Some(unit)) => Some(Self { count, unit }),
            _ => None,
        }
    }

    /// How many per period.
    pub const fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        Duration::from_secs(self.unit.seconds())
    }

    /// The time between two tasks: `period / count`.
    pub const fn interval(&self) -> Duration {
        let nanos = self.unit.seconds() as u128 * 1_000_000_000 / self.count.get() as u128;
        Duration::from_nanos(nanos as u64)
    }
}

impl std::str::FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(value: &str) -> Result<Self, InvalidRate> {
        let invalid = || InvalidRate {
            value: value.to_owned(),
        };
        let (count, unit) = value.trim().split_once('/').ok_or_else(invalid)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| invalid())?;
        let unit = match unit.trim() {
            "s" | "sec" | "second" => Unit::Second,
            "m" | "min" | "minute" => Unit::Minute,
            "h" | "hour" => Unit::Hour,
            _ => return Err(invalid()),
        };
        Ok(Self { count, unit })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            Unit::Second => "s",
            Unit::Minute => "m",
            Unit::Hour => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_print_and_name_bad_values() {
        let rate: Rate = "10/s".parse().unwrap();
        assert_eq!((rate.count(), rate.period()), (10, Duration::from_secs(1)));
        assert_eq!(rate.interval(), Duration::from_millis(100));
        assert_eq!(
            "1000/h".parse::<Rate>().unwrap().period(),
            Duration::from_secs(3600)
        );
        assert_eq!(" 5 / min ".parse::<Rate>().unwrap().to_string(), "5/m");
        for bad in ["", "10", "0/s", "-1/m", "10/d", "ten/s", "5000000000/s"] {
            let error = bad.parse::<Rate>().unwrap_err();
            assert_eq!(error.value, bad);
            assert!(error.to_string().contains(&format!("{bad:?}")));
        }
        assert_eq!(Rate::per(0, 1), None);
        assert_eq!(Rate::per(3, 7), None);
    }

    #[test]
    fn rates_travel_as_strings() {
        let rate: Rate = "50/m".parse().unwrap();
        assert_eq!(serde_json::to_string(&rate).unwrap(), "\"50/m\"");
        assert_eq!(serde_json::from_str::<Rate>("\"50/m\"").unwrap(), rate);
        let error = serde_json::from_str::<Rate>("\"50/day\"").unwrap_err();
        assert!(error.to_string().contains("50/day"), "{error}");
    }
}
