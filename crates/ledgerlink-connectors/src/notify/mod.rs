//! Notifications: messages to people, sent to a Slack incoming webhook or by email over SMTP.
//!
//! Layout: [`Message`] is what a flow wants to say (a title, a text, labelled fields). [`Message::render`] checks
//! it once and turns it into a [`Rendered`] message; both channels draw from that one rendering, so a Slack
//! notice and an email of the same message say the same thing in the same order. [`slack`] posts the rendering as
//! Block Kit blocks (with the plain text as the fallback `text`); [`email`] sends the plain text over SMTP with
//! lettre. Failures are [`ConnectorError`]s classified like every other connector's, so the retry engine treats a
//! throttled webhook or a busy mail server the same way it treats a throttled API.

pub mod email;
pub mod slack;

use serde_json::{Value, json};

use crate::ConnectorError;

/// Slack's limit on a header block's text; longer titles are cut with an ellipsis.
const MAX_TITLE_CHARS: usize = 150;
/// Slack's limit on a section's text.
const MAX_TEXT_CHARS: usize = 3000;
/// Slack's limit on the number of fields in one section block; more fields go to further sections.
const FIELDS_PER_SECTION: usize = 10;
/// Slack's limit on one field's text.
const MAX_FIELD_CHARS: usize = 2000;

/// A notification: what happened, in a few words and a few labelled facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// One line; the email subject and the Slack header.
    pub title: String,
    /// The body, may span lines.
    pub text: String,
    /// Labelled facts in display order (`("Invoice", "1042")`).
    pub fields: Vec<(String, String)>,
}

/// A checked message, ready for either channel. Made only by [`Message::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    title: String,
    text: String,
    fields: Vec<(String, String)>,
}

impl Message {
    /// Checks the message and normalises it for sending: the title becomes one trimmed line, the text is trimmed,
    /// field labels and values are trimmed. Refuses, naming the part, an empty title, a field with an empty label
    /// and texts longer than Slack accepts (so an email never carries what the Slack twin could not).
    pub fn render(&self) -> Result<Rendered, ConnectorError> {
        let invalid = |field: String, message: String| ConnectorError::Validation {
            code: "invalid_message".into(),
            message,
            field: Some(field),
        };
        let title = self.title.split_whitespace().collect::<Vec<_>>().join(" ");
        if title.is_empty() {
            return Err(invalid(
                "title".into(),
                "a notification needs a non-empty title".into(),
            ));
        }
        let title = if title.chars().count() > MAX_TITLE_CHARS {
            let cut: String = title.chars().take(MAX_TITLE_CHARS - 1).collect();
            format!("{}…", cut.trim_end())
        } else {
            title
        };
        let text = self.text.trim().to_string();
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid(
                "text".into(),
                format!(
                    "the notification text has {} characters; at most {MAX_TEXT_CHARS} fit",
                    text.chars().count()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, (label, value)) in self.fields.iter().enumerate() {
            let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
            if label.is_empty() {
                return Err(invalid(
                    format!("fields[{i}]"),
                    format!("field {i} has an empty label"),
                ));
            }
            let value = value.trim().to_string();
            // The Slack field holds `*label*\nvalue`: count what is actually sent.
            let len = label.chars().count() + value.chars().count() + 3;
            if len > MAX_FIELD_CHARS {
                return Err(invalid(
                    format!("fields[{i}]"),
                    format!(
                        "field `{label}` is {len} characters long; at most {MAX_FIELD_CHARS} fit"
                    ),
                ));
            }
            fields.push((label, value));
        }
        Ok(Rendered {
            title,
            text,
            fields,
        })
    }
}

impl Rendered {
    /// The one-line title (email subject, Slack header).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The body as plain text: the text, a blank line, then one `Label: value` line per field. This is the email
    /// body and the Slack fallback text (shown in notifications and by clients that cannot draw blocks).
    pub fn plain_body(&self) -> String {
        let mut out = self.text.clone();
        if !self.fields.is_empty() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            let lines: Vec<String> = self
                .fields
                .iter()
                .map(|(l, v)| format!("{l}: {v}"))
                .collect();
            out.push_str(&lines.join("\n"));
        }
        out
    }

