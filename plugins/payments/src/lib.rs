//! Example Cordon plugin: charges an account through a payments API — a side effect that must
//! happen once per idempotency key, however often the call is retried.
//!
//! The plugin does nothing special for that: its `idempotency_key` argument is marked
//! `x-idempotency-key`, so the host keys the call by it (a model can pass a Messages Batch
//! `custom_id` there), stores the outcome durably, replays it for retries, and sends every
//! outbound request with a deterministic `Idempotency-Key` header, so the API dedupes even a
//! re-run after a host crash.
//!
//! ```toml
//! [plugins.payments.config]
//! base_url = "https://payments.example.com"
//! [[plugins.payments.http.grants]]
//! url = "https://payments.example.com/v1/charges"
//! methods = ["POST"]
//! credential = "payments"
//! ```

use cordon_sdk::http::Request;
use cordon_sdk::serde_json::{json, Value};
use cordon_sdk::{Context, Plugin, TaskSupport, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ChargeArgs {
    /// The account to charge, e.g. `acct_42`.
    account: String,
    /// The amount in cents (a positive whole number).
    #[schemars(range(min = 1))]
    amount_cents: u64,
    /// A unique key for this charge, such as an order id or a batch request's `custom_id`.
    /// Retrying with the same key never charges twice; the same key with other arguments is
    /// refused. Leave it out when the token carries an idempotency scope: the host then keys
    /// the charge by the scope and the other arguments.
    #[schemars(extend("x-idempotency-key" = true), length(min = 1, max = 255))]
    #[allow(dead_code, reason = "read by the host, which keys the call by it")]
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Charged {
    /// The charge's id at the payments API.
    charge_id: String,
    /// The charge's status as the API reports it, e.g. `succeeded`.
    status: String,
    /// The account charged.
    account: String,
    /// The amount charged, in cents.
    amount_cents: u64,
}

fn charge(args: ChargeArgs, _cx: &Context) -> Result<Charged, ToolError> {
    let base = cordon_sdk::config("base_url")
        .map(|b| b.trim().trim_end_matches('/').to_owned())
        .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
        .ok_or_else(|| {
            ToolError::new("not_configured", "set `base_url` under `[plugins.payments.config]` in cordon.toml")
        })?;
    let body = json!({ "account": args.account, "amount_cents": args.amount_cents });
    let response = Request::post(format!("{base}/v1/charges"), body.to_string())
        .header("content-type", "application/json")
        .send()?
        .error_for_status()?;
    let reply: Value = response.json()?;
    let field = |name: &str| reply.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Charged {
        charge_id: field("id").ok_or_else(|| ToolError::new("invalid_response", "the API returned no charge id"))?,
        status: field("status").unwrap_or_else(|| "unknown".into()),
        account: args.account,
        amount_cents: args.amount_cents,
    })
}

struct Payments;

impl Plugin for Payments {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "charge",
            "Charges an account through the payments API. Side effect: money moves. Pass a unique \
             idempotency_key per intended charge; retries with the same key return the first result.",
            charge,
        )
        .title("Charge an account")
        .destructive()
        .open_world(true)
        // A slow payments API keeps a client waiting: a client that can take a task gets one.
        .task_support(TaskSupport::Optional)]
    }
}

cordon_sdk::export_plugin!(Payments);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_argument_is_marked_for_the_host() {
        let tools = Payments::tools();
        let schema = tools[0].input_schema();
        assert_eq!(schema["properties"]["idempotency_key"]["x-idempotency-key"], json!(true));
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
