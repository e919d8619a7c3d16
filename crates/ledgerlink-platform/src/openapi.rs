//! The OpenAPI 3.1 document of the platform API, served at `/api/v1/openapi.json` and snapshot-tested.
//!
//! Written by hand rather than derived with utoipa: the API is a dozen operations over five record shapes, and a
//! derive would add a proc-macro dependency (and its build time on every machine) plus annotations on every
//! handler and type. The snapshot test keeps it honest: a change to the API that is not made here shows up as a
//! snapshot diff, and the API tests check that what the routes return has the documented fields.

use serde_json::{Value, json};

fn money(description: &str) -> Value {
    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": format!("{description} A decimal as a string (never a float), e.g. \"125.50\".")})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": reference("Error")}}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

const RECORDS: [(&str, &str, &str); 5] = [
    ("clients", "Client", "Clients become QuickBooks customers (created, or matched by email/name per the settings)."),
    ("services", "Service", "Services become QuickBooks products/services (mapped in the settings, matched by name, or created)."),
    ("invoices", "Invoice", "Invoices with lines; pushed to QuickBooks when automatic push is on. Payment status flows back."),
    ("expenses", "Expense", "Expenses logged against workflows; become QuickBooks bills or expenses per the settings."),
    ("tax-rates", "TaxRate", "Tax rates; mapped to QuickBooks tax codes in the settings (not written to QuickBooks)."),
];

