//! Canonical sales documents. A flow maps a source record into an [`Invoice`]; a connector encodes it for its
//! system. All arithmetic here is exact and in one currency; totals are checked before anything is written.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("line {line}: quantity must not be negative (got {value})")]
    NegativeQuantity { line: usize, value: Decimal },
    #[error("line {line}: discount must be between 0 and 100 percent (got {value})")]
    BadDiscount { line: usize, value: Decimal },
    #[error("an invoice needs at least one line")]
    NoLines,
    #[error("line {line}: needs an item")]
    MissingItem { line: usize },
    #[error("an invoice needs a customer")]
    MissingCustomer,
    #[error("lines total {lines} but the expected total is {expected}")]
    TotalMismatch { lines: Money, expected: Money },
    #[error("the discount on the whole invoice must be between 0 and 100 percent (got {0})")]
    BadDiscountPercent(Decimal),
    #[error("the discount on the whole invoice ({discount}) must not be negative or more than the lines' total ({lines})")]
    BadDiscountAmount { discount: Money, lines: Money },
    #[error("custom field {0}: needs a definition id")]
    MissingCustomFieldId(usize),
}

/// A discount on the whole invoice, taken after the lines (a deal discount). Systems show it as a line of its
/// own below the subtotal (QuickBooks: a `DiscountLineDetail` line), so the lines keep their list prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum InvoiceDiscount {
    /// Percent of the lines' total, 0–100; the amount is rounded to the currency like a line amount.
    Percent(Decimal),
    /// A fixed amount in the invoice's currency.
    Amount(Decimal),
}

/// A text value for one of the target system's custom fields on the invoice (QuickBooks: `CustomField` with
/// `DefinitionId`, `StringType`), such as the sales rep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldValue {
    pub definition_id: String,
    pub name: Option<String>,
    pub value: String,
}

/// One billable line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// The target system's item id (already resolved by the flow).
    pub item_id: String,
    pub item_name: Option<String>,
    pub description: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// Percent discount on this line, 0–100.
    #[serde(default)]
    pub discount_percent: Decimal,
    pub service_date: Option<NaiveDate>,
}

impl InvoiceLine {
    /// quantity × unit price × (1 − discount / 100), rounded to the currency's minor units.
    pub fn amount(&self, currency: Currency) -> Money {
        let gross = self.quantity * self.unit_price;
        let net = gross - gross * self.discount_percent / Decimal::ONE_HUNDRED;
        Money::new(net, currency).rounded()
    }

    /// The price per unit after the line discount, exact (what a system that has no line discount field is sent).
    pub fn net_unit_price(&self) -> Decimal {
        self.unit_price - self.unit_price * self.discount_percent / Decimal::ONE_HUNDRED
    }
}

/// An invoice as ledgerlink understands it, independent of any system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub customer_id: String,
    pub customer_name: Option<String>,
    pub doc_number: Option<String>,
    pub txn_date: Option<NaiveDate>,
    pub due_date: Option<NaiveDate>,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    pub memo: Option<String>,
    /// Free-form references (e.g. the source opportunity id) a connector may store in a custom or private field.
    #[serde(default)]
    pub source_reference: Option<String>,
    /// A discount on the whole invoice, after the lines.
    #[serde(default)]
    pub discount: Option<InvoiceDiscount>,
    /// The payment term (QuickBooks `SalesTermRef`), already resolved to the target's id. The due date is not
    /// derived here: the flow states it (term days after the invoice date), so what is sent is what was checked.
    #[serde(default)]
    pub term_id: Option<String>,
    #[serde(default)]
    pub term_name: Option<String>,
    /// A class (QuickBooks `ClassRef`) put on every line, e.g. the sales rep's.
    #[serde(default)]
    pub class_id: Option<String>,
    #[serde(default)]
    pub class_name: Option<String>,
    #[serde(default)]
    pub custom_fields: Vec<CustomFieldValue>,
    /// The estimate this invoice bills (QuickBooks `LinkedTxn` of type Estimate: the estimate shows as converted).
    #[serde(default)]
    pub estimate_id: Option<String>,
}

