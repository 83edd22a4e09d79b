//! The `standby` binary: everything lives in the library; this only hands
//! over the process arguments and turns the outcome into an exit code.

fn main() -> std::process::ExitCode {
    // The helper a VM point leaves behind while a guest is frozen (see
    // replication::vm's thaw guard): not a command users type.
    if let Some(code) =
        standby::replication::vm::guard_main(std::env::args_os(), &mut std::io::stdin())
    {
        return std::process::ExitCode::from(code);
    }
    // An instant recovery's NBD export (recovery::instant::export).
    if let Some(r) = standby::recovery::instant::export::export_main(std::env::args_os()) {
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::from(1)
            }
        };
    }
    standby::cli::main()
}
