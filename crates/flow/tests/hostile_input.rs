//! Nothing panics on any input, and nothing is lost: every line is a record, a problem, a header
//! or blank. Mutated and random lines go through the parser and the whole pipeline; the seed
//! corpus of the fuzz target (`fuzz/corpus/flow_line`) is replayed as ordinary tests.

use std::io::Write;
use std::path::PathBuf;

use zerogate_flow::record::LineParser;
use zerogate_flow::{Inventory, LogFormat, Progress, ReadOptions, build_map, discover};
use zerogate_flowgen::Rng;

const V5_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path";
const V5_LINE: &str = "5 123456789012 eni-0a1b 10.0.1.5 52.95.128.179 34210 443 6 7 471 1616729292 1616729349 ACCEPT OK vpc-1 subnet-1 i-0c50 3 IPv4 10.0.1.5 52.95.128.179 us-east-1 use1-az1 - - - S3 egress 8";

const NASTY: &[&[u8]] = &[
    b"-",
    b"",
    b" ",
    b"99999999999999999999999999",
    b"18446744073709551616",
    b"18446744073709551615",
    b"-1",
    b"255.255.255.256",
    b"::ffff:10.0.0.1",
    b"fe80::1%eth0",
    b"\xff\xfe",
    b"\x00",
    b"NODATA",
    b"SKIPDATA",
    b"REJECT",
    b"2019-08-26T19:53:44.000Z",
    b"1e9",
    b"0x10",
    b"4294967296000",
    b"\xd0\xb0",
];

fn mutate(rng: &mut Rng, line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    match rng.range(0, 6) {
        0 => {
            // flip a byte
            let i = rng.range(0, out.len() as u64 - 1) as usize;
            out[i] = rng.next_u64() as u8;
        }
        1 => out.truncate(rng.range(0, out.len() as u64) as usize),
        2 => {
            // replace one field with something nasty
            let mut fields: Vec<Vec<u8>> = out.split(|b| *b == b' ').map(<[u8]>::to_vec).collect();
            let i = rng.range(0, fields.len() as u64 - 1) as usize;
            fields[i] = NASTY[rng.range(0, NASTY.len() as u64 - 1) as usize].to_vec();
            out = fields.join(&b' ');
        }
        3 => {
            // duplicate or drop a field
            let mut fields: Vec<Vec<u8>> = out.split(|b| *b == b' ').map(<[u8]>::to_vec).collect();
            let i = rng.range(0, fields.len() as u64 - 1) as usize;
            if rng.chance(0.5) {
                let f = fields[i].clone();
                fields.insert(i, f);
            } else {
                fields.remove(i);
            }
            out = fields.join(&b' ');
        }
        4 => {
            // random bytes
            out = (0..rng.range(0, 300)).map(|_| rng.next_u64() as u8).collect();
        }
        5 => {
            // extra blanks
            let i = rng.range(0, out.len() as u64) as usize;
            out.splice(i..i, b"   ".iter().copied());
        }
        _ => out.extend_from_slice(b" \r"),
    }
    out
}

#[test]
fn the_parser_survives_hostile_lines() {
    let format = LogFormat::from_header(V5_HEADER).unwrap();
    let mut parser = LineParser::new(&format);
    let mut rng = Rng::new(2026);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..200_000 {
        let line = mutate(&mut rng, V5_LINE.as_bytes());
        match parser.parse(&line) {
            Ok(_) => ok += 1,
            Err(e) => {
                refused += 1;
                let text = e.to_string();
                assert!(!text.is_empty() && text.len() < 300, "{text}");
            }
        }
    }
    assert!(ok > 1_000 && refused > 1_000, "both kinds exercised: {ok} ok, {refused} refused");
}

#[test]
fn the_pipeline_accounts_for_every_line() {
    let dir = std::env::temp_dir().join(format!("zerogate-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(7);
    let mut file = std::fs::File::create(dir.join("hostile.log")).unwrap();
    writeln!(file, "{V5_HEADER}").unwrap();
    let lines = 20_000;
    for _ in 0..lines {
        let mut line = if rng.chance(0.5) { mutate(&mut rng, V5_LINE.as_bytes()) } else { V5_LINE.as_bytes().to_vec() };
        line.retain(|b| *b != b'\n');
        file.write_all(&line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    drop(file);
    let map = build_map(
        &discover(&[dir.display().to_string()]),
        &Inventory::new(),
        &ReadOptions::default(),
        &Progress::default(),
    )
    .unwrap();
    let input = &map.inputs[0];
    // A mutated line may be blank or look like a header; all others are records or problems.
    assert!(input.records + input.bad <= lines + 1);
    assert!(input.records + input.bad >= lines * 9 / 10, "{} records, {} bad", input.records, input.bad);
    assert!(map.dropped.examples.len() <= 20, "only the first few are kept");
    assert_eq!(map.dropped.problems, input.bad);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fuzz_seed_corpus_replays() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/flow_line");
    let mut count = 0;
    for entry in std::fs::read_dir(&corpus).expect("fuzz/corpus/flow_line exists") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        zerogate_flow::record::fuzz_line(&bytes);
        count += 1;
    }
    assert!(count >= 5, "seed corpus has {count} inputs");
}
