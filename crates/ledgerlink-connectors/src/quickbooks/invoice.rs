//! Encoding a canonical [`Invoice`] as a QuickBooks Invoice create payload.
//!
//! QBO has no per-line discount on a sales line, so the discount is folded into the unit price (exactly, as
//! `Decimal`) and stated in the line description; the line `Amount` is the canonical line amount rounded to the
//! currency, which is what QBO totals. A discount on the whole invoice is a `DiscountLineDetail` line after the
//! item lines (percent-based, or a fixed amount), which QBO takes off the subtotal. The payment term is
//! `SalesTermRef`, a class goes on every item line as `ClassRef` (QBO's per-line class tracking; a header
//! `ClassRef` is ignored by companies that track classes per line), custom fields are `StringType`, and the
//! estimate being billed is a `LinkedTxn` of type `Estimate`. Amounts become JSON numbers from their decimal
//! text, never from f64 arithmetic.

use std::str::FromStr;

use ledgerlink_model::{Invoice, InvoiceDiscount, InvoiceLine};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use crate::{ConnectorError, Record};

/// A decimal as a JSON number, through its text so no binary floating-point arithmetic touches it.
pub fn decimal_number(d: Decimal) -> Result<Value, ConnectorError> {
    let text = d.normalize().to_string();
    serde_json::Number::from_str(&text).map(Value::Number).map_err(|e| ConnectorError::Validation {
        code: "invalid_amount".into(),
        message: format!("the amount {text} cannot be written as a JSON number: {e}"),
        field: None,
    })
}

fn line_description(line: &InvoiceLine) -> Option<String> {
    let base = line.description.clone().or_else(|| line.item_name.clone()).filter(|s| !s.trim().is_empty());
    if line.discount_percent.is_zero() {
        return base;
    }
    let note = format!("{}% discount", line.discount_percent.normalize());
    Some(match base {
        Some(b) => format!("{b} ({note})"),
        None => format!("({note})"),
    })
}

fn private_note(invoice: &Invoice) -> Option<String> {
    let memo = invoice.memo.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let source = invoice.source_reference.as_deref().map(str::trim).filter(|s| !s.is_empty());
    match (memo, source) {
        (Some(m), Some(s)) => Some(format!("{m}\nSource: {s}")),
        (Some(m), None) => Some(m.to_string()),
        (None, Some(s)) => Some(format!("Source: {s}")),
        (None, None) => None,
    }
}

/// The QBO Invoice payload for `invoice`. The invoice is validated first, so a bad mapping is refused here with
/// the line named rather than by QuickBooks.
pub fn encode_invoice(invoice: &Invoice) -> Result<Record, ConnectorError> {
    invoice.validate().map_err(|e| ConnectorError::Validation {
        code: "invalid_invoice".into(),
        message: e.to_string(),
        field: None,
    })?;
    let mut out = Map::new();
    let mut customer = Map::new();
    customer.insert("value".into(), json!(invoice.customer_id));
    if let Some(name) = &invoice.customer_name {
        customer.insert("name".into(), json!(name));
    }
    out.insert("CustomerRef".into(), Value::Object(customer));
    if let Some(doc) = &invoice.doc_number {
        out.insert("DocNumber".into(), json!(doc));
    }
    if let Some(d) = invoice.txn_date {
        out.insert("TxnDate".into(), json!(d.format("%Y-%m-%d").to_string()));
    }
    if let Some(d) = invoice.due_date {
        out.insert("DueDate".into(), json!(d.format("%Y-%m-%d").to_string()));
    }
    out.insert("CurrencyRef".into(), json!({ "value": invoice.currency.as_str() }));
    if let Some(note) = private_note(invoice) {
        out.insert("PrivateNote".into(), json!(note));
    }
    if let Some(term) = &invoice.term_id {
        out.insert("SalesTermRef".into(), reference(term, invoice.term_name.as_deref()));
    }
    if !invoice.custom_fields.is_empty() {
        let fields: Vec<Value> = invoice
            .custom_fields
            .iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert("DefinitionId".into(), json!(f.definition_id));
                if let Some(name) = &f.name {
                    m.insert("Name".into(), json!(name));
                }
                m.insert("Type".into(), json!("StringType"));
                m.insert("StringValue".into(), json!(f.value));
                Value::Object(m)
            })
            .collect();
        out.insert("CustomField".into(), Value::Array(fields));
    }
    if let Some(estimate) = &invoice.estimate_id {
        out.insert("LinkedTxn".into(), json!([{"TxnId": estimate, "TxnType": "Estimate"}]));
    }
    let mut lines = Vec::with_capacity(invoice.lines.len());
    for (i, line) in invoice.lines.iter().enumerate() {
        let mut item = Map::new();
        item.insert("value".into(), json!(line.item_id));
        if let Some(name) = &line.item_name {
            item.insert("name".into(), json!(name));
        }
        let mut detail = Map::new();
        detail.insert("ItemRef".into(), Value::Object(item));
        detail.insert("Qty".into(), decimal_number(line.quantity)?);
        detail.insert("UnitPrice".into(), decimal_number(line.net_unit_price())?);
        if let Some(d) = line.service_date {
            detail.insert("ServiceDate".into(), json!(d.format("%Y-%m-%d").to_string()));
        }
        if let Some(class) = &invoice.class_id {
            detail.insert("ClassRef".into(), reference(class, invoice.class_name.as_deref()));
        }
        let mut l = Map::new();
        l.insert("LineNum".into(), json!(i + 1));
        if let Some(desc) = line_description(line) {
            l.insert("Description".into(), json!(desc));
        }
        l.insert("Amount".into(), decimal_number(line.amount(invoice.currency).amount)?);
        l.insert("DetailType".into(), json!("SalesItemLineDetail"));
        l.insert("SalesItemLineDetail".into(), Value::Object(detail));
        lines.push(Value::Object(l));
    }
    if let Some(discount) = invoice.discount {
        let amount = invoice.discount_on(invoice.subtotal().amount).amount;
        let detail = match discount {
            InvoiceDiscount::Percent(p) => json!({"PercentBased": true, "DiscountPercent": decimal_number(p)?}),
            InvoiceDiscount::Amount(_) => json!({"PercentBased": false}),
        };
        if !amount.is_zero() || matches!(discount, InvoiceDiscount::Percent(p) if !p.is_zero()) {
            lines.push(json!({
                "LineNum": lines.len() + 1,
                "Amount": decimal_number(amount)?,
                "DetailType": "DiscountLineDetail",
                "DiscountLineDetail": detail,
            }));
        }
    }
    out.insert("Line".into(), Value::Array(lines));
    Ok(out)
}

