//! Logging: `tracing` to stdout, as text or JSON lines, filtered by `GATEHOUSE_LOG`; colours
//! only when stdout is a terminal. Lines that every request of an outage or an attack would
//! repeat (a failed lookup, a refused token) go through [`crate::throttle::Throttle`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging not initialised: {e}");
    }
}
