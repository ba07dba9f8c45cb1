//! Rebuilds the crate when `migrations/` changes, since `sqlx::migrate!` embeds the files; it must never generate code.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
