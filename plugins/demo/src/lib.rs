//! Example Cordon plugin: a few small tools that show typed arguments, structured output,
//! enums, typed errors, progress reports and log lines.

use std::time::Duration;

use cordon_sdk::{log, Context, Plugin, Tool, ToolError, WithText};
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WorkArgs {
    /// How many steps to work through.
    #[schemars(range(min = 1, max = 100))]
    steps: u32,
    /// How long each step takes, in milliseconds.
    #[schemars(range(max = 10000))]
    step_ms: u64,
}

#[derive(Serialize, JsonSchema)]
struct Worked {
    /// How many steps were done.
    steps: u32,
}

/// Works through `steps` steps of `step_ms` each, reporting progress after each one. The wait is
/// a `wasi:clocks` sleep, so the guest sits in a host call rather than burning fuel; a
/// cancelled call stops there.
fn work(a: WorkArgs, cx: &Context) -> Result<Worked, ToolError> {
    let total = f64::from(a.steps);
    for step in 1..=a.steps {
        std::thread::sleep(Duration::from_millis(a.step_ms));
        let note = format!("step {step} of {}", a.steps);
        cx.progress(f64::from(step), Some(total), Some(&note));
        log::debug(format!("{note} done"));
    }
    log::info(format!("worked through {} steps", a.steps));
    Ok(Worked { steps: a.steps })
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
            Tool::new(
                "work",
                "Works through `steps` steps of `step_ms` milliseconds each, reporting progress \
                 after every step (when the client asks for progress) and logging each step at \
                 debug level and the end at info level.",
                work,
            )
            .title("Work")
            .read_only()
            .idempotent()
            .open_world(false),
        ]
    }
}

cordon_sdk::export_plugin!(Demo);