fn reference(id: &str, name: Option<&str>) -> Value {
    match name {
        Some(n) => json!({"value": id, "name": n}),
        None => json!({"value": id}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use ledgerlink_model::Currency;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn line(item: &str, q: &str, p: &str, disc: &str) -> InvoiceLine {
        InvoiceLine {
            item_id: item.into(),
            item_name: Some(format!("Item {item}")),
            description: None,
            quantity: d(q),
            unit_price: d(p),
            discount_percent: d(disc),
            service_date: None,
        }
    }

    fn invoice(lines: Vec<InvoiceLine>) -> Invoice {
        Invoice {
            customer_id: "58".into(),
            customer_name: Some("Amy's Bird Sanctuary".into()),
            doc_number: Some("SF-1001".into()),
            txn_date: NaiveDate::from_ymd_opt(2024, 3, 1),
            due_date: NaiveDate::from_ymd_opt(2024, 3, 31),
            currency: Currency::USD,
            lines,
            memo: Some("Thanks for your business".into()),
            source_reference: Some("salesforce/Opportunity/006000000000001AAA".into()),
            discount: None,
            term_id: None,
            term_name: None,
            class_id: None,
            class_name: None,
            custom_fields: vec![],
            estimate_id: None,
        }
    }

    #[test]
    fn encodes_header_fields() {
        let out = encode_invoice(&invoice(vec![line("1", "1", "100", "0")])).unwrap();
        assert_eq!(out["CustomerRef"], json!({"value": "58", "name": "Amy's Bird Sanctuary"}));
        assert_eq!(out["DocNumber"], json!("SF-1001"));
        assert_eq!(out["TxnDate"], json!("2024-03-01"));
        assert_eq!(out["DueDate"], json!("2024-03-31"));
        assert_eq!(out["CurrencyRef"], json!({"value": "USD"}));
        assert_eq!(
            out["PrivateNote"],
            json!("Thanks for your business\nSource: salesforce/Opportunity/006000000000001AAA")
        );
    }

    #[test]
    fn discounts_fold_into_unit_price_with_exact_amounts() {
        let mut l1 = line("1", "3", "19.99", "10");
        l1.description = Some("Garden hose".into());
        l1.service_date = NaiveDate::from_ymd_opt(2024, 2, 15);
        let l2 = line("2", "2", "1500", "15");
        let l3 = line("3", "10", "0.10", "0");
        let out = encode_invoice(&invoice(vec![l1, l2, l3])).unwrap();
        let lines = out["Line"].as_array().unwrap();
        assert_eq!(lines.len(), 3);

        assert_eq!(lines[0]["Amount"].to_string(), "53.97");
        assert_eq!(lines[0]["Description"], json!("Garden hose (10% discount)"));
        assert_eq!(lines[0]["DetailType"], json!("SalesItemLineDetail"));
        let det = &lines[0]["SalesItemLineDetail"];
        assert_eq!(det["Qty"].to_string(), "3");
        assert_eq!(det["UnitPrice"].to_string(), "17.991");
        assert_eq!(det["ItemRef"], json!({"value": "1", "name": "Item 1"}));
        assert_eq!(det["ServiceDate"], json!("2024-02-15"));

        assert_eq!(lines[1]["Amount"].to_string(), "2550");
        assert_eq!(lines[1]["SalesItemLineDetail"]["UnitPrice"].to_string(), "1275");
        assert_eq!(lines[1]["Description"], json!("Item 2 (15% discount)"));

        assert_eq!(lines[2]["Amount"].to_string(), "1");
        assert_eq!(lines[2]["SalesItemLineDetail"]["UnitPrice"].to_string(), "0.1");
        assert_eq!(lines[2]["Description"], json!("Item 3"));
        assert!(lines[2]["SalesItemLineDetail"].get("ServiceDate").is_none());

        // The sum of the encoded amounts is the canonical total, to the cent.
        let sum: Decimal = lines.iter().map(|l| d(&l["Amount"].to_string())).sum();
        assert_eq!(sum, d("2604.97"));
    }

    #[test]
    fn amounts_are_rounded_half_away_from_zero() {
        // 1 × 0.125 → 0.13 (not the banker's 0.12).
        let out = encode_invoice(&invoice(vec![line("1", "1", "0.125", "0")])).unwrap();
        assert_eq!(out["Line"][0]["Amount"].to_string(), "0.13");
        // 7 × 9.99 less 12.5% = 61.18875: the amount is rounded, the unit price stays exact.
        let out = encode_invoice(&invoice(vec![line("1", "7", "9.99", "12.5")])).unwrap();
        assert_eq!(out["Line"][0]["Amount"].to_string(), "61.19");
        assert_eq!(out["Line"][0]["SalesItemLineDetail"]["UnitPrice"].to_string(), "8.74125");
    }

    #[test]
    fn invalid_invoices_are_refused_before_encoding() {
        let mut inv = invoice(vec![line("1", "1", "1", "0"), line("", "1", "1", "0")]);
        let e = encode_invoice(&inv).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        inv.lines.clear();
        assert!(encode_invoice(&inv).is_err());
    }

    #[test]
    fn optional_fields_are_left_out() {
        let mut inv = invoice(vec![line("1", "1", "5", "0")]);
        inv.customer_name = None;
        inv.doc_number = None;
        inv.memo = None;
        inv.source_reference = None;
        inv.txn_date = None;
        inv.due_date = None;
        let out = encode_invoice(&inv).unwrap();
        assert_eq!(out["CustomerRef"], json!({"value": "58"}));
        for k in ["DocNumber", "PrivateNote", "TxnDate", "DueDate"] {
            assert!(out.get(k).is_none(), "{k}");
        }
    }

    #[test]
    fn deal_discount_term_class_custom_field_and_estimate_are_encoded() {
        let mut inv = invoice(vec![line("1", "2", "100", "0"), line("2", "1", "50", "10")]);
        inv.discount = Some(InvoiceDiscount::Percent(d("10")));
        inv.term_id = Some("3".into());
        inv.term_name = Some("Net 30".into());
        inv.class_id = Some("7".into());
        inv.class_name = Some("Maria Chen".into());
        inv.custom_fields = vec![ledgerlink_model::CustomFieldValue { definition_id: "1".into(), name: Some("Sales Rep".into()), value: "Maria Chen".into() }];
        inv.estimate_id = Some("41".into());
        let out = encode_invoice(&inv).unwrap();
        assert_eq!(out["SalesTermRef"], json!({"value": "3", "name": "Net 30"}));
        assert_eq!(out["CustomField"], json!([{"DefinitionId": "1", "Name": "Sales Rep", "Type": "StringType", "StringValue": "Maria Chen"}]));
        assert_eq!(out["LinkedTxn"], json!([{"TxnId": "41", "TxnType": "Estimate"}]));
        let lines = out["Line"].as_array().unwrap();
        assert_eq!(lines.len(), 3);
        for l in &lines[..2] {
            assert_eq!(l["SalesItemLineDetail"]["ClassRef"], json!({"value": "7", "name": "Maria Chen"}));
        }
        // 200 + 45 = 245; 10 % of it is 24.50.
        assert_eq!(lines[2]["DetailType"], json!("DiscountLineDetail"));
        assert_eq!(lines[2]["DiscountLineDetail"], json!({"PercentBased": true, "DiscountPercent": 10}));
        assert_eq!(lines[2]["Amount"].to_string(), "24.5");

        inv.discount = Some(InvoiceDiscount::Amount(d("20.25")));
        let out = encode_invoice(&inv).unwrap();
        assert_eq!(out["Line"][2]["DiscountLineDetail"], json!({"PercentBased": false}));
        assert_eq!(out["Line"][2]["Amount"].to_string(), "20.25");
        inv.discount = Some(InvoiceDiscount::Amount(d("0")));
        assert_eq!(encode_invoice(&inv).unwrap()["Line"].as_array().unwrap().len(), 2, "no discount line for nothing");
    }
}
