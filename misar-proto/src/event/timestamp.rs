//! [`Timestamp`]: an RFC 3339 `date-time`, validated, kept exactly as written.

use std::fmt;
use std::str::FromStr;

/// An RFC 3339 `date-time` (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), kept exactly as written
/// so that `decode(encode(e)) == e` holds byte for byte.
///
/// Only [`Timestamp::parse`] builds one, so every value is valid: the encoder writes it without
/// escaping (it is ASCII with no `"` or `\`).
///
/// Comparison ([`Ord`]) is on the text, which orders correctly only between timestamps written
/// with the same offset and fraction width.
///
/// ```
/// use misar_proto::event::{Timestamp, TimestampError};
///
/// let t = Timestamp::parse("2026-05-27T10:15:00Z")?;
/// assert_eq!(t.as_str(), "2026-05-27T10:15:00Z");
/// assert_eq!(t.to_string(), "2026-05-27T10:15:00Z");
/// assert!(Timestamp::parse("2026-02-29T10:15:00Z").is_err()); // 2026 is not a leap year
/// assert_eq!(Timestamp::parse("2026-05-27 10:15:00Z"), Err(TimestampError::Malformed { at: 10 }));
/// # Ok::<(), TimestampError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(Box<str>);

/// Why a string is not an RFC 3339 `date-time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text does not follow the grammar; `at` is the byte offset of the first character
    /// that does not fit (the length of the text if it ended too early).
    #[error("not an RFC 3339 date-time (unexpected character or end at byte {at})")]
    Malformed {
        /// Byte offset of the problem.
        at: usize,
    },
    /// The month is not 01–12.
    #[error("month out of range (01-12)")]
    MonthOutOfRange,
    /// The day is 00 or past the end of that month (leap years counted).
    #[error("day out of range for the month")]
    DayOutOfRange,
    /// The hour is not 00–23.
    #[error("hour out of range (00-23)")]
    HourOutOfRange,
    /// The minute is not 00–59.
    #[error("minute out of range (00-59)")]
    MinuteOutOfRange,
    /// The second is not 00–60 (60 is a leap second).
    #[error("second out of range (00-60)")]
    SecondOutOfRange,
    /// The numeric offset's hour is not 00–23 or its minute not 00–59.
    #[error("UTC offset out of range")]
    OffsetOutOfRange,
}

impl Timestamp {
    /// Validates `text` as an RFC 3339 `date-time` (strict: `T` and `Z` may be lower case as
    /// RFC 3339 §5.6 allows, nothing else is relaxed) and keeps it as written.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        validate(text)?;
        Ok(Self(text.into()))
    }

    /// Like [`parse`](Self::parse), reusing the allocation of an owned string.
    pub(crate) fn parse_owned(text: String) -> Result<Self, TimestampError> {
        validate(&text)?;
        Ok(Self(text.into_boxed_str()))
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Timestamp {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Timestamp {
    type Error = TimestampError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse_owned(s)
    }
}

/// A cursor over the bytes of the candidate timestamp; every read is checked.
struct Cursor<'a> {
    rest: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn malformed(&self) -> TimestampError {
        TimestampError::Malformed { at: self.at }
    }

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        self.at += 1;
        Some(b)
    }

    fn literal(&mut self, want: u8) -> Result<(), TimestampError> {
        match self.rest.first() {
            Some(&b) if b == want => {
                self.next();
                Ok(())
            }
            _ => Err(self.malformed()),
        }
    }

    /// Exactly `n` (≤ 4) ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Result<u16, TimestampError> {
        let mut value: u16 = 0;
        for _ in 0..n {
            match self.rest.first() {
                Some(&b @ b'0'..=b'9') => {
                    // n ≤ 4, so value ≤ 9999: no overflow.
                    value = value * 10 + u16::from(b - b'0');
                    self.next();
                }
                _ => return Err(self.malformed()),
            }
        }
        Ok(value)
    }
}