    /// The Slack payload: a header block with the title, a section with the text (mrkdwn, escaped), sections of
    /// up to ten fields, and `text` holding the title and plain body as the fallback.
    pub fn slack_payload(&self) -> Value {
        let mut blocks = vec![json!({
            "type": "header",
            "text": { "type": "plain_text", "text": self.title, "emoji": true },
        })];
        if !self.text.is_empty() {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": slack_escape(&self.text) },
            }));
        }
        for chunk in self.fields.chunks(FIELDS_PER_SECTION) {
            let fields: Vec<Value> = chunk
                .iter()
                .map(|(l, v)| json!({ "type": "mrkdwn", "text": format!("*{}*\n{}", slack_escape(l), slack_escape(v)) }))
                .collect();
            blocks.push(json!({ "type": "section", "fields": fields }));
        }
        let body = self.plain_body();
        let fallback = if body.is_empty() {
            self.title.clone()
        } else {
            format!("{}\n{}", self.title, body)
        };
        json!({ "text": slack_escape(&fallback), "blocks": blocks })
    }
}

/// Escapes the three characters Slack's mrkdwn treats as control characters, so a customer name such as
/// `<Acme & Co>` is shown as written instead of becoming a broken link or mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            title: "  Invoice\noverdue ".into(),
            text: "Payment is <late> & unpaid.\n".into(),
            fields: vec![
                ("Invoice".into(), "1042".into()),
                ("Amount".into(), "1250.00 USD".into()),
            ],
        }
    }

    #[test]
    fn plain_body_and_slack_blocks_come_from_one_rendering() {
        let r = message().render().unwrap();
        assert_eq!(r.title(), "Invoice overdue");
        assert_eq!(
            r.plain_body(),
            "Payment is <late> & unpaid.\n\nInvoice: 1042\nAmount: 1250.00 USD"
        );
        let p = r.slack_payload();
        assert_eq!(p["blocks"][0]["text"]["text"], "Invoice overdue");
        assert_eq!(
            p["blocks"][1]["text"]["text"],
            "Payment is &lt;late&gt; &amp; unpaid."
        );
        assert_eq!(p["blocks"][2]["fields"][1]["text"], "*Amount*\n1250.00 USD");
        assert_eq!(
            p["text"],
            "Invoice overdue\nPayment is &lt;late&gt; &amp; unpaid.\n\nInvoice: 1042\nAmount: 1250.00 USD"
        );
    }

    #[test]
    fn many_fields_are_split_into_sections_of_ten() {
        let m = Message {
            title: "t".into(),
            text: String::new(),
            fields: (0..23).map(|i| (format!("f{i}"), i.to_string())).collect(),
        };
        let p = m.render().unwrap().slack_payload();
        let blocks = p["blocks"].as_array().unwrap();
        let sizes: Vec<usize> = blocks[1..]
            .iter()
            .map(|b| b["fields"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn bad_messages_are_refused_naming_the_part() {
        let err = Message {
            title: " \n".into(),
            ..message()
        }
        .render()
        .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "title"),
            "{err:?}"
        );
        let mut m = message();
        m.fields.push((" ".into(), "x".into()));
        let err = m.render().unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "fields[2]"),
            "{err:?}"
        );
        let err = Message {
            text: "x".repeat(MAX_TEXT_CHARS + 1),
            ..message()
        }
        .render()
        .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Validation { field: Some(f), .. } if f == "text"),
            "{err:?}"
        );
    }

    #[test]
    fn long_titles_are_cut_to_slacks_limit() {
        let r = Message {
            title: "a".repeat(400),
            ..message()
        }
        .render()
        .unwrap();
        assert_eq!(r.title().chars().count(), MAX_TITLE_CHARS);
        assert!(r.title().ends_with('…'));
    }
}
