//! A generated estate, mapped by zerogate-flow and read back through JSON as
//! `zerogate recommend map.json` reads it.

use std::path::PathBuf;

use zerogate_flow::{Inventory, Progress, ReadOptions, build_map, discover};
use zerogate_flowgen::{Spec, Truth, generate};
use zerogate_segment::recommend::{MapInput, parse_map};

/// The estate's directory (remove it when done), its ground truth and its map.
pub fn estate(name: &str, spec: &Spec) -> (PathBuf, Truth, MapInput) {
    let dir = std::env::temp_dir().join(format!("zerogate-seg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let truth = generate(&dir, spec).unwrap();
    let mut inventory = Inventory::new();
    for file in ["inventory.csv", "ip-ranges.json"] {
        let path = dir.join(file);
        inventory.load(&path.display().to_string(), &std::fs::read_to_string(&path).unwrap()).unwrap();
    }
    let inputs = discover(&[dir.display().to_string()]);
    let map = build_map(&inputs, &inventory, &ReadOptions::default(), &Progress::default()).unwrap();
    let parsed = parse_map("map.json", &serde_json::to_vec(&map).unwrap()).unwrap();
    (dir, truth, parsed)
}
