//! Calendar dates for `expires`: parsed strictly as `YYYY-MM-DD`, compared by day
//! number on the spool's clock (UTC).

use std::fmt;

/// A calendar date (UTC), as `expires` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// The year, 1970–9999.
    pub year: u16,
    /// The month, 1–12.
    pub month: u8,
    /// The day of the month, 1–31 (as the month has).
    pub day: u8,
}

const MS_PER_DAY: i64 = 86_400_000;

impl Date {
    /// Parses `YYYY-MM-DD` (exactly that shape, a real day); `None` otherwise.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = text.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let date = Date {
            year: u16::try_from(digits(0..4)?).ok()?,
            month: u8::try_from(digits(5..7)?).ok()?,
            day: u8::try_from(digits(8..10)?).ok()?,
        };
        date.is_valid().then_some(date)
    }

    /// Returns true if and only if this is a real day between 1970 and 9999.
    pub fn is_valid(&self) -> bool {
        let leap = |y: u16| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap(self.year) => 29,
            2 => 28,
            _ => return false,
        };
        (1970..=9999).contains(&self.year) && (1..=days).contains(&self.day)
    }

    /// Days since 1970-01-01 (the civil-from-days algorithm, run backwards).
    pub(crate) fn day_number(&self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

/// The day number (see [`Date::day_number`]) that unix milliseconds `ms` fall on.
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_days_in_the_exact_shape_parse() {
        for ok in ["2026-12-31", "2024-02-29", "1970-01-01"] {
            assert_eq!(Date::parse(ok).unwrap().to_string(), ok);
        }
        for bad in [
            "2025-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "2026-01-01T00:00",
            "+026-01-01",
            "",
            "never!",
        ] {
            assert!(Date::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn day_numbers_match_the_clock() {
        assert_eq!(Date::parse("1970-01-01").unwrap().day_number(), 0);
        // 2026-12-01T00:00:00Z is 1_796_083_200 s after the epoch.
        let d = Date::parse("2026-12-01").unwrap();
        assert_eq!(d.day_number(), day_of(1_796_083_200_000));
        assert_eq!(d.day_number() - 1, day_of(1_796_083_200_000 - 1));
        let leap = Date::parse("2024-03-01").unwrap().day_number()
            - Date::parse("2024-02-28").unwrap().day_number();
        assert_eq!(leap, 2);
    }
}
