//! Placeholder binary: this program arrives with the broker pipeline (issue 3).

fn main() {
    eprintln!("{}: not built yet; see the README for what runs today", env!("CARGO_PKG_NAME"));
    std::process::exit(2);
}
