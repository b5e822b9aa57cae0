//! Timestamps: UTC, RFC 3339 with exactly six fractional digits and `Z`.
//! The core never reads a clock; times arrive as arguments.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a timestamp text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp must be UTC RFC 3339 with six fractional digits, e.g. 2026-11-22T10:15:30.123456Z"
)]
pub struct TimestampError;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_DAY: i64 = 86_400_000_000;

const MICROS_PER_SECOND: i64 = 1_000_000;

impl Timestamp {
    /// From microseconds since the epoch (the shell reads the clock).
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub fn unix_micros(&self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (floor).
    pub fn unix_seconds(&self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }

    /// The UTC day, as days since 1970-01-01 (the auto-pay rules' daily limits).
    pub fn utc_day(&self) -> i64 {
        self.0.div_euclid(MICROS_PER_DAY)
    }

    /// `self - earlier` in microseconds, saturating.
    pub fn micros_since(&self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Parses exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() != 27
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || b[26] != b'Z'
        {
            return Err(TimestampError);
        }
        let number = |range: std::ops::Range<usize>| -> Result<u32, TimestampError> {
            let mut value = 0u32;
            for &c in &b[range] {
                if !c.is_ascii_digit() {
                    return Err(TimestampError);
                }
                value = value * 10 + u32::from(c - b'0');
            }
            Ok(value)
        };
        let year = i32::try_from(number(0..4)?).map_err(|_| TimestampError)?;
        let month = u8::try_from(number(5..7)?).map_err(|_| TimestampError)?;
        let month = time::Month::try_from(month).map_err(|_| TimestampError)?;
        let day = u8::try_from(number(8..10)?).map_err(|_| TimestampError)?;
        let hour = u8::try_from(number(11..13)?).map_err(|_| TimestampError)?;
        let minute = u8::try_from(number(14..16)?).map_err(|_| TimestampError)?;
        let second = u8::try_from(number(17..19)?).map_err(|_| TimestampError)?;
        let micro = number(20..26)?;
        let date = time::Date::from_calendar_date(year, month, day).map_err(|_| TimestampError)?;
        let clock =
            time::Time::from_hms_micro(hour, minute, second, micro).map_err(|_| TimestampError)?;
        let at = time::PrimitiveDateTime::new(date, clock).assume_utc();
        let micros = at.unix_timestamp() * MICROS_PER_SECOND + i64::from(micro);
        Ok(Self(micros))
    }
}

impl Timestamp {
    /// Parses any RFC 3339 date-time (`2026-11-22T10:15:30Z`, `…30.5+01:00`, up to nine
    /// fractional digits, of which the seventh and later are dropped), for what clients
    /// send, e.g. a time range. Event times use the one strict form of [`Timestamp::parse`].
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20
            || b.len() > 35
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(TimestampError);
        }
        let number = |range: std::ops::Range<usize>| -> Result<u32, TimestampError> {
            let mut value = 0u32;
            for &c in b.get(range).ok_or(TimestampError)? {
                if !c.is_ascii_digit() {
                    return Err(TimestampError);
                }
                value = value * 10 + u32::from(c - b'0');
            }
            Ok(value)
        };
        let mut rest = 19;
        let mut micro = 0u32;
        if b[rest] == b'.' {
            let digits = b[rest + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 || digits > 9 {
                return Err(TimestampError);
            }
            for position in 0..6 {
                let digit = if position < digits {
                    u32::from(b[rest + 1 + position] - b'0')
                } else {
                    0
                };
                micro = micro * 10 + digit;
            }
            rest += 1 + digits;
        }
        let offset_seconds: i64 = match &b[rest..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let hours = number(rest + 1..rest + 3)?;
                let minutes = number(rest + 4..rest + 6)?;
                if hours > 23 || minutes > 59 {
                    return Err(TimestampError);
                }
                let seconds = i64::from(hours * 3600 + minutes * 60);
                if *sign == b'+' {
                    seconds
                } else {
                    -seconds
                }
            }
            _ => return Err(TimestampError),
        };
        let year = i32::try_from(number(0..4)?).map_err(|_| TimestampError)?;
        let month = u8::try_from(number(5..7)?).map_err(|_| TimestampError)?;
        let month = time::Month::try_from(month).map_err(|_| TimestampError)?;
        let day = u8::try_from(number(8..10)?).map_err(|_| TimestampError)?;
        let hour = u8::try_from(number(11..13)?).map_err(|_| TimestampError)?;
        let minute = u8::try_from(number(14..16)?).map_err(|_| TimestampError)?;
        let second = u8::try_from(number(17..19)?).map_err(|_| TimestampError)?;
        let date = time::Date::from_calendar_date(year, month, day).map_err(|_| TimestampError)?;
        let clock =
            time::Time::from_hms_micro(hour, minute, second, micro).map_err(|_| TimestampError)?;
        let at = time::PrimitiveDateTime::new(date, clock).assume_utc();
        let seconds = at.unix_timestamp() - offset_seconds;
        Ok(Self(seconds * MICROS_PER_SECOND + i64::from(micro)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micro = self.0.rem_euclid(MICROS_PER_SECOND);
        let at = time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            micro
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_forms() {
        for text in [
            "2026-11-22T10:15:30.123456Z",
            "1970-01-01T00:00:00.000000Z",
            "2024-02-29T23:59:59.999999Z",
        ] {
            let at = Timestamp::parse(text).expect(text);
            assert_eq!(at.to_string(), text);
        }
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:01.000002Z").map(|t| t.unix_micros()),
            Ok(1_000_002)
        );
        for bad in [
            "2026-11-22T10:15:30Z",
            "2026-11-22T10:15:30.123Z",
            "2026-11-22T10:15:30.123456+00:00",
            "2026-11-22 10:15:30.123456Z",
            "2026-02-30T10:15:30.123456Z",
            "2026-11-22T24:15:30.123456Z",
            "2026-11-22T10:15:30.12345aZ",
            "2026-11-22t10:15:30.123456z",
        ] {
            assert_eq!(Timestamp::parse(bad), Err(TimestampError), "{bad}");
        }
    }

    #[test]
    fn rfc3339_in_any_of_its_forms() {
        let check = |text: &str, expected: Option<&str>| {
            let parsed = Timestamp::parse_rfc3339(text).map(|t| t.to_string()).ok();
            assert_eq!(parsed.as_deref(), expected, "{text}");
        };
        check("2026-11-22T10:15:30Z", Some("2026-11-22T10:15:30.000000Z"));
        check("2026-11-22t10:15:30z", Some("2026-11-22T10:15:30.000000Z"));
        check(
            "2026-11-22T10:15:30.5Z",
            Some("2026-11-22T10:15:30.500000Z"),
        );
        check(
            "2026-11-22T10:15:30.123456789Z",
            Some("2026-11-22T10:15:30.123456Z"),
        );
        check(
            "2026-11-22T11:15:30+01:00",
            Some("2026-11-22T10:15:30.000000Z"),
        );
        check(
            "2026-11-22T00:15:30.25-02:30",
            Some("2026-11-22T02:45:30.250000Z"),
        );
        check(
            "2026-11-22T10:15:30.123456Z",
            Some("2026-11-22T10:15:30.123456Z"),
        );
        for bad in [
            "2026-11-22T10:15:30",
            "2026-11-22 10:15:30Z",
            "2026-11-22T10:15:30.Z",
            "2026-11-22T10:15:30.1234567890Z",
            "2026-11-22T10:15:30+0100",
            "2026-11-22T10:15:30+24:00",
            "2026-02-30T10:15:30Z",
            "2026-11-22T10:15:60Z",
            "yesterday",
            "",
        ] {
            check(bad, None);
        }
    }
}
