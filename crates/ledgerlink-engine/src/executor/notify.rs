//! The `notify` step: a message through a Slack or email connection, sent at most once per key.
//!
//! The key is [`keys::action_key`] over (flow, what the message is about, step): with `once_key`, what the key
//! expression gives (an invoice id, a week), whatever triggered the run; without it, the trigger record (or a
//! schedule's firing), plus the element's position inside `for_each`. Its write intent is stored before the send
//! and completed after, like a create's: a re-run finds it done and sends nothing. A crash between the send and
//! the completion can repeat one message on the retry — the lesser harm next to a lost one.

use ledgerlink_connectors::ConnectorError;
use ledgerlink_connectors::notify::Message;
use ledgerlink_flow::{Expr, Mapping, Step};
use ledgerlink_model::RecordRef;
use ledgerlink_store::{IntentStatus, NewWriteIntent};
use serde_json::{Value, json};

use super::{ExecError, Invalid, PlannedWrite, Run, StepError, conn_err, invalid};
use crate::keys;

/// The object name notifications carry in write intents and the audit log.
const MESSAGE: &str = "message";

impl Run<'_> {
    /// An expression's value as message text: strings as they are, numbers and booleans written out, null empty.
    fn eval_text(&self, step: &Step, expr: &Expr, what: &str) -> Result<String, StepError> {
        match self.eval(step, expr)? {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(v.to_string()),
            other => Err(invalid(step, format!("{what} must be text, but `{}` gave {other}", expr.source()))),
        }
    }

    /// What the message is about, for its key; see the module documentation.
    fn message_subject(&self, step: &Step, once_key: Option<&Expr>) -> Result<(RecordRef, String), StepError> {
        if let Some(expr) = once_key {
            let value = self
                .eval_string(step, expr, "once_key")?
                .ok_or_else(|| invalid(step, format!("`once_key` `{}` is empty: a message needs something to be sent once for", expr.source())))?;
            return Ok((RecordRef::new("once", &self.flow.name, value), step.id.clone()));
        }
        let subject = match self.trigger_ref() {
            Some(r) => r,
            None => {
                let firing = self.scope.get("record").and_then(|r| r.get("scheduled_for")).and_then(Value::as_str).unwrap_or_default();
                RecordRef::new("schedule", &self.flow.name, firing)
            }
        };
        let action = match (step.for_each.is_some(), self.scope.get("index")) {
            (true, Some(i)) => format!("{}#{i}", step.id),
            _ => step.id.clone(),
        };
        Ok((subject, action))
    }

    pub(super) async fn notify(
        &mut self,
        step: &Step,
        connection: &str,
        title: &Expr,
        text: &Expr,
        fields: &Mapping,
        once_key: Option<&Expr>,
    ) -> Result<Value, StepError> {
        let mut message = Message { title: self.eval_text(step, title, "title")?, text: self.eval_text(step, text, "text")?, fields: Vec::new() };
        for (label, expr) in fields {
            message.fields.push((label.clone(), self.eval_text(step, expr, &format!("field `{label}`"))?));
        }
        // Checked before anything is stored: a message Slack would refuse is a mapping problem, not a retry.
        if let Err(e) = message.render() {
            return Err(invalid(step, format!("the message cannot be sent: {e}")));
        }
        let notifier = self.engine.notifiers.get(connection).cloned().ok_or_else(|| {
            StepError::Exec(ExecError::Other(format!("step `{}`: notification connection `{connection}` is not configured", step.id)))
        })?;
        let (subject, action) = self.message_subject(step, once_key)?;
        let key = keys::action_key(&self.flow.name, &subject, &action);
        let payload = json!({"title": message.title, "text": message.text, "fields": message.fields.iter().map(|(l, v)| json!([l, v])).collect::<Vec<_>>()});
        let store = self.engine.store.clone();
        let already = store.get_intent(&key).await?.is_some_and(|i| i.status == IntentStatus::Done);
        if already {
            self.count(|s| &s.duplicates_prevented);
            return Ok(json!({"sent": false, "key": key}));
        }
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Notify {
                connection: connection.into(),
                title: message.title.clone(),
                text: message.text.clone(),
                fields: payload["fields"].clone(),
            });
            return Ok(json!({"sent": false, "key": key, "planned": true}));
        }
        let locks = self.engine.locks.clone();
        let _turn = locks.lock(&key).await;
        let intent = store
            .begin_intent(&NewWriteIntent {
                key: key.clone(),
                flow: self.flow.name.clone(),
                job_id: self.job_id,
                connection: connection.to_string(),
                object: MESSAGE.into(),
                action: action.clone(),
                payload: payload.clone(),
                created_at: crate::now(),
            })
            .await?;
        if intent.status == IntentStatus::Done {
            self.count(|s| &s.duplicates_prevented);
            return Ok(json!({"sent": false, "key": key}));
        }
        match notifier.send(&message).await {
            Ok(()) => {
                let audit = self.audit_entry(connection, MESSAGE, None, "notify", "ok", None, Some(payload.clone()), None);
                store.complete_intent(&key, notifier.system(), &payload, crate::now(), &audit).await?;
                self.writes += 1;
                Ok(json!({"sent": true, "key": key}))
            }
            Err(e) => {
                self.record_audit(self.audit_entry(connection, MESSAGE, None, "notify", "error", None, Some(payload.clone()), Some(e.to_string()))).await?;
                if let ConnectorError::Validation { code, message, field } = &e {
                    return Err(StepError::Invalid(Invalid {
                        step: step.id.clone(),
                        kind: "rejected",
                        reason: format!("{connection} refused the message: {message}"),
                        details: json!({"code": code, "field": field, "message": payload}),
                    }));
                }
                Err(conn_err(step, e))
            }
        }
    }
}
