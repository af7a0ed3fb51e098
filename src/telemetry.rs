//! Logging: `tracing` to stdout, as text or JSON lines, filtered by `GATEHOUSE_LOG`; colours
//! only when stdout is a terminal. Lines that every request of an outage or an attack would
//! repeat (a failed lookup, a refused token) go through [`crate::throttle::Throttle`].
//!
//! The JSON lines speak the API's vocabulary (`would_deny`, `not_owner`, `LOG_ONLY`), give
//! numbers as numbers (`latency_ms`, `version`), the request's span as an object, and the
//! fields that hold a JSON value ([`NESTED_FIELDS`]: a settings change's `from` and `to`) as
//! that value, not as a string of it.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("GATEHOUSE_LOG={filter:?} is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(NestedJson(
                format::Format::default()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging not initialised: {e}");
    }
}

/// The fields whose value is JSON text (logged with `%` of a `serde_json::Value`), written as
/// the JSON value itself.
pub const NESTED_FIELDS: [&str; 2] = ["from", "to"];

/// tracing-subscriber's JSON lines, with [`NESTED_FIELDS`] as JSON values. Only the events
/// that have such a field are parsed again (a settings change, not a request's line).
struct NestedJson<F>(F);

impl<S, N, F> FormatEvent<S, N> for NestedJson<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let fields = event.metadata().fields();
        if !NESTED_FIELDS
            .iter()
            .any(|name| fields.field(name).is_some())
        {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&nest(&line))
    }
}

/// `line` (one JSON object and a newline) with the string values of [`NESTED_FIELDS`] that
/// hold JSON replaced by that JSON; `line` unchanged if it is not an object.
fn nest(line: &str) -> String {
    let Ok(mut object) = serde_json::from_str::<Map<String, Value>>(line) else {
        return line.to_owned();
    };
    for name in NESTED_FIELDS {
        let parsed = match object.get(name) {
            Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok(),
            _ => None,
        };
        if let Some(value) = parsed {
            object.insert(name.to_owned(), value);
        }
    }
    format!("{}\n", Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_become_json_values_and_the_rest_stays() {
        let line =
            r#"{"message":"m","from":"{\"mode\":\"LOG_ONLY\"}","to":"true","reason":"{\"x\":1}"}"#;
        let nested: Value = serde_json::from_str(&nest(&format!("{line}\n"))).unwrap();
        assert_eq!(nested["from"]["mode"], "LOG_ONLY");
        assert_eq!(nested["to"], true);
        // Only the listed fields: a reason that looks like JSON stays the string it was.
        assert_eq!(nested["reason"], r#"{"x":1}"#);
        assert!(nest("{\"to\":\"not json\"}\n").contains(r#""to":"not json""#));
        assert_eq!(nest("not a line\n"), "not a line\n");
    }
}
