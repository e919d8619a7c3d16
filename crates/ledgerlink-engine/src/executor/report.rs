//! The `reconcile` step: evaluates both sides into exact amounts, compares them ([`crate::reconcile`]) and keeps
//! the report in the store, one per (flow, period) — a re-run of the same period returns the report it made the
//! first time instead of a second one.

use ledgerlink_flow::{Expr, ReconcileSide, Step};
use ledgerlink_model::{Currency, Money};
use ledgerlink_store::NewReport;
use serde_json::{Value, json};

use super::{PlannedWrite, Run, StepError, invalid, to_decimal};
use crate::reconcile::{self, Entry};

/// The longest summary a report hands to a notification: Slack's section limit (3000) less room for the title.
const SUMMARY_CHARS: usize = 2800;

impl Run<'_> {
    fn side_entries(&mut self, step: &Step, side: &ReconcileSide) -> Result<Vec<Entry>, StepError> {
        let items = self.eval_list(step, &side.items, &format!("items of the {} side", side.name))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let shadowed = self.scope.push("item", item);
            let entry = self.side_entry(step, side, i);
            self.scope.pop("item", shadowed);
            out.push(entry?);
        }
        Ok(out)
    }

    fn side_entry(&self, step: &Step, side: &ReconcileSide, i: usize) -> Result<Entry, StepError> {
        let n = i + 1;
        let name = &side.name;
        let key = self
            .eval_string(step, &side.key, "key")?
            .ok_or_else(|| invalid(step, format!("{name} {n}: its key `{}` is empty", side.key.source())))?;
        let amount = to_decimal(&self.eval(step, &side.amount)?).map_err(|m| invalid(step, format!("{name} {key}: amount: {m}")))?;
        let currency = match &side.currency {
            None => Currency::USD,
            Some(expr) => match self.eval_string(step, expr, "currency")? {
                None => Currency::USD,
                Some(code) => Currency::parse(&code).map_err(|e| invalid(step, format!("{name} {key}: {e}")))?,
            },
        };
        let label = match &side.label {
            Some(expr) => self.eval_string(step, expr, "label")?.unwrap_or_else(|| key.clone()),
            None => key.clone(),
        };
        Ok(Entry { key, label, amount: Money::new(amount, currency) })
    }

    pub(super) async fn reconcile(
        &mut self,
        step: &Step,
        title: &Expr,
        period: &Expr,
        left: &ReconcileSide,
        right: &ReconcileSide,
    ) -> Result<Value, StepError> {
        let title = self.eval_string(step, title, "title")?.ok_or_else(|| invalid(step, "the report's title is empty".into()))?;
        let period = self.eval_string(step, period, "period")?.ok_or_else(|| invalid(step, "the report's period is empty".into()))?;
        let l = self.side_entries(step, left)?;
        let r = self.side_entries(step, right)?;
        let result = reconcile::compare(&left.name, l, &right.name, r);
        let counts = result.counts();
        let text = format!("{title}\n\n{}", result.text());
        if let Some(plan) = &mut self.plan {
            // A dry run stores nothing; it says whether a report would be kept (none yet for the period).
            let reports = self.engine.store.list_reports(Some(&self.flow.name), 1000).await?;
            if !reports.iter().any(|r| r.report.period == period) {
                plan.push(PlannedWrite::Report { flow: self.flow.name.clone(), period: period.clone(), title: title.clone(), mismatches: result.findings.len() });
            }
            let summary = result.summary(SUMMARY_CHARS, "the full report is kept in ledgerlink");
            return Ok(json!({"id": null, "title": title, "period": period, "text": text, "summary": summary, "counts": counts, "new": true}));
        }
        let (stored, new) = self
            .engine
            .store
            .put_report(&NewReport {
                flow: self.flow.name.clone(),
                kind: "reconciliation".into(),
                period: period.clone(),
                title: title.clone(),
                text,
                body: result.body(),
                created_at: crate::now(),
            })
            .await?;
        if new {
            self.writes += 1;
        } else {
            self.count(|s| &s.duplicates_prevented);
        }
        // The summary of the stored report (the first made for the period), so a re-run says what was kept.
        let more = format!("ledgerlink reports show {}", stored.id);
        let summary = if new { result.summary(SUMMARY_CHARS, &more) } else { cut(&stored.report.text, SUMMARY_CHARS, &more) };
        Ok(json!({
            "id": stored.id,
            "title": stored.report.title,
            "period": period,
            "text": stored.report.text,
            "summary": summary,
            "counts": stored.report.body.get("counts").cloned().unwrap_or(counts),
            "new": new,
        }))
    }
}

/// `text` without its first (title) paragraph, cut at a line to `max` characters.
fn cut(text: &str, max: usize, more: &str) -> String {
    let body = text.split_once("\n\n").map_or(text, |(_, b)| b);
    if body.chars().count() <= max {
        return body.to_string();
    }
    let mut out = String::new();
    for line in body.lines() {
        if out.chars().count() + line.chars().count() + more.len() + 10 > max {
            out.push_str("\n… ");
            out.push_str(more);
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}