fn is_leap(year: u16) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u16, month: u16) -> u16 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The RFC 3339 §5.6 `date-time` grammar, then the range rules of §5.7 (seconds up to 60
/// anywhere: which minutes may hold a leap second is not knowable from the text alone).
///
/// Timestamps are on the decoding hot path, so well-formed text is checked with fixed-position
/// slice patterns; only text that fails them is walked byte by byte to say where it went wrong.
fn validate(text: &str) -> Result<(), TimestampError> {
    match well_formed(text.as_bytes()) {
        Some(fields) => check_ranges(fields),
        None => validate_slowly(text),
    }
}

/// year, month, day, hour, minute, second, offset (hour, minute).
type Fields = (u16, u16, u16, u16, u16, u16, Option<(u16, u16)>);

/// Whether 8 bytes hold digits where `pattern` has `0` and exactly `pattern`'s byte elsewhere,
/// checked on all eight at once (timestamps are on the decoding hot path).
///
/// After `x ^ pattern`, a literal position must be 0 and a digit position must be 0..=9: its
/// high nibble 0 and no carry into bit 4 when 6 is added. A carry crosses into the next byte
/// only from a position already found wrong, so it cannot hide an error.
fn swar_ok(x: u64, pattern: &[u8; 8]) -> bool {
    let mut digits = 0u64;
    for (i, &p) in pattern.iter().enumerate() {
        if p == b'0' {
            digits |= 0xff << (8 * i);
        }
    }
    let v = x ^ u64::from_le_bytes(*pattern);
    let high = (v & !digits) | (v & digits & 0xf0f0_f0f0_f0f0_f0f0);
    let over_nine = v.wrapping_add(digits & 0x0606_0606_0606_0606) & digits & 0x1010_1010_1010_1010;
    high | over_nine == 0
}

fn two(a: u8, b: u8) -> u16 {
    u16::from(a.wrapping_sub(b'0')) * 10 + u16::from(b.wrapping_sub(b'0'))
}

/// The grammar alone, without positions: `None` if the text does not follow it.
fn well_formed(b: &[u8]) -> Option<Fields> {
    let (head, rest) = b.split_first_chunk::<19>()?;
    let (first, tail) = head.split_first_chunk::<8>()?;
    let (second, _) = tail.split_first_chunk::<8>()?;
    let (_, third) = head.split_last_chunk::<8>()?;
    // `T` may be `t`: set the case bit (0x20) of byte 10, the third of `second`.
    let second = u64::from_le_bytes(*second) | 0x20 << 16;
    if !(swar_ok(u64::from_le_bytes(*first), b"0000-00-")
        && swar_ok(second, b"00t00:00")
        && swar_ok(u64::from_le_bytes(*third), b"00:00:00"))
    {
        return None;
    }
    let [
        y0,
        y1,
        y2,
        y3,
        _,
        m0,
        m1,
        _,
        d0,
        d1,
        _,
        h0,
        h1,
        _,
        i0,
        i1,
        _,
        s0,
        s1,
    ] = *head;
    let year = two(y0, y1) * 100 + two(y2, y3);
    let rest = match rest {
        [b'.', frac @ ..] => {
            let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            frac.get(digits..)?
        }
        _ => rest,
    };
    let offset = match *rest {
        [b'Z' | b'z'] => None,
        [b'+' | b'-', h0, h1, b':', m0, m1] => {
            if !(h0.is_ascii_digit()
                && h1.is_ascii_digit()
                && m0.is_ascii_digit()
                && m1.is_ascii_digit())
            {
                return None;
            }
            Some((two(h0, h1), two(m0, m1)))
        }
        _ => return None,
    };
    Some((
        year,
        two(m0, m1),
        two(d0, d1),
        two(h0, h1),
        two(i0, i1),
        two(s0, s1),
        offset,
    ))
}

fn check_ranges(
    (year, month, day, hour, minute, second, offset): Fields,
) -> Result<(), TimestampError> {
    if !(1..=12).contains(&month) {
        return Err(TimestampError::MonthOutOfRange);
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::DayOutOfRange);
    }
    if hour > 23 {
        return Err(TimestampError::HourOutOfRange);
    }
    if minute > 59 {
        return Err(TimestampError::MinuteOutOfRange);
    }
    if second > 60 {
        return Err(TimestampError::SecondOutOfRange);
    }
    if let Some((oh, om)) = offset {
        if oh > 23 || om > 59 {
            return Err(TimestampError::OffsetOutOfRange);
        }
    }
    Ok(())
}