/// The document.
pub fn document() -> Value {
    let idem = json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255},
        "description": "Makes the request safe to repeat: a repeat returns the first answer (same status and body, header Idempotent-Replayed: true); the same key with a different request is refused with 409."});
    let mut paths = serde_json::Map::new();
    for (path, schema, about) in RECORDS {
        paths.insert(format!("/api/v1/platform/{path}"), json!({
            "post": {
                "operationId": format!("push{schema}"),
                "summary": format!("Create or update a {schema} (by its id)"),
                "description": about,
                "parameters": [idem],
                "requestBody": json_body(reference(schema)),
                "responses": {
                    "201": ok("Stored for the first time; its sync is queued.", reference("Record")),
                    "200": ok("Updated (or unchanged); its sync is queued when it changed.", reference("Record")),
                    "401": error_response("Missing, unknown or revoked token."),
                    "409": error_response("Idempotency-Key reused with a different request, or still in progress."),
                    "422": error_response("Invalid record; `field` names what is wrong."),
                }
            },
            "get": {
                "operationId": format!("list{schema}s"),
                "summary": format!("Every {schema} of the workspace, with its sync status"),
                "responses": {"200": ok("The records.", json!({"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": reference("Record")}}})),
                              "401": error_response("Missing, unknown or revoked token.")}
            }
        }));
        paths.insert(format!("/api/v1/platform/{path}/{{id}}"), json!({
            "get": {
                "operationId": format!("get{schema}"),
                "summary": format!("One {schema} with its sync status"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("The record.", reference("Record")),
                              "401": error_response("Missing, unknown or revoked token."),
                              "404": error_response("No such record in this workspace.")}
            }
        }));
    }
    paths.insert("/api/v1/platform/invoices/{id}/payment".into(), json!({
        "get": {
            "operationId": "getInvoicePayment",
            "summary": "An invoice's payment status as QuickBooks has it",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": ok("Sync and payment state.", json!({"type": "object", "required": ["invoice_id", "sync"], "properties": {
                    "invoice_id": {"type": "string"}, "sync": reference("SyncState"), "payment": {"oneOf": [reference("PaymentState"), {"type": "null"}]}}})),
                          "404": error_response("No such invoice in this workspace.")}
        }
    }));
    paths.insert("/api/v1/platform/workspace".into(), json!({
        "get": {"operationId": "getWorkspace", "summary": "The token's workspace and its QuickBooks connection",
                "responses": {"200": ok("The workspace.", json!({"type": "object", "properties": {"workspace": {"type": "object"}, "quickbooks": {"type": "object"}}}))}}
    }));
    paths.insert("/api/v1/platform/webhooks".into(), json!({
        "post": {"operationId": "subscribeWebhook", "summary": "Subscribe a URL to events",
                 "description": "Deliveries are POSTs of the event as JSON with `Ledgerlink-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`, `Ledgerlink-Event` and `Ledgerlink-Delivery`. Reject timestamps older than a few minutes to refuse replays. Non-2xx answers are retried with exponential backoff.",
                 "parameters": [idem],
                 "requestBody": json_body(json!({"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "format": "uri"},
                    "events": {"type": "array", "items": {"type": "string", "enum": ["invoice.payment_updated", "*"]}}}})),
                 "responses": {"201": ok("The subscription and its signing secret (shown only now).", json!({"type": "object", "required": ["subscription", "secret"],
                    "properties": {"subscription": reference("Subscription"), "secret": {"type": "string"}}})),
                               "422": error_response("Invalid URL or event.")}},
        "get": {"operationId": "listWebhooks", "summary": "The workspace's subscriptions",
                "responses": {"200": ok("Subscriptions.", json!({"type": "object", "properties": {"data": {"type": "array", "items": reference("Subscription")}}}))}}
    }));
    paths.insert("/api/v1/platform/webhooks/{id}".into(), json!({
        "delete": {"operationId": "deleteWebhook", "summary": "Remove a subscription",
                   "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                   "responses": {"204": {"description": "Removed."}, "404": error_response("No such subscription in this workspace.")}}
    }));
    paths.insert("/api/v1/platform/webhook-deliveries".into(), json!({
        "get": {"operationId": "listWebhookDeliveries", "summary": "Recent deliveries, each with every attempt",
                "parameters": [{"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
                "responses": {"200": ok("Deliveries, newest first.", json!({"type": "object", "properties": {"data": {"type": "array", "items": reference("Delivery")}}}))}}
    }));
    paths.insert("/api/v1/platform/events/invoice.payment_updated".into(), json!({
        "description": "Not a route: the body of the `invoice.payment_updated` webhook, for reference.",
        "get": {"operationId": "paymentUpdatedEventShape", "summary": "Shape of the invoice.payment_updated event",
                "responses": {"200": ok("The event as delivered.", reference("PaymentUpdatedEvent"))}}
    }));

    let id = json!({"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$", "description": "The platform's own id; pushing the same id again updates the record."});
    let date = json!({"type": "string", "format": "date"});
    let schemas = json!({
        "Client": {"type": "object", "additionalProperties": false, "required": ["id", "name"], "properties": {
            "id": id, "name": {"type": "string", "maxLength": 100}, "email": {"type": ["string", "null"]}, "phone": {"type": ["string", "null"]}}},
        "Service": {"type": "object", "additionalProperties": false, "required": ["id", "name"], "properties": {
            "id": id, "name": {"type": "string", "maxLength": 100}, "description": {"type": ["string", "null"]}, "unit_price": money("Default unit price.")}},
        "TaxRate": {"type": "object", "additionalProperties": false, "required": ["id", "name", "rate_percent"], "properties": {
            "id": id, "name": {"type": "string"}, "rate_percent": money("Percent, 0-100.")}},
        "InvoiceLine": {"type": "object", "additionalProperties": false, "required": ["service_id", "quantity", "unit_price"], "properties": {
            "service_id": {"type": "string"}, "description": {"type": ["string", "null"]}, "quantity": money("More than zero."),
            "unit_price": money("In the invoice's currency."), "tax_rate_id": {"type": ["string", "null"]}}},
        "Invoice": {"type": "object", "additionalProperties": false, "required": ["id", "client_id", "currency", "issue_date", "lines"], "properties": {
            "id": id, "number": {"type": ["string", "null"], "maxLength": 21}, "client_id": {"type": "string"},
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"}, "issue_date": date, "due_date": {"type": ["string", "null"], "format": "date"},
            "lines": {"type": "array", "minItems": 1, "items": reference("InvoiceLine")}, "memo": {"type": ["string", "null"]}}},
        "Expense": {"type": "object", "additionalProperties": false, "required": ["id", "workflow_id", "vendor", "date", "currency", "amount"], "properties": {
            "id": id, "workflow_id": {"type": "string"}, "vendor": {"type": "string"}, "date": date,
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"}, "amount": money("More than zero."),
            "description": {"type": ["string", "null"]}, "tax_rate_id": {"type": ["string", "null"]}}},
        "SyncState": {"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["pending", "synced", "failed", "needs_review", "held"]},
            "quickbooks_type": {"type": ["string", "null"]}, "quickbooks_id": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"], "description": "Why it failed, needs review or is held."},
            "synced_at": {"type": ["string", "null"], "format": "date-time"}, "quickbooks_total": money("QuickBooks' total including tax (invoices).")}},
        "PaymentState": {"type": "object", "required": ["status", "currency", "total", "amount_paid", "balance"], "properties": {
            "status": {"type": "string", "enum": ["unpaid", "partially_paid", "paid"]}, "currency": {"type": "string"},
            "total": money("Invoice total including tax."), "amount_paid": money("Paid so far."), "balance": money("Still open."),
            "last_payment_date": {"type": ["string", "null"], "format": "date"}, "updated_at": {"type": "string", "format": "date-time"}}},
        "Record": {"type": "object", "required": ["kind", "id", "data", "version", "sync", "created_at", "updated_at"], "properties": {
            "kind": {"type": "string", "enum": ["client", "service", "invoice", "expense", "tax_rate"]}, "id": {"type": "string"},
            "data": {"type": "object", "description": "The record as last pushed."}, "version": {"type": "integer"},
            "sync": reference("SyncState"), "payment": {"oneOf": [reference("PaymentState"), {"type": "null"}]},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
        "Subscription": {"type": "object", "required": ["id", "url", "events", "created_at"], "properties": {
            "id": {"type": "string"}, "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"}}},
        "Delivery": {"type": "object", "required": ["id", "subscription_id", "event_id", "event_type", "status", "attempts"], "properties": {
            "id": {"type": "integer"}, "subscription_id": {"type": "string"}, "event_id": {"type": "string"}, "event_type": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "done", "dead", "paused"]},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"}, "last_error": {"type": ["string", "null"]},
            "attempts": {"type": "array", "items": {"type": "object", "properties": {"attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "ok": {"type": "boolean"}, "status_code": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}, "duration_ms": {"type": "integer"}}}}}},
        "PaymentUpdatedEvent": {"type": "object", "required": ["id", "type", "workspace_id", "created_at", "data"], "properties": {
            "id": {"type": "string"}, "type": {"const": "invoice.payment_updated"}, "workspace_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "data": {"type": "object", "properties": {"invoice_id": {"type": "string"}, "quickbooks_id": {"type": "string"}, "payment": reference("PaymentState")}}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}},
    });
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ledgerlink platform API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Push a platform's clients, services, invoices, expenses and tax rates; read their QuickBooks sync and payment status. Authenticate with `Authorization: Bearer <token>`; a token sees one workspace only."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": Value::Object(paths),
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    })
}
