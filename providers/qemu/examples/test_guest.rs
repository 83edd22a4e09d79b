//! Builds (or finds) the cached test guest and prints its paths as JSON,
//! for benchmarks and for trying the guest by hand:
//! `cargo run -p standby-provider-qemu --example test_guest [CACHE_DIR]`
//! (default `target/standby-guest`).

fn main() -> std::process::ExitCode {
    let cache = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/standby-guest".into());
    match standby_provider_qemu::guest::ensure(std::path::Path::new(&cache)) {
        Ok(g) => {
            println!(
                "{}",
                serde_json::json!({
                    "kernel": g.kernel, "initrd": g.initrd, "root": g.root,
                    "append": standby_provider_qemu::guest::append(true),
                })
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
