//! The `masv` binary: parses the command line and hands over to `cli`.

fn main() -> std::process::ExitCode {
    masv_agent::cli::main()
}
