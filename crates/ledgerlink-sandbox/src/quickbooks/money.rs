//! Amounts on the wire.
//!
//! Layout: [`decimal_of`] reads a JSON number (or numeric string) exactly through its text, [`number`] writes a
//! [`Decimal`] as a JSON number, [`cents`] rounds like QBO (half away from zero). All arithmetic stays in
//! `rust_decimal`; a float only appears as the final JSON representation, which is what QBO itself emits
//! (`150.0`).

use std::fmt::Write;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// The exact decimal written in a JSON number or numeric string; `None` for anything else. A number's text is
/// written on the stack, so reading amounts while visiting many rows allocates nothing.
pub fn decimal_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => {
            let mut text = NumberText::default();
            match write!(text, "{n}") {
                Ok(()) => parse(text.as_str()?),
                Err(_) => parse(&n.to_string()),
            }
        }
        Value::String(s) => parse(s.trim()),
        _ => None,
    }
}

fn parse(text: &str) -> Option<Decimal> {
    Decimal::from_str(text)
        .ok()
        .or_else(|| Decimal::from_scientific(text).ok())
}

/// Room for the text of any JSON number serde_json holds (at most 24 characters).
#[derive(Default)]
struct NumberText {
    bytes: [u8; 32],
    len: usize,
}

impl NumberText {
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes[..self.len]).ok()
    }
}

impl std::fmt::Write for NumberText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A decimal as a JSON number. The value goes through its decimal text, so the float chosen is the one nearest
/// to the exact amount and prints back as the same digits.
pub fn number(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

/// Rounds to cents, half away from zero.
pub fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_numbers_exactly_and_writes_them_back() {
        let d = decimal_of(&json!(0.1)).unwrap();
        assert_eq!(d, Decimal::from_str("0.1").unwrap());
        assert_eq!(number(d).to_string(), "0.1");
        assert_eq!(number(Decimal::from(150)).to_string(), "150.0");
        assert_eq!(decimal_of(&json!("12.345")).unwrap().to_string(), "12.345");
        assert_eq!(decimal_of(&json!(true)), None);
        assert_eq!(
            decimal_of(&json!(u64::MAX)).unwrap().to_string(),
            u64::MAX.to_string()
        );
        assert_eq!(decimal_of(&json!(-42)).unwrap().to_string(), "-42");
        assert_eq!(decimal_of(&json!(1e-7)).unwrap().to_string(), "0.0000001");
        // Read on the stack, a number reads as its printed text does, the longest floats included.
        for n in [
            json!(-1.2345678901234567e-20),
            json!(-1.7976931348623157e308),
            json!(i64::MIN),
            json!(1e21),
        ] {
            assert_eq!(decimal_of(&n), parse(&n.to_string()), "{n}");
        }
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(
            cents(Decimal::from_str("2.345").unwrap()).to_string(),
            "2.35"
        );
        assert_eq!(
            cents(Decimal::from_str("-2.345").unwrap()).to_string(),
            "-2.35"
        );
        assert_eq!(
            cents(Decimal::from_str("2.344").unwrap()).to_string(),
            "2.34"
        );
    }
}