/// The grammar walked byte by byte, to report where the text stops following it.
fn validate_slowly(text: &str) -> Result<(), TimestampError> {
    let mut c = Cursor {
        rest: text.as_bytes(),
        at: 0,
    };
    let year = c.digits(4)?;
    c.literal(b'-')?;
    let month = c.digits(2)?;
    c.literal(b'-')?;
    let day = c.digits(2)?;
    match c.rest.first() {
        Some(b'T' | b't') => {
            c.next();
        }
        _ => return Err(c.malformed()),
    }
    let hour = c.digits(2)?;
    c.literal(b':')?;
    let minute = c.digits(2)?;
    c.literal(b':')?;
    let second = c.digits(2)?;
    if c.rest.first() == Some(&b'.') {
        c.next();
        let before = c.at;
        while let Some(b'0'..=b'9') = c.rest.first() {
            c.next();
        }
        if c.at == before {
            return Err(c.malformed());
        }
    }
    let mut offset = None;
    match c.rest.first() {
        Some(b'Z' | b'z') => {
            c.next();
        }
        Some(b'+' | b'-') => {
            c.next();
            let oh = c.digits(2)?;
            c.literal(b':')?;
            let om = c.digits(2)?;
            offset = Some((oh, om));
        }
        _ => return Err(c.malformed()),
    }
    if !c.rest.is_empty() {
        return Err(c.malformed());
    }
    check_ranges((year, month, day, hour, minute, second, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimestampError::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<(), TimestampError>)] = &[
            ("2026-05-27T10:15:00Z", Ok(())),
            ("2026-05-27t10:15:00z", Ok(())),
            ("2026-05-27T10:15:00.5Z", Ok(())),
            ("2026-05-27T10:15:00.123456789+02:00", Ok(())),
            ("2026-05-27T10:15:00-23:59", Ok(())),
            ("2026-05-27T10:15:00+00:00", Ok(())),
            ("0000-01-01T00:00:00Z", Ok(())),
            ("9999-12-31T23:59:60Z", Ok(())),
            ("2024-02-29T00:00:00Z", Ok(())),
            ("2000-02-29T00:00:00Z", Ok(())),
            ("1900-02-29T00:00:00Z", Err(DayOutOfRange)),
            ("2026-02-29T00:00:00Z", Err(DayOutOfRange)),
            ("2026-02-28T00:00:00Z", Ok(())),
            ("2026-04-31T00:00:00Z", Err(DayOutOfRange)),
            ("2026-04-30T00:00:00Z", Ok(())),
            ("2026-01-31T00:00:00Z", Ok(())),
            ("2026-01-32T00:00:00Z", Err(DayOutOfRange)),
            ("2026-01-00T00:00:00Z", Err(DayOutOfRange)),
            ("2026-00-10T00:00:00Z", Err(MonthOutOfRange)),
            ("2026-13-10T00:00:00Z", Err(MonthOutOfRange)),
            ("2026-05-27T24:00:00Z", Err(HourOutOfRange)),
            ("2026-05-27T10:60:00Z", Err(MinuteOutOfRange)),
            ("2026-05-27T10:15:61Z", Err(SecondOutOfRange)),
            ("2026-05-27T10:15:00+24:00", Err(OffsetOutOfRange)),
            ("2026-05-27T10:15:00+01:60", Err(OffsetOutOfRange)),
            ("", Err(Malformed { at: 0 })),
            ("2026", Err(Malformed { at: 4 })),
            ("26-05-27T10:15:00Z", Err(Malformed { at: 2 })),
            ("2026-5-27T10:15:00Z", Err(Malformed { at: 6 })),
            ("2026-05-27 10:15:00Z", Err(Malformed { at: 10 })),
            ("2026-05-27T10:15Z", Err(Malformed { at: 16 })),
            ("2026-05-27T10:15:00", Err(Malformed { at: 19 })),
            ("2026-05-27T10:15:00.Z", Err(Malformed { at: 20 })),
            ("2026-05-27T10:15:00,5Z", Err(Malformed { at: 19 })),
            ("2026-05-27T10:15:00+0100", Err(Malformed { at: 22 })),
            ("2026-05-27T10:15:00+01", Err(Malformed { at: 22 })),
            ("2026-05-27T10:15:00Z ", Err(Malformed { at: 20 })),
            ("2026-05-27T10:15:00ZZ", Err(Malformed { at: 20 })),
            (" 2026-05-27T10:15:00Z", Err(Malformed { at: 0 })),
            ("2026-05-27T10:15:00UTC", Err(Malformed { at: 19 })),
            ("２026-05-27T10:15:00Z", Err(Malformed { at: 0 })),
            ("2026-05-27T10:15:00.٣Z", Err(Malformed { at: 20 })),
        ];
        for (text, want) in cases {
            // Both validators agree, on good text and bad.
            assert_eq!(validate_slowly(text), *want, "{text}");
            let got = Timestamp::parse(text);
            match want {
                Ok(()) => assert_eq!(got.as_ref().map(Timestamp::as_str), Ok(*text), "{text}"),
                Err(e) => assert_eq!(got, Err(*e), "{text}"),
            }
        }
    }

    /// The fast validator and the byte-by-byte one agree on every one-character change and
    /// every truncation of valid timestamps (exhaustive over a set of replacement characters).
    #[test]
    fn fast_and_slow_validators_agree() {
        let templates = [
            "2026-05-27T10:15:00Z",
            "2024-02-29t23:59:60.123456z",
            "1900-12-31T00:00:00-23:59",
            "2026-04-30T10:15:00.5+01:30",
        ];
        let replacements = "0123456789-:.TtZz+ x\u{e9}";
        let mut checked = 0;
        for t in templates {
            for cut in 0..=t.len() {
                let s = &t[..cut];
                assert_eq!(validate(s), validate_slowly(s), "{s}");
                checked += 1;
            }
            for (i, _) in t.char_indices() {
                for r in replacements.chars() {
                    let mut s = t.to_owned();
                    s.replace_range(i..i + 1, &r.to_string());
                    assert_eq!(validate(&s), validate_slowly(&s), "{s}");
                    let mut s = t.to_owned();
                    s.insert(i, r);
                    assert_eq!(validate(&s), validate_slowly(&s), "{s}");
                    checked += 2;
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn conversions_agree() {
        let s = "2026-05-27T10:15:00Z";
        let a = Timestamp::parse(s).unwrap();
        assert_eq!(s.parse::<Timestamp>().unwrap(), a);
        assert_eq!(Timestamp::try_from(s.to_owned()).unwrap(), a);
        assert_eq!(Timestamp::try_from(s).unwrap(), a);
        assert_eq!(a.as_ref(), s);
        assert_eq!(format!("{a}"), s);
        assert!(Timestamp::try_from("nope".to_owned()).is_err());
    }
}
