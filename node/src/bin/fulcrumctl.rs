//! `fulcrumctl`: the operator CLI of a Fulcrum node, a thin client of the
//! daemon's admin socket. Every failure is one `error: ...` line on stderr and
//! a non-zero exit: 2 for a bad command line or file, 1 for everything else.

use std::process::ExitCode;

use fulcrum_node::cli::{self, EXIT_FAILURE, EXIT_USAGE};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invocation = match cli::parse_args(&args) {
        Ok(invocation) => invocation,
        // --help and --version are not failures.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&cli::usage_error_line(&e, &args), EXIT_USAGE),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), EXIT_FAILURE),
    };
    match runtime.block_on(cli::run(invocation)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

/// Prints exactly one line, even if a message from the daemon had several.
fn fail(message: &str, code: u8) -> ExitCode {
    let line = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    eprintln!("error: {line}");
    ExitCode::from(code)
}
