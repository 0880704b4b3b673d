// `embed_migrations!` reads the migration files at compile time; without this, a new
// migration directory would not rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
