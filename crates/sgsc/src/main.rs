//! The `sgsc` binary: see `sgsc --help`.

fn main() {
    if let Err(error) = sgsc::cli::run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
