//! `docs/map-schema.md` documents every field the map has: each JSON key of a rich map (the
//! AWS samples and a generated estate with inventory and noise) appears in the page.

use std::collections::BTreeSet;
use std::path::PathBuf;

use zerogate_flow::{Inventory, Progress, ReadOptions, build_map, discover};

fn keys(value: &serde_json::Value, into: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                // Keys of these objects are data (reasons, kinds, tags), not fields.
                if !["by_reason", "by_kind", "records_by_basis", "tags"].contains(&k.as_str()) {
                    keys(v, into);
                }
                into.insert(k.clone());
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| keys(v, into)),
        _ => {}
    }
}

#[test]
fn every_field_of_the_map_is_documented() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/map-schema.md")).unwrap();
    let estate = root.join("examples/estate");
    let mut inventory = Inventory::new();
    for f in ["inventory.csv", "ip-ranges.json"] {
        let path = estate.join(f);
        inventory.load(&path.display().to_string(), &std::fs::read_to_string(&path).unwrap()).unwrap();
    }
    let inputs = discover(&[estate.display().to_string(), root.join("examples/flowlogs").display().to_string()]);
    let map = build_map(&inputs, &inventory, &ReadOptions::default(), &Progress::default()).unwrap();
    let mut all = BTreeSet::new();
    keys(&serde_json::to_value(&map).unwrap(), &mut all);
    assert!(all.len() > 60, "a rich map: {all:?}");
    // Documented names: backticked spans such as `bytes`, `targets[]`, `orientation.basis`.
    let documented: BTreeSet<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(['.', ' ', ',']).map(|part| part.trim_end_matches("[]")))
        .collect();
    let missing: Vec<_> = all.iter().filter(|k| !documented.contains(k.as_str())).collect();
    assert!(missing.is_empty(), "fields missing from docs/map-schema.md: {missing:?}");
}
