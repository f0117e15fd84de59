//! Writes the generated seed corpora to `fuzz/seeds/<target>/`, replacing what is there.
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`. Commit the result; `tests/seeds.rs`
//! fails when the files and the generator disagree.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for target in misar_proto_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    let seeds = misar_proto_fuzz::seeds::all();
    for seed in &seeds {
        fs::write(root.join(seed.target).join(&seed.name), &seed.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