impl Invoice {
    /// Checks what every system would reject later, so a bad mapping goes to review before any call is made.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.customer_id.trim().is_empty() {
            return Err(ModelError::MissingCustomer);
        }
        if self.lines.is_empty() {
            return Err(ModelError::NoLines);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let n = i + 1;
            if line.item_id.trim().is_empty() {
                return Err(ModelError::MissingItem { line: n });
            }
            if line.quantity.is_sign_negative() {
                return Err(ModelError::NegativeQuantity { line: n, value: line.quantity });
            }
            if line.discount_percent.is_sign_negative() || line.discount_percent > Decimal::ONE_HUNDRED {
                return Err(ModelError::BadDiscount { line: n, value: line.discount_percent });
            }
        }
        match self.discount {
            Some(InvoiceDiscount::Percent(p)) if p.is_sign_negative() || p > Decimal::ONE_HUNDRED => {
                return Err(ModelError::BadDiscountPercent(p));
            }
            Some(InvoiceDiscount::Amount(a)) if a.is_sign_negative() || a > self.subtotal().amount => {
                return Err(ModelError::BadDiscountAmount { discount: Money::new(a, self.currency), lines: self.subtotal() });
            }
            _ => {}
        }
        if let Some(i) = self.custom_fields.iter().position(|f| f.definition_id.trim().is_empty()) {
            return Err(ModelError::MissingCustomFieldId(i + 1));
        }
        Ok(())
    }

    /// Sum of the line amounts (each already rounded, as the systems total them), before any whole-invoice
    /// discount.
    pub fn subtotal(&self) -> Money {
        self.lines
            .iter()
            .fold(Money::zero(self.currency), |acc, l| Money::new(acc.amount + l.amount(self.currency).amount, self.currency))
    }

    /// The whole-invoice discount as an amount: a percentage of `subtotal` rounded half away from zero to the
    /// currency (as QuickBooks computes a percent-based discount line), or the fixed amount.
    pub fn discount_on(&self, subtotal: Decimal) -> Money {
        let amount = match self.discount {
            None => Decimal::ZERO,
            Some(InvoiceDiscount::Percent(p)) => subtotal * p / Decimal::ONE_HUNDRED,
            Some(InvoiceDiscount::Amount(a)) => a,
        };
        Money::new(amount, self.currency).rounded()
    }

    /// What the invoice is worth before tax: the lines less the whole-invoice discount.
    pub fn total(&self) -> Money {
        self.total_for(self.subtotal().amount)
    }

    /// What an invoice whose lines come to `subtotal` is worth with this invoice's discount.
    pub fn total_for(&self, subtotal: Decimal) -> Money {
        let subtotal = Money::new(subtotal, self.currency).rounded();
        Money::new(subtotal.amount - self.discount_on(subtotal.amount).amount, self.currency)
    }

    /// Checks the lines add up to what the source said the document is worth. The comparison is before the
    /// whole-invoice discount: a Salesforce opportunity's Amount is the sum of its products, and a deal discount
    /// kept in a field of its own comes off after that.
    pub fn check_total(&self, expected: Money) -> Result<(), ModelError> {
        let lines = self.subtotal();
        if lines != expected.rounded() {
            return Err(ModelError::TotalMismatch { lines, expected });
        }
        Ok(())
    }

    /// Merges lines that bill the same item at the same price, discount and service date into one line with the
    /// quantities summed, keeping the first line's place. Lines are only merged when the merged amount is exactly
    /// the sum of their rounded amounts, so merging never moves the total by a cent. Different descriptions are
    /// kept, joined with "; ".
    pub fn merge_lines(&mut self) {
        let currency = self.currency;
        let mut out: Vec<InvoiceLine> = Vec::with_capacity(self.lines.len());
        for line in std::mem::take(&mut self.lines) {
            let same = out.iter_mut().find(|m| {
                m.item_id == line.item_id
                    && m.unit_price == line.unit_price
                    && m.discount_percent == line.discount_percent
                    && m.service_date == line.service_date
            });
            let Some(m) = same else {
                out.push(line);
                continue;
            };
            let mut merged = m.clone();
            merged.quantity += line.quantity;
            if merged.amount(currency).amount != m.amount(currency).amount + line.amount(currency).amount {
                out.push(line);
                continue;
            }
            if let Some(d) = line.description.filter(|d| !d.trim().is_empty()) {
                merged.description = match merged.description.take() {
                    Some(existing) if existing.split("; ").any(|e| e == d) => Some(existing),
                    Some(existing) => Some(format!("{existing}; {d}")),
                    None => Some(d),
                };
            }
            *m = merged;
        }
        self.lines = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn bare() -> Invoice {
        Invoice {
            customer_id: "5".into(),
            customer_name: None,
            doc_number: None,
            txn_date: None,
            due_date: None,
            currency: Currency::USD,
            lines: vec![],
            memo: None,
            source_reference: None,
            discount: None,
            term_id: None,
            term_name: None,
            class_id: None,
            class_name: None,
            custom_fields: vec![],
            estimate_id: None,
        }
    }

    fn line(q: &str, p: &str, disc: &str) -> InvoiceLine {
        InvoiceLine {
            item_id: "1".into(),
            item_name: None,
            description: None,
            quantity: d(q),
            unit_price: d(p),
            discount_percent: d(disc),
            service_date: None,
        }
    }

    #[test]
    fn line_amount_applies_discount_exactly() {
        assert_eq!(line("3", "19.99", "10").amount(Currency::USD).amount, d("53.97"));
        assert_eq!(line("1", "0.10", "0").amount(Currency::USD).amount, d("0.10"));
    }

    #[test]
    fn totals_are_exact_and_checked() {
        let inv = Invoice {
            customer_id: "5".into(),
            customer_name: None,
            doc_number: None,
            txn_date: None,
            due_date: None,
            currency: Currency::USD,
            lines: vec![line("10", "0.10", "0"), line("2", "1500", "15")],
            memo: None,
            source_reference: None,
            ..bare()
        };
        inv.validate().unwrap();
        assert_eq!(inv.total().amount, d("2551.00"));
        assert!(inv.check_total(Money::new(d("2551"), Currency::USD)).is_ok());
        assert!(inv.check_total(Money::new(d("2550.99"), Currency::USD)).is_err());
    }

    #[test]
    fn validation_names_the_bad_line() {
        let mut inv = Invoice {
            customer_id: "5".into(),
            customer_name: None,
            doc_number: None,
            txn_date: None,
            due_date: None,
            currency: Currency::USD,
            lines: vec![line("1", "1", "0"), line("1", "1", "120")],
            memo: None,
            source_reference: None,
            ..bare()
        };
        assert_eq!(inv.validate(), Err(ModelError::BadDiscount { line: 2, value: d("120") }));
        inv.lines.clear();
        assert_eq!(inv.validate(), Err(ModelError::NoLines));
    }

    #[test]
    fn a_deal_discount_comes_off_after_the_lines() {
        let mut inv = Invoice { lines: vec![line("3", "19.99", "0"), line("1", "100", "0")], ..bare() };
        inv.discount = Some(InvoiceDiscount::Percent(d("12.5")));
        inv.validate().unwrap();
        // 159.97 less 12.5 % = 159.97 - 19.99625 → 19.996... rounds to 20.00; the total is 139.97.
        assert_eq!(inv.subtotal().amount, d("159.97"));
        assert_eq!(inv.discount_on(inv.subtotal().amount).amount, d("20.00"));
        assert_eq!(inv.total().amount, d("139.97"));
        // The opportunity's Amount is the lines' sum: the check is before the discount.
        assert!(inv.check_total(Money::new(d("159.97"), Currency::USD)).is_ok());
        inv.discount = Some(InvoiceDiscount::Amount(d("50")));
        assert_eq!(inv.total().amount, d("109.97"));
        inv.discount = Some(InvoiceDiscount::Amount(d("200")));
        assert!(matches!(inv.validate(), Err(ModelError::BadDiscountAmount { .. })));
        inv.discount = Some(InvoiceDiscount::Percent(d("101")));
        assert_eq!(inv.validate(), Err(ModelError::BadDiscountPercent(d("101"))));
    }

    #[test]
    fn merging_sums_quantities_of_the_same_item_and_price_without_moving_a_cent() {
        let mut a = line("2", "10", "0");
        a.description = Some("Licences".into());
        let mut b = line("3", "10", "0");
        b.description = Some("Licences".into());
        let mut other = line("1", "10", "0");
        other.item_id = "2".into();
        let cheaper = line("1", "9", "0");
        let mut inv = Invoice { lines: vec![a, other, b, cheaper], ..bare() };
        let before = inv.total();
        inv.merge_lines();
        assert_eq!(inv.lines.len(), 3);
        assert_eq!((inv.lines[0].quantity, inv.lines[0].description.as_deref()), (d("5"), Some("Licences")));
        assert_eq!(inv.lines[1].item_id, "2");
        assert_eq!(inv.lines[2].unit_price, d("9"));
        assert_eq!(inv.total(), before);

        // 1 × 0.125 twice is 0.13 + 0.13; merged it would be 0.25: those stay apart.
        let mut inv = Invoice { lines: vec![line("1", "0.125", "0"), line("1", "0.125", "0")], ..bare() };
        inv.merge_lines();
        assert_eq!(inv.lines.len(), 2);
    }
}
