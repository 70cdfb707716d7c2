//! Example Cordon plugin: a few small tools that show typed arguments, structured output,
//! enums and typed errors.

use cordon_sdk::{Context, Plugin, Tool, ToolError, WithText};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EchoArgs {
    /// The text to send back unchanged.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Echoed {
    /// The text that was sent.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TwoNumbers {
    /// The first operand.
    a: f64,
    /// The second operand.
    b: f64,
}

#[derive(Serialize, JsonSchema)]
struct Sum {
    /// `a + b`.
    sum: f64,
}

#[derive(Serialize, JsonSchema)]
struct Quotient {
    /// `a / b`.
    quotient: f64,
}

/// The tone of a greeting.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Style {
    Formal,
    Casual,
    Pirate,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GreetArgs {
    /// Who to greet.
    name: String,
    /// The tone of the greeting: `formal`, `casual` or `pirate`.
    style: Style,
}

#[derive(Serialize, JsonSchema)]
struct Greeting {
    /// The greeting, ready to show.
    greeting: String,
}

struct Demo;

impl Plugin for Demo {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "echo",
                "Returns the text it was given, unchanged.",
                |a: EchoArgs, _: &Context| {
                    let text = a.text.clone();
                    Ok(WithText::new(Echoed { text: a.text }, text))
                },
            )
            .title("Echo")
            .read_only()
            .idempotent()
            .open_world(false),
            Tool::new(
                "add",
                "Adds two numbers and returns their sum.",
                |a: TwoNumbers, _: &Context| Ok(Sum { sum: a.a + a.b }),
            )
            .title("Add")
            .read_only()
            .open_world(false),
            Tool::new(
                "greet",
                "Greets someone by name in the chosen style.",
                |a: GreetArgs, _: &Context| {
                    let greeting = match a.style {
                        Style::Formal => format!("Good day, {}.", a.name),
                        Style::Casual => format!("Hey {}!", a.name),
                        Style::Pirate => format!("Ahoy, {}! Welcome aboard, matey.", a.name),
                    };
                    Ok(Greeting { greeting })
                },
            )
            .title("Greet")
            .read_only()
            .open_world(false),
            Tool::new(
                "divide",
                "Divides a by b. Fails with `division_by_zero` when b is 0.",
                |a: TwoNumbers, _: &Context| {
                    if a.b == 0.0 {
                        return Err(ToolError::new(
                            "division_by_zero",
                            "cannot divide by zero: b must not be 0",
                        ));
                    }
                    Ok(Quotient {
                        quotient: a.a / a.b,
                    })
                },
            )
            .title("Divide")
            .read_only()
            .open_world(false),
        ]
    }
}

cordon_sdk::export_plugin!(Demo);
