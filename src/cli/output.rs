//! What the commands print, and how a closed pipe ends them.
//!
//! Rust ignores `SIGPIPE`, so a reader that goes away (`gatehouse mode history | head -1`)
//! turns the next write into an `EPIPE` error, and `println!` panics on it ("failed printing to
//! stdout"). Everything the command line prints goes through here instead: a broken pipe ends
//! the output quietly (the reader had what it wanted) and the command keeps its exit code; any
//! other write failure is said on stderr and fails the command.

use std::io::{self, Write};
use std::process::ExitCode;

/// Like `eprintln!`, but a closed stderr loses the message instead of panicking.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

/// Prints `text` and a newline on stdout, then ends with `code`.
pub(crate) fn line(text: &str, code: ExitCode) -> ExitCode {
    finish(write_line(&mut io::stdout().lock(), text), code)
}

/// Prints `value` as pretty JSON on stdout, then ends with `code`.
pub(crate) fn json(value: &impl serde::Serialize, code: ExitCode) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => line(&text, code),
        Err(e) => {
            note!("error: cannot render the answer as JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_line(out: &mut impl Write, text: &str) -> io::Result<()> {
    writeln!(out, "{text}")?;
    out.flush()
}

/// `code` once the output is written or its reader has gone; a failure otherwise.
fn finish(written: io::Result<()>, code: ExitCode) -> ExitCode {
    match written {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            note!("error: cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_keeps_the_exit_code_and_other_failures_fail() {
        let written = write_line(&mut Closed, "x");
        assert_eq!(finish(written, ExitCode::SUCCESS), ExitCode::SUCCESS);
        assert_eq!(
            finish(Err(io::Error::other("disk full")), ExitCode::SUCCESS),
            ExitCode::FAILURE
        );
    }
}
