//! Integration tests for the flow crate: golden error files, the shipped template, expression semantics and
//! position mapping.
//!
//! Layout: `golden` checks every `tests/golden/*.toml` against its `.err` file (run with `UPDATE_GOLDEN=1` to
//! rewrite them after an intended change, then review the diff); `template` loads the shipped template;
//! `expressions` exercises [`Expr`]; `positions` checks that errors point at the right character.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ledgerlink_flow::{Expr, FlowErrors, Pos, StepKind, Trigger, Vars, parse_flow};
use serde_json::json;

fn no_params() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn errors(source: &str) -> FlowErrors {
    match parse_flow(source, "test.toml", &no_params()) {
        Ok(flow) => panic!("expected errors, got a flow: {flow:?}"),
        Err(e) => e,
    }
}

mod golden {
    use super::*;

    /// Lines `#! set name=value` at the top of a golden file give template parameters.
    fn params_of(source: &str) -> BTreeMap<String, String> {
        source
            .lines()
            .filter_map(|l| l.strip_prefix("#! set "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    #[test]
    fn invalid_flows_report_every_error_exactly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 8,
            "golden files missing from {}",
            dir.display()
        );
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        let mut mismatches = Vec::new();
        for path in files {
            let source = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let actual = match parse_flow(&source, &name, &params_of(&source)) {
                Ok(_) => panic!("{name} is expected to be invalid but parsed"),
                Err(e) => format!("{e}\n"),
            };
            let expected_path = path.with_extension("err");
            if update {
                std::fs::write(&expected_path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!(
                    "{} is missing (run with UPDATE_GOLDEN=1)",
                    expected_path.display()
                )
            });
            if expected != actual {
                mismatches.push(format!(
                    "--- {name}: expected\n{expected}--- actual\n{actual}"
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "golden mismatches:\n{}",
            mismatches.join("\n")
        );
    }
}

mod template {
    use super::*;

    const TEMPLATE: &str =
        include_str!("../../../templates/salesforce-closed-won-to-quickbooks-invoice.toml");
    const FILE: &str = "salesforce-closed-won-to-quickbooks-invoice.toml";

    #[test]
    fn parses_with_defaults() {
        let flow = parse_flow(TEMPLATE, FILE, &no_params()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flow.name, "salesforce-closed-won-to-quickbooks-invoice");
        let ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "account",
                "contact",
                "lines",
                "products",
                "owner",
                "estimate",
                "customer",
                "currency_customer",
                "items",
                "term",
                "rep_class",
                "invoice",
                "writeback"
            ]
        );
        let Trigger::Poll {
            connection,
            object,
            fields,
            interval_seconds,
            overlap_seconds,
            ..
        } = &flow.trigger else {
            panic!("a poll trigger")
        };
        assert_eq!(
            (connection.as_str(), object.as_str()),
            ("salesforce", "Opportunity")
        );
        assert!(fields.iter().any(|f| f == "QuickBooks_Invoice_Id__c"));
        assert_eq!((*interval_seconds, *overlap_seconds), (60, 120));
        assert_eq!(flow.params["currency"].value, "USD");
        assert_eq!(flow.params["income_account"].value, "1");

        let invoice = flow.steps.iter().find(|s| s.id == "invoice").unwrap();
        let StepKind::CreateInvoice {
            connection,
            header,
            line,
            expected_total,
            ..
        } = &invoice.kind
        else {
            panic!("invoice is not create_invoice: {:?}", invoice.kind);
        };
        assert_eq!(connection, "quickbooks");
        let header_fields: Vec<&str> = header.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            header_fields,
            [
                "customer_id",
                "customer_name",
                "doc_number",
                "txn_date",
                "currency",
                "memo",
                "discount_percent",
                "discount_amount",
                "term_id",
                "term_name",
                "due_date",
                "class_id",
                "class_name",
                "custom_fields",
                "estimate_id"
            ]
        );
        // Optional fields left empty by their parameters are not read.
        assert!(!fields.iter().any(String::is_empty), "{fields:?}");
        assert!(fields.iter().any(|f| f == "QuickBooks_Invoice_Number__c"));
        assert!(
            line.iter()
                .any(|(k, e)| k == "item_id" && e.source() == "items[index].Id")
        );
        assert_eq!(expected_total.as_ref().unwrap().source(), "record.Amount");

        let writeback = flow.steps.last().unwrap();
        let StepKind::Update { fields, .. } = &writeback.kind else {
            panic!("writeback is not an update")
        };
        assert_eq!(fields[0].0, "QuickBooks_Invoice_Id__c");
        assert_eq!(fields[1].0, "QuickBooks_Invoice_Number__c");
    }

    #[test]
    fn overrides_are_substituted_everywhere() {
        let params: BTreeMap<String, String> = [
            ("salesforce", "sf-prod"),
            ("quickbooks", "qbo-eu"),
            ("invoice_id_field", "QBO_Invoice__c"),
            ("currency", "EUR"),
            ("poll_interval_seconds", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let flow = parse_flow(TEMPLATE, FILE, &params).unwrap_or_else(|e| panic!("{e}"));
        let Trigger::Poll {
            connection,
            fields,
            interval_seconds,
            ..
        } = &flow.trigger else {
            panic!("a poll trigger")
        };
        assert_eq!(connection, "sf-prod");
        assert_eq!(*interval_seconds, 5);
        assert!(fields.iter().any(|f| f == "QBO_Invoice__c"));
        assert_eq!(flow.params["currency"].value, "EUR");
        let customer = flow.steps.iter().find(|s| s.id == "customer").unwrap();
        let StepKind::FindOrCreate {
            connection,
            source,
            match_rules,
            create,
            ..
        } = &customer.kind
        else {
            panic!("customer is not find_or_create");
        };
        assert_eq!(
            (connection.as_str(), source.connection.as_str()),
            ("qbo-eu", "sf-prod")
        );
        assert_eq!(
            match_rules
                .iter()
                .map(|r| r.field.as_str())
                .collect::<Vec<_>>(),
            ["DisplayName", "PrimaryEmailAddr"]
        );
        assert_eq!(create[0].0, "DisplayName");
        let StepKind::Update {
            connection, fields, ..
        } = &flow.steps.last().unwrap().kind
        else {
            panic!()
        };
        assert_eq!(
            (connection.as_str(), fields[0].0.as_str()),
            ("sf-prod", "QBO_Invoice__c")
        );
    }

    #[test]
    fn rejects_an_unknown_parameter_by_name() {
        let params = BTreeMap::from([("curency".to_owned(), "EUR".to_owned())]);
        let e = parse_flow(TEMPLATE, FILE, &params).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let message = &e.0[0].message;
        assert!(message.contains("unknown parameter `curency`"), "{message}");
        assert!(
            message.contains("income_account, invoice_id_field, invoice_number_field"),
            "{message}"
        );
    }

    /// Runs the template's expressions on a realistic record to show the line mapping lines up with items.
    #[test]
    fn expressions_evaluate_on_sample_data() {
        let flow = parse_flow(TEMPLATE, FILE, &no_params()).unwrap();
        let mut vars = Vars::new();
        vars.insert(
            "params".into(),
            serde_json::Value::Object(flow.params.iter().map(|(k, v)| (k.clone(), json!(v.value))).collect()),
        );
        vars.insert(
            "record".into(),
            json!({"Id": "006000000000001AAA", "Name": "Big deal", "IsWon": true, "Amount": 150.5,
                   "CloseDate": "2024-05-31", "QuickBooks_Invoice_Id__c": null}),
        );
        assert_eq!(
            flow.condition.as_ref().unwrap().eval(&vars).unwrap(),
            json!(true)
        );
        vars["record"]["IsWon"] = json!(false);
        assert_eq!(
            flow.condition.as_ref().unwrap().eval(&vars).unwrap(),
            json!(false)
        );
        vars["record"]["IsWon"] = json!(true);

        vars.insert("customer".into(), json!({"Id": "7", "DisplayName": "Acme"}));
        vars.insert(
            "items".into(),
            json!([{"Id": "11", "Name": "Setup"}, {"Id": "12", "Name": "Support"}]),
        );
        vars.insert("products".into(), json!([{"Description": null, "Name": "Setup"}, {"Description": "Yearly", "Name": "Support"}]));
        vars.insert("currency_customer".into(), json!([]));
        vars.insert("term".into(), json!([{"Id": "3", "Name": "Net 30", "DueDays": 30}]));
        vars.insert("rep_class".into(), json!([]));
        vars.insert("owner".into(), json!(null));
        vars.insert("estimate".into(), json!(null));
        let invoice = flow.steps.iter().find(|s| s.id == "invoice").unwrap();
        let StepKind::CreateInvoice { header, line, existing, .. } = &invoice.kind else {
            panic!()
        };
        let h = |k: &str, vars: &Vars| header.iter().find(|(n, _)| n == k).unwrap().1.eval(vars).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(h("due_date", &vars), json!("2024-06-30"), "close date + the term's 30 days");
        assert_eq!(h("currency", &vars), json!("USD"));
        assert_eq!(h("customer_id", &vars), json!("7"));
        assert_eq!(h("term_name", &vars), json!(null), "no terms field by default");
        assert_eq!(h("discount_percent", &vars), json!(null));
        assert_eq!(h("custom_fields", &vars), json!(null));
        assert_eq!(existing.as_ref().unwrap().eval(&vars).unwrap(), json!(null));
        // With the optional fields in use.
        let mut opt = vars.clone();
        for (k, v) in [("terms_field", "Payment_Terms__c"), ("deal_discount_field", "Deal_Discount__c"), ("currency_field", "CurrencyIsoCode"), ("sales_rep", "custom_field")] {
            opt["params"][k] = json!(v);
        }
        opt["record"]["Payment_Terms__c"] = json!("Net 30");
        opt["record"]["Deal_Discount__c"] = json!(10);
        opt["record"]["CurrencyIsoCode"] = json!("EUR");
        opt.insert("owner".into(), json!({"Id": "005", "Name": "Maria Chen"}));
        opt.insert("estimate".into(), json!({"Id": "41", "LinkedTxn": [{"TxnId": "77", "TxnType": "Invoice"}]}));
        assert_eq!(h("term_name", &opt), json!("Net 30"));
        assert_eq!(h("discount_percent", &opt), json!(10));
        assert_eq!(h("discount_amount", &opt), json!(null));
        assert_eq!(h("currency", &opt), json!("EUR"));
        assert_eq!(h("custom_fields", &opt), json!({"1": "Maria Chen"}));
        assert_eq!(h("estimate_id", &opt), json!("41"));
        assert_eq!(existing.as_ref().unwrap().eval(&opt).unwrap(), json!("77"), "the invoice the estimate was converted to");
        let doc_number = header
            .iter()
            .find(|(k, _)| k == "doc_number")
            .unwrap()
            .1
            .eval(&vars)
            .unwrap();
        assert_eq!(doc_number, json!("SF-006000000000001AAA"));
        assert!(doc_number.as_str().unwrap().len() <= 21);

        vars.insert("line".into(), json!({"Quantity": 2, "UnitPrice": 50.25, "Discount": null, "Description": null, "ServiceDate": null}));
        vars.insert("index".into(), json!(1));
        let mapped: BTreeMap<&str, serde_json::Value> = line
            .iter()
            .map(|(k, e)| (k.as_str(), e.eval(&vars).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        assert_eq!(mapped["item_id"], json!("12"));
        assert_eq!(mapped["description"], json!("Yearly"));
        assert_eq!(mapped["discount_percent"], json!(0));
        assert_eq!(mapped["unit_price"], json!(50.25));
        assert_eq!(mapped["service_date"], json!(null));
    }
}

mod expressions {
    use super::*;

    fn eval(source: &str, vars: serde_json::Value) -> Result<serde_json::Value, String> {
        let vars: Vars = vars.as_object().unwrap().clone();
        Expr::compile(source, Pos { line: 3, column: 5 })
            .unwrap()
            .eval(&vars)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_missing_key_is_an_error_naming_the_key_and_the_expression() {
        let e = eval("record.Phone", json!({"record": {"Name": "x"}})).unwrap_err();
        assert!(e.starts_with("line 3, column 5: no such key: Phone"), "{e}");
        assert!(e.ends_with("(in `record.Phone`)"), "{e}");
    }

    #[test]
    fn has_guards_a_missing_key() {
        let src = "has(record.Phone) ? record.Phone : 'none'";
        assert_eq!(
            eval(src, json!({"record": {"Name": "x"}})).unwrap(),
            json!("none")
        );
        assert_eq!(
            eval(src, json!({"record": {"Phone": "555"}})).unwrap(),
            json!("555")
        );
    }

    #[test]
    fn add_days_moves_a_date_across_months_and_years() {
        let vars = json!({"e": {"TxnDate": "2026-12-20", "Missing": null}, "params": {"days": "30"}});
        assert_eq!(eval("add_days(e.TxnDate, int(params.days))", vars.clone()).unwrap(), json!("2027-01-19"));
        assert_eq!(eval("e.TxnDate.add_days(-20)", vars.clone()).unwrap(), json!("2026-11-30"));
        assert_eq!(eval("add_days(e.Missing, 3)", vars.clone()).unwrap(), json!(null));
        let e = eval("add_days('20 Dec', 3)", vars).unwrap_err();
        assert!(e.contains("expected a date (YYYY-MM-DD), got '20 Dec'"), "{e}");
    }

    #[test]
    fn coalesce_takes_the_first_non_null() {
        assert_eq!(
            eval("coalesce(r.a, r.b, 3)", json!({"r": {"a": null, "b": "x"}})).unwrap(),
            json!("x")
        );
        assert_eq!(
            eval("coalesce(r.a, 0)", json!({"r": {"a": null}})).unwrap(),
            json!(0)
        );
        assert_eq!(
            eval("coalesce(r.a, r.b)", json!({"r": {"a": null, "b": null}})).unwrap(),
            json!(null)
        );
        assert!(
            eval("coalesce(r.missing, 0)", json!({"r": {}}))
                .unwrap_err()
                .contains("no such key: missing")
        );
    }

    #[test]
    fn date_takes_the_day_of_a_date_or_datetime() {
        assert_eq!(
            eval("date(s)", json!({"s": "2024-02-29"})).unwrap(),
            json!("2024-02-29")
        );
        assert_eq!(
            eval("date(s)", json!({"s": "2024-02-29T23:59:59.000+0000"})).unwrap(),
            json!("2024-02-29")
        );
        assert_eq!(eval("date(s)", json!({"s": null})).unwrap(), json!(null));
        let e = eval("date(s)", json!({"s": "2023-02-29"})).unwrap_err();
        assert!(
            e.contains("expected a date (YYYY-MM-DD)") && e.contains("2023-02-29"),
            "{e}"
        );
        assert!(
            eval("date(s)", json!({"s": 20240229}))
                .unwrap_err()
                .contains("expected a string, got int")
        );
    }

    #[test]
    fn add_days_moves_a_date_and_substring_cuts_by_characters() {
        assert_eq!(eval("add_days(s, -7)", json!({"s": "2024-03-04"})).unwrap(), json!("2024-02-26"));
        assert_eq!(eval("add_days(s, 1)", json!({"s": "2024-12-31T10:00:00Z"})).unwrap(), json!("2025-01-01"));
        assert_eq!(eval("add_days(s, 1)", json!({"s": null})).unwrap(), json!(null));
        assert!(eval("add_days(s, 1)", json!({"s": "soon"})).unwrap_err().contains("expected a date"));
        let e = eval("add_days(s, 1.5)", json!({"s": "2024-01-01"})).unwrap_err();
        assert!(e.contains("Unexpected type") && e.contains("add_days(s, 1.5)"), "a fraction of a day is refused: {e}");
        assert_eq!(eval("s.substring(3)", json!({"s": "SF-006Zü"})).unwrap(), json!("006Zü"));
        assert_eq!(eval("s.substring(30)", json!({"s": "SF-1"})).unwrap(), json!(""));
        assert!(eval("s.substring(-1)", json!({"s": "SF-1"})).unwrap_err().contains("must not be negative"));
    }

    #[test]
    fn sum_adds_amounts_exactly_and_max_picks_the_latest_date() {
        // 0.1 + 0.2 in binary is 0.30000000000000004; as amounts it is 0.3.
        let vars = json!({"invoices": [{"Balance": 0.1}, {"Balance": 0.2}, {"Balance": "1200.50"}, {"Balance": null}, {"Balance": 7}]});
        assert_eq!(eval("sum(invoices.map(i, i.Balance))", vars.clone()).unwrap(), json!("1207.8"));
        assert_eq!(eval("invoices.filter(i, false).map(i, i.Balance).sum()", vars.clone()).unwrap(), json!("0"));
        assert!(eval("sum(invoices)", vars.clone()).unwrap_err().contains("expected amounts"));
        assert!(eval("sum(['12 USD'])", vars).unwrap_err().contains("'12 USD' is not an amount"));
        let dates = json!({"d": ["2026-11-21", "2026-12-02", "2026-11-30"]});
        assert_eq!(eval("max(d)", dates).unwrap(), json!("2026-12-02"));
        assert_eq!(eval("max([])", json!({})).unwrap(), json!(null));
    }

    #[test]
    fn string_helpers() {
        let vars = json!({"s": "  Zürich Office "});
        assert_eq!(
            eval("trim(s)", vars.clone()).unwrap(),
            json!("Zürich Office")
        );
        assert_eq!(
            eval("upper(trim(s))", vars.clone()).unwrap(),
            json!("ZÜRICH OFFICE")
        );
        assert_eq!(
            eval("s.trim().lower()", vars).unwrap(),
            json!("zürich office")
        );
        assert_eq!(eval("trim(n)", json!({"n": null})).unwrap(), json!(null));
        assert_eq!(
            eval("string(n) + '-' + string(d)", json!({"n": 42, "d": true})).unwrap(),
            json!("42-true")
        );
    }

    #[test]
    fn nested_json_round_trips() {
        let value = json!({"a": [1, 2.5, "x", null, true, {"b": {"c": [[], {}]}}], "big": 18446744073709551615u64});
        assert_eq!(eval("v", json!({"v": value.clone()})).unwrap(), value);
        assert_eq!(
            eval("{'k': v.a[5].b, 'n': [v.big]}", json!({"v": value})).unwrap(),
            json!({"k": {"c": [[], {}]}, "n": [18446744073709551615u64]})
        );
    }

    #[test]
    fn integers_and_doubles_stay_distinct() {
        assert_eq!(eval("x", json!({"x": 2})).unwrap().to_string(), "2");
        assert_eq!(eval("x", json!({"x": 2.0})).unwrap().to_string(), "2.0");
        assert_eq!(eval("x + 1", json!({"x": 2})).unwrap(), json!(3));
        // CEL does not mix int and double silently: an amount stays what the source sent.
        let e = eval("x + 1", json!({"x": 2.5})).unwrap_err();
        assert!(e.contains("operator 'add'"), "{e}");
        assert_eq!(
            eval("type(x) == double", json!({"x": 2.5})).unwrap(),
            json!(true)
        );
    }

    #[test]
    fn variables_lists_free_identifiers_only() {
        let e = Expr::compile(
            "lines.map(l, l.Id).exists(x, x == record.Id) && type(now) == string",
            Pos::default(),
        )
        .unwrap();
        assert_eq!(e.variables(), ["lines", "record", "now"]);
    }

    #[test]
    fn compile_errors_carry_positions() {
        let e = Expr::compile(
            "a &&\n  b + )",
            Pos {
                line: 10,
                column: 7,
            },
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(
            e.errors[0].pos,
            Pos {
                line: 11,
                column: 7
            }
        );
        assert_eq!(e.errors[0].offset, 11);
        assert_eq!(
            e.to_string(),
            "line 11, column 7: unexpected `)`; expected a value (in `a &&\n  b + )`)"
        );
    }
}

mod positions {
    use super::*;

    const HEAD: &str = "[flow]\nname = \"p\"\n[trigger]\ntype = \"poll\"\nconnection = \"s\"\nobject = \"O\"\nfields = [\"Id\"]\n";

    fn step(body: &str) -> String {
        format!(
            "{HEAD}[[steps]]\nid = \"u\"\ntype = \"update\"\nconnection = \"s\"\nobject = \"O\"\nrecord_id = 'record.Id'\n[steps.fields]\n{body}\n"
        )
    }

    fn only_error(source: &str) -> (u32, u32, String) {
        let e = errors(source);
        assert_eq!(e.0.len(), 1, "{e}");
        (e.0[0].line, e.0[0].column, e.0[0].message.clone())
    }

    #[test]
    fn error_inside_a_multi_line_expression() {
        // Line 15 holds the key; the expression starts on line 16 and its `*` is on line 18.
        let (line, column, message) =
            only_error(&step("A = '''\nrecord.Id\n  + record.Name\n  + * 3\n'''"));
        assert_eq!((line, column), (18, 5), "{message}");
        assert!(message.contains("unexpected `*`"), "{message}");
    }

    #[test]
    fn error_inside_a_basic_string_with_escapes() {
        // The value is `"aé\n" + )`: the `)` is its 10th character but the 18th after the opening quote.
        let (line, column, message) = only_error(&step(r#"A = "\"a\u00e9\\n\" + )""#));
        assert!(message.contains("unexpected `)`"), "{message}");
        assert_eq!((line, column), (15, 23), "{message}");
    }

    #[test]
    fn non_ascii_before_the_error_counts_characters() {
        let (line, column, message) =
            only_error(&step("\"Größe\" = 'record.Name + \"€€€\" + unknown'"));
        assert_eq!((line, column), (15, 34), "{message}");
        assert!(
            message.starts_with("unknown variable `unknown` in `Größe`"),
            "{message}"
        );
    }

    #[test]
    fn toml_errors_are_positioned() {
        let (line, column, message) = only_error("[flow]\nname = \"é\" x\n");
        assert_eq!((line, column), (2, 12), "{message}");
        assert!(message.starts_with("invalid TOML"), "{message}");
    }
}

mod docs {
    use super::*;

    /// The example in the parser's module documentation is a complete, valid flow.
    #[test]
    fn the_documented_example_parses() {
        let source = include_str!("../src/parse.rs");
        let example: String = source
            .lines()
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("//! ")
                        .unwrap_or(l.trim_start_matches("//!"))
                )
            })
            .collect();
        assert!(example.contains("[[steps]]"), "example not found");
        let flow =
            parse_flow(&example, "example.toml", &no_params()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flow.steps.len(), 6);
    }
}
