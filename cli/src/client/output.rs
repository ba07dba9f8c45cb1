//! Renders command results for people (aligned tables, `key: value` details) or for programs
//! (JSON with the REST field names); it must never decide what to fetch, and never write a
//! credential unless the command exists to show it (`tenants create`).

use std::io::{self, Write};

use clap::ValueEnum;
pub use kairos_sdk::time::rfc3339 as time;
use prost_types::Timestamp;
use serde_json::{Map, Value};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for lists, `key: value` lines for one resource.
    #[default]
    Table,
    /// JSON shaped like the REST API's bodies.
    Json,
}

/// One resource as ordered `(REST field name, value)` pairs; absent optional fields are left
/// out, as the REST API leaves them out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(Vec<(&'static str, Value)>);

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.0.push((key, value.into()));
        self
    }

    /// Adds the field only when it is present.
    pub fn with_opt<T: Into<Value>>(self, key: &'static str, value: Option<T>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn fields(&self) -> &[(&'static str, Value)] {
        &self.0
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<Map<_, _>>(),
        )
    }
}

/// A table column: a header and how to get its cell from a record.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// The record's field of that name.
    Field(&'static str, &'static str),
    /// A cell computed from the whole record.
    Computed(&'static str, fn(&Record) -> String),
}

impl Column {
    fn header(&self) -> &'static str {
        match self {
            Column::Field(h, _) | Column::Computed(h, _) => h,
        }
    }

    fn cell(&self, record: &Record) -> String {
        match self {
            Column::Field(_, key) => record.get(key).map_or_else(|| "-".to_owned(), inline),
            Column::Computed(_, f) => f(record),
        }
    }
}

pub fn opt_time(ts: Option<&Timestamp>) -> Option<String> {
    ts.map(time)
}

/// A value on one line: strings bare, lists shell-quoted, maps as `k=v, …`, null as `-`.
pub fn inline(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => shell_quote(s),
                other => inline(other),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Object(map) if map.is_empty() => "-".to_owned(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", inline(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Quotes an argument the way a POSIX shell would need it, only when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One resource as `key: value` lines, keys aligned; a list of objects gets one indented
/// line per item.
pub fn details(record: &Record) -> String {
    let width = record
        .fields()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (key, value) in record.fields() {
        let label = format!("{key}:");
        match value {
            Value::Array(items) if items.iter().any(Value::is_object) => {
                out.push_str(&label);
                out.push('\n');
                for item in items {
                    out.push_str("  - ");
                    out.push_str(&inline(item));
                    out.push('\n');
                }
            }
            _ => {
                out.push_str(&format!("{label:<width$} {}\n", inline(value)));
            }
        }
    }
    out
}

/// Rows under an upper-case header, columns separated by two spaces, no trailing blanks.
pub fn table(rows: &[Record], columns: &[Column]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(
        columns
            .iter()
            .map(|c| c.header().to_owned())
            .collect::<Vec<_>>(),
    )
    .chain(
        rows.iter()
            .map(|r| columns.iter().map(|c| c.cell(r)).collect()),
    )
    .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A list as the REST API answers it: `{"<key>": [...], "next_page_token": "…"}`.
pub fn list_json(key: &str, rows: &[Record], next_page_token: &str) -> Value {
    let mut map = Map::new();
    map.insert(
        key.to_owned(),
        Value::Array(rows.iter().map(Record::to_json).collect()),
    );
    if !next_page_token.is_empty() {
        map.insert(
            "next_page_token".to_owned(),
            Value::String(next_page_token.to_owned()),
        );
    }
    Value::Object(map)
}

/// Prints results in the chosen format to stdout, and notes for people to stderr.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: OutputFormat,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// One resource.
    pub fn record(&self, record: &Record) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Table => emit(&details(record)),
            OutputFormat::Json => self.json(&record.to_json()),
        }
    }

    /// One page of a list; in a table the next page's token goes to stderr.
    pub fn list(
        &self,
        key: &str,
        rows: &[Record],
        columns: &[Column],
        next_page_token: &str,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Table => {
                emit(&table(rows, columns))?;
                if !next_page_token.is_empty() {
                    note(&format!(
                        "more {key}: repeat with --page-token {next_page_token}"
                    ));
                }
                Ok(())
            }
            OutputFormat::Json => self.json(&list_json(key, rows, next_page_token)),
        }
    }

    /// One item of a stream: a compact JSON line, or the given line of text.
    pub fn stream_item(&self, record: &Record, text: &str) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Table => emit(&format!("{text}\n")),
            OutputFormat::Json => emit(&format!("{}\n", record.to_json())),
        }
    }

    /// Any JSON value, pretty-printed.
    pub fn json(&self, value: &Value) -> anyhow::Result<()> {
        emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
    }
}

/// Writes to stdout; a closed pipe (`kairos … | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A remark for the person at the terminal, on stderr so it never mixes with results.
pub fn note(message: &str) {
    eprintln!("note: {message}");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(id: &str, name: &str) -> Record {
        Record::new()
            .with("id", id)
            .with("name", name)
            .with_opt("schedule_id", None::<String>)
            .with("memory_mb", 256)
    }

    #[test]
    fn absent_optional_fields_are_left_out_of_json() {
        let v = job("job_1", "a").to_json();
        assert_eq!(v, json!({"id": "job_1", "name": "a", "memory_mb": 256}));
    }

    #[test]
    fn a_table_aligns_columns_under_upper_case_headers() {
        let rows = [job("job_1", "short"), job("job_22", "a longer name")];
        let columns = [
            Column::Field("ID", "id"),
            Column::Field("NAME", "name"),
            Column::Field("SCHEDULE", "schedule_id"),
        ];
        assert_eq!(
            table(&rows, &columns),
            "ID      NAME           SCHEDULE\n\
             job_1   short          -\n\
             job_22  a longer name  -\n"
        );
    }

    #[test]
    fn an_empty_list_still_prints_its_header() {
        assert_eq!(table(&[], &[Column::Field("ID", "id")]), "ID\n");
    }

    #[test]
    fn details_align_keys_and_render_nested_values_inline() {
        let record = Record::new()
            .with("id", "job_1")
            .with("command", json!(["sh", "-c", "echo it's"]))
            .with("env", json!({"B": "2", "A": "1"}))
            .with("labels", json!({}))
            .with(
                "next_fire_times",
                json!([{"utc": "2026-01-31T09:00:00Z", "local": "2026-01-31T10:00:00+01:00"}]),
            );
        assert_eq!(
            details(&record),
            "id:              job_1\n\
             command:         sh -c 'echo it'\\''s'\n\
             env:             A=1, B=2\n\
             labels:          -\n\
             next_fire_times:\n  \
             - local=2026-01-31T10:00:00+01:00, utc=2026-01-31T09:00:00Z\n"
        );
    }

    #[test]
    fn a_list_in_json_has_the_rest_shape() {
        let rows = [job("job_1", "a")];
        assert_eq!(
            list_json("jobs", &rows, ""),
            json!({"jobs": [{"id": "job_1", "name": "a", "memory_mb": 256}]})
        );
        assert_eq!(
            list_json("jobs", &[], "p1_x")["next_page_token"],
            json!("p1_x")
        );
    }
}
