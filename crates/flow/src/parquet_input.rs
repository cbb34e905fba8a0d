//! Parquet flow logs: columns are matched by name (`srcaddr`, `pkt_srcaddr`, …), values of any
//! integer, float or string type are accepted, and NULL reads as `-`. Each row becomes a record
//! through the same parser as text, so both formats follow the same rules.

use std::fs::File;
use std::io;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field as Value;

use crate::format::LogFormat;
use crate::source::Lines;

pub(crate) fn read(path: &Path, lines: &mut Lines<'_>) -> io::Result<()> {
    let file = File::open(path)?;
    let reader =
        SerializedFileReader::new(file).map_err(|e| io::Error::other(format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<String> = schema.columns().iter().map(|c| c.name().to_owned()).collect();
    let header = names.iter().map(|n| n.replace('_', "-")).collect::<Vec<_>>().join(" ");
    let format = LogFormat::from_header(&header).map_err(|e| io::Error::other(format!("bad Parquet columns: {e}")))?;
    lines.set_format(&format);
    let rows = reader.get_row_iter(None).map_err(|e| io::Error::other(e.to_string()))?;
    let mut line = String::with_capacity(256);
    for row in rows {
        let row = row.map_err(|e| io::Error::other(format!("bad Parquet row: {e}")))?;
        line.clear();
        for (i, (_, value)) in row.get_column_iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            push_value(&mut line, value);
        }
        lines.line(line.as_bytes());
    }
    Ok(())
}

fn push_value(line: &mut String, value: &Value) {
    use std::fmt::Write as _;
    let _ = match value {
        Value::Null => write!(line, "-"),
        Value::Bool(b) => write!(line, "{}", u8::from(*b)),
        Value::Byte(v) => write!(line, "{v}"),
        Value::Short(v) => write!(line, "{v}"),
        Value::Int(v) => write!(line, "{v}"),
        Value::Long(v) => write!(line, "{v}"),
        Value::UByte(v) => write!(line, "{v}"),
        Value::UShort(v) => write!(line, "{v}"),
        Value::UInt(v) => write!(line, "{v}"),
        Value::ULong(v) => write!(line, "{v}"),
        Value::Float(v) => write_float(line, f64::from(*v)),
        Value::Double(v) => write_float(line, *v),
        Value::Str(s) => write_text(line, s),
        Value::Bytes(b) => write_text(line, &String::from_utf8_lossy(b.data())),
        other => write_text(line, &other.to_string()),
    };
}

/// Nullable integer columns written by pandas arrive as floats (`6.0`): write them as integers.
fn write_float(line: &mut String, v: f64) -> std::fmt::Result {
    use std::fmt::Write as _;
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e18 {
        write!(line, "{}", v as i64)
    } else if v.is_nan() {
        write!(line, "-")
    } else {
        write!(line, "{v}")
    }
}

/// Text values must not split the record: blanks inside a value are refused by the parser later.
fn write_text(line: &mut String, s: &str) -> std::fmt::Result {
    use std::fmt::Write as _;
    // pandas writes missing values of object columns as the strings `None` or `nan`.
    if s.is_empty() || matches!(s, "None" | "none" | "null" | "NULL" | "nan" | "NaN") {
        write!(line, "-")
    } else {
        write!(line, "{}", s.replace([' ', '\t', '\n', '\r'], "\u{fffd}"))
    }
}
