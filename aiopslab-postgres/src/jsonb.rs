//! Writing JSON into `jsonb` columns so that it reads back exactly as it was written.
//!
//! PostgreSQL keeps a jsonb number as `numeric` and prints it back as a plain decimal, in full: a float written
//! `1e+16` comes back `10000000000000000`, which every JSON reader takes for an integer, and
//! `1.7976931348623157e+308` comes back as 309 digits. [`Jsonb`] writes values the way serde_json does, except for
//! floats that are whole numbers and that serde_json would write with an exponent: those are written in full with a
//! `.0` (`10000000000000000.0`), and `numeric` keeps that scale, so they come back floats. Every other float is
//! written in serde_json's shortest round-trip form; PostgreSQL's plain expansion of it is the same decimal number,
//! which serde_json (with its `float_roundtrip` feature, enabled by this crate and by aiopslab-core) parses back to
//! the same bits. Together: any JSON value that aiopslab-core's sanitizing lets through (no NUL, no `-0.0`) reads
//! back from a jsonb column equal to what was written, number types included.
//!
//! Reads use sqlx's own [`Json`](sqlx::types::Json), which parses with serde_json.

use std::io;

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::types::Json;
use sqlx::{Encode, Postgres, Type};

/// A value bound as a `jsonb` parameter, written so that it reads back unchanged (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Jsonb<T>(pub(crate) T);

impl<T> Type<Postgres> for Jsonb<T> {
    fn type_info() -> PgTypeInfo {
        <Json<()> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        // jsonb only: the encoding below starts with jsonb's version byte.
        *ty == Self::type_info()
    }
}

impl<T> PgHasArrayType for Jsonb<T> {
    fn array_type_info() -> PgTypeInfo {
        <Json<()> as PgHasArrayType>::array_type_info()
    }
}

impl<T: Serialize> Encode<'_, Postgres> for Jsonb<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // jsonb's binary format: version 1, then the JSON text.
        buf.push(1);
        write(&mut **buf, &self.0)?;
        Ok(IsNull::No)
    }
}

/// Writes `value` as JSON text, with whole floats in a form `numeric` keeps as floats.
pub(crate) fn write<W: io::Write, T: Serialize + ?Sized>(writer: W, value: &T) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(writer, WholeFloatsInFull);
    value.serialize(&mut serializer)
}

/// serde_json's compact formatter, but a whole float written with an exponent is written in full, with `.0`.
struct WholeFloatsInFull;

impl serde_json::ser::Formatter for WholeFloatsInFull {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut text = Vec::with_capacity(24);
        serde_json::ser::CompactFormatter.write_f64(&mut text, value)?;
        match (value.fract() == 0.0).then(|| in_full(&text)).flatten() {
            Some(full) => writer.write_all(full.as_bytes()),
            None => writer.write_all(&text),
        }
    }
}

/// `1.2345e+20` → `123450000000000000000.0`; `None` when `text` has no exponent or is not a whole number.
fn in_full(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let (mantissa, exponent) = text.split_once(['e', 'E'])?;
    let exponent: i64 = exponent.parse().ok()?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let zeros = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    if zeros < 0 || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let zeros = usize::try_from(zeros).ok()?;
    Some(format!("{sign}{digits}{}.0", "0".repeat(zeros)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn text(value: &Value) -> String {
        let mut out = Vec::new();
        write(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whole_floats_with_an_exponent_are_written_in_full() {
        assert_eq!(text(&json!(1e16)), "10000000000000000.0");
        assert_eq!(text(&json!(-1.2345e20)), "-123450000000000000000.0");
        let max = text(&json!(f64::MAX));
        assert!(
            max.starts_with("17976931348623157") && max.ends_with("0.0") && max.len() == 311,
            "{max}"
        );
    }

    #[test]
    fn everything_else_is_written_as_serde_json_writes_it() {
        let value =
            json!({"f": [0.1, 1.5e-7, 5e-324, 1e15, 2.0, -3.25], "i": [0, -1, u64::MAX, i64::MIN], "s": "x\"y"});
        assert_eq!(text(&value), value.to_string());
        assert_eq!(text(&json!(1e15)), "1000000000000000.0");
    }

    #[test]
    fn the_text_parses_back_to_the_same_value() {
        for value in [
            json!(1e16),
            json!(f64::MAX),
            json!(-1.7976931348623155e308),
            json!(9.1e18),
            json!(1e300),
        ] {
            let back: Value = serde_json::from_str(&text(&value)).unwrap();
            assert_eq!(back, value, "{value}");
            assert!(back.is_f64(), "{value} stays a float");
        }
    }
}
