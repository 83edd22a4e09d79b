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
    standby::cli::main()
}
